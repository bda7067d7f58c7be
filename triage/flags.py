"""The yes/no findings of seed 001 for one message: vague subject, chase, abuse, declared priority.

Each reads the evidence already collected (``triage.evidence``) except the
vague-subject check, which looks at the subject's words one by one: a subject
is vague when every word in it is generic ("Re: ayuda urgente").
"""

from __future__ import annotations

import re

from triage.decision import Decision, quote
from triage.evidence import Evidence, cite
from triage.matching import WORD, fold
from triage.refs import PREFIX
from triage.ruleset import PRIORITIES, Priority, RuleSet

_TICKET_TAG = re.compile(r"\[#\s*" + re.escape(PREFIX) + r"\d+\s*\]", re.IGNORECASE)


def vague_subject(rules: RuleSet, subject: str, *, voicemail: bool) -> Decision[bool]:
    """Whether the subject fails to say what the matter is (seed 001 rule 2)."""
    (rule_id,) = rules.of_kind("vague_subject") or (None,)
    name = "vague_subject"
    if voicemail:
        return Decision(
            False, 1.0, name, (), "vague_subject no: a voicemail has no subject of its own"
        )
    subject = _TICKET_TAG.sub(" ", subject)
    folded = fold(subject)
    words = [m for m in WORD.finditer(folded) if not m.group().isdigit()]
    why = cite(rules.rules[rule_id]) if rule_id is not None else ""
    if not words:
        return Decision(True, 1.0, name, (), f"vague_subject: the subject is empty{why}")
    if rule_id is None:
        return Decision(False, 0.5, name, (), "vague_subject no: the rule is switched off")
    family = rules.families["subject"]
    spans = [(s, e) for term_id, s, e in family.index.find(folded)]
    concrete = [w for w in words if not any(s <= w.start() and w.end() <= e for s, e in spans)]
    if concrete:
        shown = tuple(subject[w.start() : w.end()] for w in concrete)
        return Decision(
            False, 0.8, name, shown, f"vague_subject no: the subject names {quote(shown)}"
        )
    generic = tuple(subject[w.start() : w.end()] for w in words)
    return Decision(
        True,
        0.9,
        name,
        generic,
        f'vague_subject: subject "{subject.strip()}" has only generic words {quote(generic)}{why}',
    )


def chase(
    rules: RuleSet, evidence: dict[int, Evidence], minutes: float | None, own_text: str
) -> Decision[bool]:
    """Whether a short "any news?" came too soon after the previous message (seed 001)."""
    ids = rules.of_kind("chase")
    s = rules.settings
    ev = evidence.get(ids[0]) if ids else None
    why = cite(rules.rules[ids[0]]) if ids else ""
    if minutes is None:
        return Decision(False, 1.0, "chase", (), "chase no: no earlier message on an open ticket")
    if ev is None:
        return Decision(
            False, 0.7, "chase", (), f"chase no: no chasing words ({minutes:g} min after the last)"
        )
    matched = tuple(ev.surfaces)
    if minutes >= s.chase_within_minutes:
        return Decision(
            False,
            0.9,
            "chase",
            matched,
            f"chase no: {quote(matched)} came {minutes:g} min after the previous message, "
            f"not within {s.chase_within_minutes:g}{why}",
        )
    count = len(WORD.findall(own_text))
    if count > s.chase_max_words:
        return Decision(
            False,
            0.6,
            "chase",
            matched,
            f"chase no: {quote(matched)} but {count} words of new content "
            f"(a chase is at most {s.chase_max_words})",
        )
    return Decision(
        True,
        0.9,
        "chase",
        matched,
        f'chase: rule "chase" matched {quote(matched)} {minutes:g} min after the previous '
        f"message (within {s.chase_within_minutes:g}){why}",
    )


def abusive(rules: RuleSet, evidence: dict[int, Evidence]) -> Decision[bool]:
    """Whether the message uses offensive language, at the rule's threshold (seed 001)."""
    ids = rules.of_kind("abusive")
    ev = evidence.get(ids[0]) if ids else None
    threshold = rules.settings.abusive_threshold
    if ev is None:
        return Decision(False, 0.8, "abusive", (), "abusive no: no offensive words")
    matched = tuple(ev.surfaces)
    if ev.score < threshold:
        return Decision(
            False,
            0.6,
            "abusive",
            matched,
            f"abusive no: only {quote(matched)} ({ev.score:g} points, flagged at {threshold:g})",
        )
    return Decision(
        True,
        round(min(1.0, 0.5 + 0.1 * ev.score), 2),
        "abusive",
        matched,
        f'abusive: rule "abusive" matched {quote(matched)}{cite(rules.rules[ids[0]])}',
    )


def declared(
    rules: RuleSet, evidence: dict[int, Evidence], assessed: Priority
) -> Decision[Priority | None]:
    """The priority the customer claims (URGENTE, "no rush"), compared with ``assessed``."""
    found = [(i, evidence[i]) for i in rules.of_kind("declared") if i in evidence]
    if not found:
        return Decision(None, 0.8, "declared", (), "declared priority: none stated")
    # Ties go to the more urgent declaration: it is what the customer will expect.
    rule_id, ev = max(
        found,
        key=lambda item: (item[1].score, PRIORITIES.index(rules.rules[item[0]].priority or "low")),
    )
    rule = rules.rules[rule_id]
    level = rule.priority
    assert level is not None
    verdict = "agrees with" if level == assessed else "differs from"
    return Decision(
        level,
        0.9,
        f"declared.{rule.name}",
        tuple(ev.surfaces),
        f'declared priority {level}: rule "declared.{rule.name}" matched {quote(ev.surfaces)}; '
        f"{verdict} assessed {assessed}{cite(rule)}",
    )
