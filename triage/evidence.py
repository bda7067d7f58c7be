"""Collect the evidence of one message: which rules matched which words, worth how much.

Every decision in ``classify`` and ``flags`` is read off this one pass: the
message is folded once and each term family is scanned once per field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from triage.decision import quote
from triage.matching import fold
from triage.ruleset import Family, Rule, RuleSet, Settings

# Where quoted history starts in a reply: a "> " line or a client's attribution
# line. Words below it count less (``quoted_weight``): they describe the past.
_ATTRIBUTION = (
    r"(?:El|On|Le|Am|Em|Il) .{0,160}(?:escribió|wrote|a écrit|schrieb|escreveu|ha scritto):",
    r"На .{0,160}написа:",  # noqa: RUF001 - Bulgarian, Cyrillic on purpose
    r"-{2,} ?(?:Original|Mensaje original|Mensagem original|Оригинално)",
)
_QUOTE_START = re.compile(r"^(?:>|" + "|".join(_ATTRIBUTION) + ")", re.MULTILINE)


@dataclass(slots=True)
class Evidence:
    """Points one rule collected in one message, and the words that earned them."""

    score: float = 0.0
    surfaces: list[str] = field(default_factory=list)


def quote_start(text: str) -> int:
    """Offset where the quoted history of a reply begins (``len(text)`` when none)."""
    match = _QUOTE_START.search(text)
    return match.start() if match else len(text)


def collect(
    rules: RuleSet, *, subject: str, text: str, recipients: tuple[str, ...], quoted_at: int
) -> dict[int, Evidence]:
    """Evidence per rule index for a message's subject, text and recipient addresses."""
    evidence: dict[int, Evidence] = {}
    fields = ((0, subject, fold(subject)), (1, text, fold(text)))
    for name in ("category", "signals"):
        _scan(
            rules.families[name],
            settings=rules.settings,
            fields=fields,
            quoted_at=quoted_at,
            evidence=evidence,
        )
    _recipients(rules, recipients, evidence)
    return evidence


def _scan(
    family: Family,
    *,
    settings: Settings,
    fields: tuple[tuple[int, str, str], ...],  # (0 subject | 1 text, original, folded)
    quoted_at: int,
    evidence: dict[int, Evidence],
) -> None:
    # Each term counts once per field, at its best weight: a customer repeating
    # "error" ten times is not ten times more certain, and a term in the quoted
    # history counts only if the customer's own words lack it. Repeats are
    # skipped with one lookup, which is most of the hits in a long message.
    best: dict[int, list[float]] = {}  # term id -> [subject, text, CAPS subject, CAPS text]
    surfaces: dict[tuple[int, bool], str] = {}
    upper_terms = family.upper_terms
    subject_weight, quoted_weight = settings.subject_weight, settings.quoted_weight
    for part, original, folded in fields:
        for term_id, start, end in family.index.find(folded) if original else ():
            weight = subject_weight if part == 0 else 1.0 if start < quoted_at else quoted_weight
            slot = best.get(term_id)
            if slot is None:
                slot = best[term_id] = [0.0, 0.0, 0.0, 0.0]
                surfaces[term_id, False] = original[start:end]
            elif slot[part] >= weight and term_id not in upper_terms:
                continue
            slot[part] = max(slot[part], weight)
            if term_id in upper_terms and original[start:end].isupper():
                surfaces.setdefault((term_id, True), original[start:end])
                slot[2 + part] = max(slot[2 + part], weight)
    for term_id, slot in best.items():
        for posting in family.postings[term_id]:
            upper = posting.upper_only
            points = slot[2] + slot[3] if upper else slot[0] + slot[1]
            if points:
                ev = evidence.setdefault(posting.rule, Evidence())
                ev.score += posting.weight * points
                ev.surfaces.append(" ".join(surfaces[term_id, upper].split()))


def _recipients(rules: RuleSet, recipients: tuple[str, ...], evidence: dict[int, Evidence]) -> None:
    locals_ = {fold(addr.rpartition("@")[0] or addr).partition("+")[0] for addr in recipients}
    for rule_id in rules.of_kind("category"):
        for local in sorted(locals_ & rules.rules[rule_id].recipients):
            ev = evidence.setdefault(rule_id, Evidence())
            ev.score += rules.settings.recipient_weight
            ev.surfaces.append(f"{local}@")


def confidence(top: float, second: float) -> float:
    """How sure a decision is, from its points and the runner-up's."""
    # Evidence strength saturates (1 - e^-x) and is discounted by how close the
    # runner-up came: 6 points alone ~0.63, 12 against 2 ~0.79, a tie ~half.
    if top <= 0:
        return 0.0
    strength = 1.0 - math.exp(-top / 6.0)
    margin = (top - second) / top
    return round(strength * (0.5 + 0.5 * margin), 2)


def cite(rule: Rule) -> str:
    """The rule's description, in parentheses, for the end of an explanation."""
    return f" ({rule.description})" if rule.description else ""


def matched(rules: RuleSet, ranked: list[tuple[int, Evidence]]) -> str:
    """'rule "x" matched "a", "b"; rule "y" matched ...' for the given rules."""
    return "; ".join(
        f'rule "{rules.rules[i].name}" matched {quote(ev.surfaces)}' for i, ev in ranked
    )
