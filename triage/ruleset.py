"""Read classification rules from TOML text, layer an admin's rules over them, compile once.

The shipped rules (``triage/rules/default.toml``) document the schema in their
header. Layering: tables merge key by key, word lists (``words``, ``strong``,
``upper``, ``recipients``) are *added* to the lists below them, other values
replace; ``replace = true`` in a table drops what the layers below said for it,
``enabled = false`` switches a rule off. Every mistake raises ``RulesError``
naming the layer and the dotted key, checked on the merged rules after each
layer so the blame lands on the layer that introduced it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from triage.matching import Term, TermIndex
from triage.rulecheck import Checker, RulesError, Weighted, subtable, subtables

__all__ = ["PRIORITIES", "Priority", "Rule", "RuleSet", "RulesError", "Settings"]

Priority = Literal["low", "medium", "high"]
PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high")
SEVERITIES = (1, 2, 3, 4, 5)
_LISTS = ("words", "strong", "upper", "recipients", "detect")
_COMMON = ("description", "words", "strong", "upper", "enabled", "replace")
_FLAG_KEYS = {"chase": ("within_minutes", "max_words"), "abusive": ("threshold",)}


@dataclass(frozen=True, slots=True)
class Rule:
    """One named rule: what it gives evidence for, and why it exists (cited in explanations)."""

    kind: str  # "category" | "impact" | "declared" | "vague_subject" | "chase" | "abusive"
    name: str
    description: str
    priority: Priority | None = None
    severity: int | None = None
    recipients: frozenset[str] = frozenset()
    cap: Priority | None = None  # matched, it holds the priority at this level (seed 001 1c)
    # Scope words ("the whole office", "since this morning") say how far a fault
    # reaches, not that there is one: they count only beside problem evidence.
    needs_problem: bool = False


@dataclass(frozen=True, slots=True)
class Posting:
    """A term's evidence for one rule: how much it weighs, and whether only CAPITALS count."""

    rule: int  # index into RuleSet.rules
    weight: float
    upper_only: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Family:
    """Terms matched together: where two overlap, only the longer counts."""

    index: TermIndex
    postings: tuple[tuple[Posting, ...], ...]  # per term id of ``index``
    upper_terms: frozenset[int]  # term ids with a CAPITALS-only posting


# Category words are matched apart from priority and flag words, so that a phrase
# like "no recibo correos" (impact) does not hide "correos" (the email category);
# vague-subject words are read in the subject only.
FAMILY_OF = {"category": "category", "vague_subject": "subject"}


@dataclass(frozen=True, slots=True)
class Settings:
    """The scalar knobs of ``[settings]``, ``[language]`` and the flag tables."""

    subject_weight: float = 2.0
    strong_weight: float = 3.0
    recipient_weight: float = 4.0
    min_category_score: float = 1.0
    default_category: str = "other"
    default_priority: Priority = "low"
    high_min_score: float = 3.0
    severity_for_priority: tuple[tuple[Priority, int], ...] = (
        ("low", 5),
        ("medium", 4),
        ("high", 1),
    )
    severity_range: tuple[tuple[Priority, tuple[int, int]], ...] = (
        ("low", (5, 5)),
        ("medium", (2, 4)),
        ("high", (1, 1)),
    )
    quoted_weight: float = 0.5
    chase_within_minutes: float = 40.0
    chase_max_words: int = 60
    abusive_threshold: float = 2.0
    languages: tuple[str, ...] = ("es", "en", "bg")
    language_min_confidence: float = 0.5
    language_sample_chars: int = 200
    language_precise_below: int = 60

    def language_options(self) -> dict[str, Any]:
        """Arguments for the detector: ``LanguageGuesser(**settings.language_options())``."""
        return {
            "codes": self.languages,
            "min_confidence": self.language_min_confidence,
            "sample_chars": self.language_sample_chars,
            "precise_below": self.language_precise_below,
        }

    def severity_default(self, priority: Priority) -> int:
        """The severity a message gets from its priority when no rule speaks to severity."""
        return dict(self.severity_for_priority)[priority]

    def severities_for(self, priority: Priority) -> range:
        """The severities a message of ``priority`` may have (seed 003 against seed 001)."""
        low, high = dict(self.severity_range)[priority]
        return range(low, high + 1)


