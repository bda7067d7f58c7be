"""Classify one message by the rules: category, priority, severity, language and flags.

Pure and fast: the rules are compiled once (``RuleSet``) and the language
detector is built once (``LanguageGuesser``); both are passed in. Each field is
a ``Decision`` that names the rule and quotes the customer's words, because an
agent must be able to see why a ticket is "high" and disagree (seed 001: the
priority is assessed from what the customer describes, not from "URGENTE").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from triage import flags
from triage.classification import Classification, Flags
from triage.decision import Decision
from triage.evidence import Evidence, cite, collect, confidence, matched, quote_start
from triage.language import UNDETERMINED, LanguageGuesser
from triage.ruleset import PRIORITIES, Priority, RuleSet

__all__ = ["Classification", "MessageFacts", "classify"]

Channel = Literal["email", "voicemail"]
WORKS_BADLY = 2  # seed 003 severity 2: "the services work, but with serious difficulties"


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What classification reads from a message; the daemon maps parsed mail onto it."""

    subject: str
    text: str  # the body as text, or the voicemail transcript
    channel: Channel = "email"
    recipients: tuple[str, ...] = ()  # addresses it was sent to: billing@ is evidence
    # Minutes since the same customer's previous message on an open ticket; None if none.
    minutes_since_previous: float | None = None


def classify(
    facts: MessageFacts, rules: RuleSet, languages: LanguageGuesser | None = None
) -> Classification:
    """Every decision about ``facts`` under ``rules``; language is "und" without a guesser."""
    quoted_at = quote_start(facts.text)
    # A voicemail's subject is written by the PBX ("Voicemail from ..."), not the caller.
    voicemail = facts.channel == "voicemail"
    subject = "" if voicemail else facts.subject
    evidence = collect(
        rules, subject=subject, text=facts.text, recipients=facts.recipients, quoted_at=quoted_at
    )
    own_text = facts.text[:quoted_at]
    impact = _in_context(rules, evidence)
    priority = _priority(rules, impact)
    declared = flags.declared(rules, evidence, priority.value)
    return Classification(
        category=_category(rules, evidence),
        priority=priority,
        severity=_severity(rules, impact, priority.value),
        language=_language(languages, subject, own_text),
        flags=Flags(
            vague_subject=flags.vague_subject(rules, facts.subject, voicemail=voicemail),
            chase=flags.chase(rules, evidence, facts.minutes_since_previous, own_text),
            abusive=flags.abusive(rules, evidence),
            declared_priority=Decision(
                declared.value is not None,
                declared.confidence,
                declared.rule,
                declared.matched,
                declared.explanation,
            ),
        ),
        declared_priority=declared,
    )


def _category(rules: RuleSet, evidence: dict[int, Evidence]) -> Decision[str]:
    ranked = sorted(
        ((i, evidence[i]) for i in rules.of_kind("category") if i in evidence),
        key=lambda item: -item[1].score,
    )
    default = rules.settings.default_category
    if not ranked or ranked[0][1].score < rules.settings.min_category_score:
        found = (
            f"; best was {rules.rules[ranked[0][0]].name} with {ranked[0][1].score:g}"
            if ranked
            else ""
        )
        return Decision(
            default,
            0.3,
            "default",
            (),
            f"category {default}: no category reached {rules.settings.min_category_score:g} "
            f"points{found}",
        )
    (top_id, top), second = ranked[0], (ranked[1][1].score if len(ranked) > 1 else 0.0)
    rule = rules.rules[top_id]
    runner_up = f"; next {rules.rules[ranked[1][0]].name} {second:g}" if len(ranked) > 1 else ""
    return Decision(
        rule.name,
        confidence(top.score, second),
        rule.name,
        tuple(top.surfaces),
        f"category {rule.name}: {matched(rules, [ranked[0]])} "
        f"(score {top.score:g}{runner_up}){cite(rule)}",
    )


def _in_context(rules: RuleSet, evidence: dict[int, Evidence]) -> dict[int, Evidence]:
    """The evidence, less scope words ("whole office") that nothing else makes an outage."""
    # "Everyone in the office needs a mailbox" is not an outage: scope only
    # widens a fault that other words describe. And when the customer says the
    # rest still works (a cap, seed 001 1c) or only that it is slow, "since this
    # morning" or "everyone" does not make it high: the fault is real but confined.
    impact = [(i, rules.rules[i]) for i in rules.of_kind("impact") if i in evidence]
    scoped = {i for i, rule in impact if rule.needs_problem}
    if not scoped:
        return evidence
    problem = any(
        not rule.needs_problem and rule.priority in ("medium", "high") for _, rule in impact
    )
    # Slowness is confined too: seed 003 severity 2 says the services still work.
    confined = any(
        (rule.cap is not None and rule.cap != "high") or rule.severity == WORKS_BADLY
        for _, rule in impact
    )
    if problem and not confined:
        return evidence
    return {i: ev for i, ev in evidence.items() if i not in scoped}


