"""The outcome of classifying one message, and its renderings for agents and logs."""

from __future__ import annotations

from dataclasses import dataclass, fields

from triage.decision import Decision
from triage.ruleset import Priority


@dataclass(frozen=True, slots=True)
class Flags:
    """The yes/no findings of seed 001, each with its reason."""

    vague_subject: Decision[bool]
    chase: Decision[bool]
    abusive: Decision[bool]
    declared_priority: Decision[bool]

    @property
    def raised(self) -> tuple[str, ...]:
        """Names of the flags that are set, in a fixed order."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name).value)

    def decisions(self) -> tuple[tuple[str, Decision[bool]], ...]:
        """Every flag's name and decision, set or not."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self))


@dataclass(frozen=True, slots=True)
class Classification:
    """Category, priority, severity, language and flags of a message, each explained."""

    category: Decision[str]
    priority: Decision[Priority]  # assessed from the content (seed 001), never just declared
    severity: Decision[int]
    language: Decision[str]
    flags: Flags
    declared_priority: Decision[Priority | None]

    @property
    def assessed_priority(self) -> Priority:
        """The priority Buzón assessed, to compare with ``declared_priority``."""
        return self.priority.value

    def decisions(self) -> tuple[tuple[str, Decision[object]], ...]:
        """Every decision with its field name, in the order ``explain`` prints them."""
        main: tuple[tuple[str, Decision[object]], ...] = (
            ("category", self.category),
            ("priority", self.priority),
            ("severity", self.severity),
            ("language", self.language),
            ("declared_priority", self.declared_priority),
        )
        return main + tuple((f"flag {name}", d) for name, d in self.flags.decisions())

    def explain(self) -> str:
        """A few lines an agent reads: each decision, its confidence and its reason."""
        lines = [
            f"{self.category.value} / priority {self.priority.value} / severity "
            f"{self.severity.value} / {self.language.value}"
            + (f" / flags: {', '.join(self.flags.raised)}" if self.flags.raised else "")
        ]
        for _, decision in self.decisions():
            lines.append(f"  [{decision.confidence:.2f}] {decision.explanation}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary plus every decision in full, for events and ``--json``."""
        return {
            "category": self.category.value,
            "priority": self.priority.value,
            "severity": self.severity.value,
            "language": self.language.value,
            "flags": list(self.flags.raised),
            "declared_priority": self.declared_priority.value,
            "assessed_priority": self.assessed_priority,
            "decisions": {name: d.as_dict() for name, d in self.decisions()},
        }