@dataclass(frozen=True, slots=True, eq=False)
class RuleSet:
    """Validated, compiled rules; build once, share between messages (and threads)."""

    settings: Settings
    rules: tuple[Rule, ...]
    families: Mapping[str, Family]  # "category", "signals", "subject"; see FAMILY_OF
    data: Mapping[str, Any] = field(repr=False)  # merged TOML, for further layers
    by_kind: Mapping[str, tuple[int, ...]] = field(repr=False, default_factory=dict)

    @classmethod
    def from_toml(cls, text: str, *overrides: str, names: Sequence[str] = ()) -> RuleSet:
        """Rules from ``text``, with each override layered on top in order.

        ``names`` label the layers in errors (e.g. file paths); by default the
        base is "rules" and the others "override #1", "override #2" ...
        """
        labels = list(names) or ["rules"]
        labels += [f"override #{i}" for i in range(len(labels), len(overrides) + 1)]
        data = _parse(text, labels[0])
        built = _build(data, labels[0])
        for label, extra in zip(labels[1:], overrides, strict=False):
            data = _merge(data, _parse(extra, label), label, "")
            built = _build(data, label)
        return _compile(data, *built)

    def extended(self, text: str, name: str = "override") -> RuleSet:
        """These rules with ``text`` layered on top (an admin's file over the defaults)."""
        data = _merge(self.data, _parse(text, name), name, "")
        return _compile(data, *_build(data, name))

    @property
    def categories(self) -> tuple[str, ...]:
        """Names of the enabled categories, in file order."""
        return tuple(r.name for r in self.rules if r.kind == "category")

    def of_kind(self, kind: str) -> tuple[int, ...]:
        """Indexes of the rules of one kind, in file order."""
        return self.by_kind.get(kind, ())


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(source, "", f"not valid TOML: {exc}") from None


def _merge(
    base: Mapping[str, Any], over: Mapping[str, Any], source: str, path: str
) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        where = f"{path}.{key}" if path else key
        old = merged.get(key)
        if isinstance(value, dict) and value.get("replace") is True:
            merged[key] = {k: v for k, v in value.items() if k != "replace"}
        elif isinstance(value, dict) and isinstance(old, dict):
            merged[key] = _merge(old, value, source, where)
        elif key in _LISTS and isinstance(value, list) and isinstance(old, list):
            merged[key] = old + [v for v in value if v not in old]
        elif old is not None and isinstance(old, dict) != isinstance(value, dict):
            want = "a table" if isinstance(old, dict) else "a value"
            raise RulesError(source, where, f"must be {want}, as in the rules below it")
        else:
            merged[key] = value
    return merged


_Built = tuple[Settings, list[Rule], list[Weighted]]


def _build(data: Mapping[str, Any], source: str) -> _Built:
    """Validate merged data into settings, rules and each rule's terms (not yet compiled)."""
    check = Checker(source)
    check.keys(data, "", ("settings", "language", "category", "impact", "declared", "flags"))
    rules: list[Rule] = []
    terms: list[Weighted] = []
    strong = check.number(subtable(check, data, "settings"), "settings", "strong_weight", 3.0)

    def add(kind: str, name: str, table: Mapping[str, Any], path: str, **extra: Any) -> None:
        if check.boolean(table, path, "enabled", True):
            rules.append(Rule(kind, name, check.text(table, path, "description", ""), **extra))
            terms.append(check.terms(table, path, strong))

    for name, table in subtables(check, data, "category"):
        path = f"category.{name}"
        check.keys(table, path, (*_COMMON, "recipients"))
        recipients = frozenset(r.lower() for r in check.strings(table, path, "recipients"))
        add("category", name, table, path, recipients=recipients)
    for name, table in subtables(check, data, "impact"):
        path = f"impact.{name}"
        check.keys(table, path, (*_COMMON, "priority", "severity", "cap", "needs_problem"))
        priority = check.choice(table, path, "priority", PRIORITIES, None)
        severity = check.choice(table, path, "severity", SEVERITIES, None)
        cap = check.choice(table, path, "cap", PRIORITIES, None)
        if priority is None and severity is None and cap is None:
            raise RulesError(source, path, "needs a priority, a severity, a cap or some of them")
        needs_problem = check.boolean(table, path, "needs_problem", False)
        add(
            "impact",
            name,
            table,
            path,
            priority=priority,
            severity=severity,
            cap=cap,
            needs_problem=needs_problem,
        )
    for name, table in subtables(check, data, "declared"):
        path = f"declared.{name}"
        if name not in PRIORITIES:
            raise RulesError(source, path, "declared levels are named low, medium or high")
        check.keys(table, path, _COMMON)
        add("declared", name, table, path, priority=name)
    flags = subtable(check, data, "flags")
    check.keys(flags, "flags", ("vague_subject", "chase", "abusive"))
    for name in ("vague_subject", "chase", "abusive"):
        table = subtable(check, flags, name, "flags")
        path = f"flags.{name}"
        check.keys(table, path, (*_COMMON, *_FLAG_KEYS.get(name, ())))
        add(name, name, table, path)
    return _settings(check, data, rules, strong), rules, terms


