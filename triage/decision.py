"""One explained decision: a value, how sure the rules are of it, and why in words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T_co = TypeVar("T_co", covariant=True)  # a Decision[bool] is a Decision[object]


@dataclass(frozen=True, slots=True)
class Decision(Generic[T_co]):
    """A classification outcome an agent can check: which rule, which words, how confident."""

    value: T_co
    confidence: float  # 0..1; rules' evidence, not a calibrated probability
    rule: str  # the deciding rule's name, or "default" when nothing matched
    matched: tuple[str, ...]  # the customer's words that the rule matched
    explanation: (
        str  # one sentence, e.g. 'priority high: rule "site-down" matched "no carga" (...)'
    )

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form, for ticket events and ``--json`` output."""
        return {
            "value": self.value,
            "confidence": self.confidence,
            "rule": self.rule,
            "matched": list(self.matched),
            "explanation": self.explanation,
        }


def quote(surfaces: tuple[str, ...] | list[str], limit: int = 6) -> str:
    """Matched words as an explanation shows them: ``"no carga", "caída"``, and how many more."""
    unique = list(dict.fromkeys(" ".join(s.split()) for s in surfaces))
    shown = ", ".join(f'"{s}"' for s in unique[:limit])
    more = len(unique) - limit
    return shown + (f" and {more} more" if more > 0 else "")
