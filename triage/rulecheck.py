"""Typed reads of rules TOML: every wrong key or value becomes a ``RulesError`` naming it."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from triage.matching import Term, parse_term

Weighted = list[tuple[Term, float, bool]]  # (term, weight, upper_only) of one rule


class RulesError(ValueError):
    """Raised when rules text is not TOML, or a key or value in it is wrong; names both."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def subtable(
    check: Checker, data: Mapping[str, Any], key: str, path: str = ""
) -> Mapping[str, Any]:
    """The sub-table ``key`` of ``data`` (empty when absent); anything else is an error."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RulesError(check.source, f"{path}.{key}" if path else key, "must be a table")
    return cast(Mapping[str, Any], value)


def subtables(
    check: Checker, data: Mapping[str, Any], key: str
) -> list[tuple[str, Mapping[str, Any]]]:
    """The named sub-tables of ``data[key]``, e.g. each ``[category.NAME]``."""
    outer = subtable(check, data, key)
    out = []
    for name, table in outer.items():
        if not isinstance(table, dict):
            raise RulesError(check.source, f"{key}.{name}", f"must be a table [{key}.{name}]")
        out.append((name, cast(Mapping[str, Any], table)))
    return out


@dataclass(frozen=True, slots=True)
class Checker:
    """Typed reads of TOML values; every failure names the dotted key."""

    source: str

    def fail(self, path: str, key: str, problem: str) -> RulesError:
        return RulesError(self.source, f"{path}.{key}" if path else key, problem)

    def keys(self, table: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in table:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"; did you mean {near[0]!r}?" if near else f"; expected {', '.join(allowed)}"
                )
                raise self.fail(path, key, "unknown key" + hint)

    def number(self, table: Mapping[str, Any], path: str, key: str, default: float) -> float:
        value = table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(path, key, f"must be a number, got {value!r}")
        if value < 0:
            raise self.fail(path, key, f"must not be negative, got {value!r}")
        return float(value)

    def boolean(self, table: Mapping[str, Any], path: str, key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(path, key, f"must be true or false, got {value!r}")
        return value

    def text(self, table: Mapping[str, Any], path: str, key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(path, key, f"must be a string, got {value!r}")
        return value

    def choice(
        self, table: Mapping[str, Any], path: str, key: str, allowed: Sequence[Any], default: Any
    ) -> Any:
        value = table.get(key, default)
        if value is not default and (value not in allowed or isinstance(value, bool)):
            options = ", ".join(repr(a) for a in allowed)
            raise self.fail(path, key, f"must be one of {options}, got {value!r}")
        return value

    def strings(self, table: Mapping[str, Any], path: str, key: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, key, f'must be a list of strings, e.g. {key} = ["..."]')
        return cast(list[str], value)

    def terms(self, table: Mapping[str, Any], path: str, strong: float) -> Weighted:
        out: Weighted = []
        for key, weight, upper in (
            ("words", 1.0, False),
            ("strong", strong, False),
            ("upper", 1.0, True),
        ):
            for raw in self.strings(table, path, key):
                try:
                    out.append((parse_term(raw), weight, upper))
                except ValueError as exc:
                    raise self.fail(path, key, str(exc)) from None
        return out