def _levels(
    rules: RuleSet, evidence: dict[int, Evidence], attr: str, allowed: set[object]
) -> dict[object, list[tuple[int, Evidence]]]:
    by_level: dict[object, list[tuple[int, Evidence]]] = {}
    for rule_id in rules.of_kind("impact"):
        level = getattr(rules.rules[rule_id], attr)
        if rule_id in evidence and level in allowed:
            by_level.setdefault(level, []).append((rule_id, evidence[rule_id]))
    return by_level


def _priority(rules: RuleSet, evidence: dict[int, Evidence]) -> Decision[Priority]:
    """Seed 001's ladder: high only on strong outage evidence nothing contains, else
    medium when the problem evidence holds its own against the question evidence."""
    by_level = _levels(rules, evidence, "priority", set(PRIORITIES))
    if not by_level:
        value = rules.settings.default_priority
        return Decision(
            value,
            0.3,
            "default",
            (),
            f"priority {value}: no impact rule matched; the default for questions and "
            "requests (seed 001 1a)",
        )
    scores = {p: sum(ev.score for _, ev in by_level.get(p, [])) for p in PRIORITIES}
    capped = [
        (i, evidence[i])
        for i in rules.of_kind("impact")
        if i in evidence and rules.rules[i].cap is not None and rules.rules[i].cap != "high"
    ]
    cap = sum(ev.score for _, ev in capped)
    high, medium, low = scores["high"], scores["medium"], scores["low"]
    if high >= rules.settings.high_min_score and high > cap:
        note = f"outage {high:g}, more than the {cap:g} saying the service still works"
        against = max(cap, medium, low)
        return _ladder(rules, by_level, "high", score=high, against=against, note=note)
    # Outage evidence that did not make "high" still says something is broken.
    problem = medium + high
    if problem and problem >= low:
        note = f"problem {problem:g} against question {low:g}"
        if capped:
            note += f"; not high: {matched(rules, capped)} (outage {high:g})"
        ranked = by_level.get("medium", []) + by_level.get("high", [])
        return _ladder(rules, {"medium": ranked}, "medium", score=problem, against=low, note=note)
    note = f"question {low:g} against problem {problem:g}"
    return _ladder(rules, by_level, "low", score=low, against=problem, note=note)


def _ladder(
    rules: RuleSet,
    by_level: dict[object, list[tuple[int, Evidence]]],
    level: Priority,
    *,
    score: float,
    against: float,
    note: str,
) -> Decision[Priority]:
    ranked = sorted(by_level[level], key=lambda item: -item[1].score)
    top = rules.rules[ranked[0][0]]
    return Decision(
        level,
        confidence(score, against),
        top.name,
        tuple(s for _, ev in ranked for s in ev.surfaces),
        f"priority {level}: {matched(rules, ranked)} ({note}){cite(top)}",
    )


def _severity(rules: RuleSet, evidence: dict[int, Evidence], priority: Priority) -> Decision[int]:
    allowed = rules.settings.severities_for(priority)
    by_level = _levels(rules, evidence, "severity", set(allowed))
    if not by_level:
        value = rules.settings.severity_default(priority)
        span = f"{allowed[0]}-{allowed[-1]}" if len(allowed) > 1 else str(allowed[0])
        return Decision(
            value,
            0.5,
            "default",
            (),
            f"severity {value}: follows priority {priority} (severities {span}); "
            "no severity rule matched within that range (seed 003)",
        )
    scores = {s: sum(ev.score for _, ev in by_level.get(s, [])) for s in allowed}
    # Ties go to the milder severity, for the same reason as priorities.
    best = max(allowed, key=lambda s: (scores[s], s))
    ranked = sorted(by_level[best], key=lambda item: -item[1].score)
    second = max((v for s, v in scores.items() if s != best), default=0.0)
    top = rules.rules[ranked[0][0]]
    return Decision(
        best,
        confidence(scores[best], second),
        top.name,
        tuple(s for _, ev in ranked for s in ev.surfaces),
        f"severity {best}: {matched(rules, ranked)} (score {scores[best]:g}; "
        f"priority {priority} allows {allowed[0]}-{allowed[-1]}){cite(top)}",
    )


def _language(languages: LanguageGuesser | None, subject: str, text: str) -> Decision[str]:
    if languages is None:
        return Decision(UNDETERMINED, 0.0, "none", (), "language und: no detector configured")
    # The customer's own words first: subjects often quote an English error
    # message or a product name; the subject only fills a short body's sample.
    return languages.guess(f"{text}\n{subject}" if subject else text)