def _settings(
    check: Checker, data: Mapping[str, Any], rules: list[Rule], strong: float
) -> Settings:
    s = subtable(check, data, "settings")
    check.keys(
        s,
        "settings",
        (
            "subject_weight",
            "strong_weight",
            "recipient_weight",
            "min_category_score",
            "default_category",
            "default_priority",
            "high_min_score",
            "severity_for_priority",
            "severity_range",
            "quoted_weight",
        ),
    )
    lang = subtable(check, data, "language")
    check.keys(lang, "language", ("detect", "min_confidence", "sample_chars", "precise_below"))
    flags = subtable(check, data, "flags")
    chase = subtable(check, flags, "chase", "flags")
    abusive = subtable(check, flags, "abusive", "flags")
    categories = [r.name for r in rules if r.kind == "category"]
    default_category = check.choice(s, "settings", "default_category", categories, "other")
    sev = subtable(check, s, "severity_for_priority", "settings")
    check.keys(sev, "settings.severity_for_priority", PRIORITIES)
    defaults = dict(Settings().severity_for_priority)
    severity_for_priority = tuple(
        (
            p,
            cast(
                int, check.choice(sev, "settings.severity_for_priority", p, SEVERITIES, defaults[p])
            ),
        )
        for p in PRIORITIES
    )
    return Settings(
        severity_range=_severity_range(check, s, severity_for_priority),
        quoted_weight=check.number(s, "settings", "quoted_weight", 0.5),
        high_min_score=check.number(s, "settings", "high_min_score", 3.0),
        abusive_threshold=check.number(abusive, "flags.abusive", "threshold", 2.0),
        subject_weight=check.number(s, "settings", "subject_weight", 2.0),
        strong_weight=strong,
        recipient_weight=check.number(s, "settings", "recipient_weight", 4.0),
        min_category_score=check.number(s, "settings", "min_category_score", 1.0),
        default_category=cast(str, default_category),
        default_priority=cast(
            Priority, check.choice(s, "settings", "default_priority", PRIORITIES, "low")
        ),
        severity_for_priority=severity_for_priority,
        chase_within_minutes=check.number(chase, "flags.chase", "within_minutes", 40.0),
        chase_max_words=int(check.number(chase, "flags.chase", "max_words", 60)),
        languages=tuple(check.strings(lang, "language", "detect")) or ("es", "en", "bg"),
        language_min_confidence=check.number(lang, "language", "min_confidence", 0.5),
        language_sample_chars=int(check.number(lang, "language", "sample_chars", 200)),
        language_precise_below=int(check.number(lang, "language", "precise_below", 60)),
    )


def _severity_range(
    check: Checker, s: Mapping[str, Any], defaults: tuple[tuple[Priority, int], ...]
) -> tuple[tuple[Priority, tuple[int, int]], ...]:
    table = subtable(check, s, "severity_range", "settings")
    path = "settings.severity_range"
    check.keys(table, path, PRIORITIES)
    fallback = dict(Settings().severity_range)
    out: list[tuple[Priority, tuple[int, int]]] = []
    for priority, default in defaults:
        bounds = table.get(priority, list(fallback[priority]))
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(b in SEVERITIES and not isinstance(b, bool) for b in bounds)
            or bounds[0] > bounds[1]
        ):
            raise check.fail(
                path, priority, f"must be [lowest, highest] within 1-5, got {bounds!r}"
            )
        if not bounds[0] <= default <= bounds[1]:
            raise check.fail(
                path, priority, f"must include severity_for_priority.{priority} = {default}"
            )
        out.append((priority, (bounds[0], bounds[1])))
    return tuple(out)


def _compile(
    data: Mapping[str, Any], settings: Settings, rules: list[Rule], terms: list[Weighted]
) -> RuleSet:
    grouped: dict[str, dict[Term, list[Posting]]] = {"category": {}, "signals": {}, "subject": {}}
    for rule_id, rule_terms in enumerate(terms):
        by_term = grouped[FAMILY_OF.get(rules[rule_id].kind, "signals")]
        for term, weight, upper in rule_terms:
            by_term.setdefault(term, []).append(Posting(rule_id, weight, upper))
    families = {}
    for name, by_term in grouped.items():
        index = TermIndex(by_term)
        postings = tuple(tuple(by_term[t]) for t in index.terms)
        caps = frozenset(i for i, ps in enumerate(postings) if any(p.upper_only for p in ps))
        families[name] = Family(index, postings, caps)
    by_kind: dict[str, tuple[int, ...]] = {}
    for rule_id, rule in enumerate(rules):
        by_kind[rule.kind] = (*by_kind.get(rule.kind, ()), rule_id)
    return RuleSet(settings, tuple(rules), families, data, by_kind)
