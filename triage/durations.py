"""SLA durations as admins write them (``30m``, ``1h``, ``2d``, ``90bm``, ``1bh``, ``4bd``).

API::

    Duration.parse(text: str) -> Duration        # raises DurationError naming the forms
    duration.add(start: datetime, calendar: Calendar) -> datetime   # at its local offset
    duration.business -> bool;  str(duration) -> canonical text, e.g. "4bd"

``m`` and ``h`` are elapsed wall-clock time (72h is 4,320 real minutes, DST or not). ``d``
is calendar days at the same local time in the calendar's zone, so ``1d`` from 10:00 the
day before a DST change is 10:00 the next day (23 or 25 hours later); a local time that
the day skips becomes the first instant after the gap. ``bm``/``bh`` walk the calendar's
open time and ``bd`` moves business days (see ``triage.calendar`` for both rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from triage.calendar import Calendar

__all__ = ["Duration", "DurationError", "Unit"]

Unit = Literal["m", "h", "d", "bm", "bh", "bd"]
_FORM = re.compile(r"(\d{1,7})\s*(bm|bh|bd|m|h|d)")
_FORMS = (
    "a whole number and a unit: 30m, 1h, 2d (wall clock: minutes, hours, days) "
    "or 90bm, 1bh, 4bd (business minutes, hours, days)"
)
# Ten years in any unit: a typo such as "99999999bd" would otherwise keep a deadline
# computation walking for minutes.
_MAX = {"m": 5_256_000, "h": 87_600, "d": 3_650}


class DurationError(ValueError):
    """Raised when a duration's text is not one of the accepted forms, or is too long."""


@dataclass(frozen=True, slots=True)
class Duration:
    """An amount of wall-clock or business time."""

    amount: int
    unit: Unit

    def __post_init__(self) -> None:
        if self.unit not in ("m", "h", "d", "bm", "bh", "bd"):
            raise DurationError(f"unknown unit {self.unit!r}; use {_FORMS}")
        limit = _MAX[self.unit[-1]]
        if not 0 <= self.amount <= limit:
            raise DurationError(f"{self} is out of range: 0 to {limit}{self.unit}")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """The duration written as ``text``, e.g. ``"4bd"``; spaces and case do not matter."""
        match = _FORM.fullmatch(text.strip().lower()) if isinstance(text, str) else None
        if match is None:
            raise DurationError(f"invalid duration {text!r}; use {_FORMS}")
        return cls(int(match[1]), cast(Unit, match[2]))

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def business(self) -> bool:
        """Whether this duration counts only the calendar's open time."""
        return self.unit.startswith("b")

    def add(self, start: datetime, calendar: Calendar) -> datetime:
        """The instant this duration after ``start``, at ``calendar``'s local offset."""
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(f"start must be timezone-aware, got naive {start.isoformat()}")
        # In UTC: adding a timedelta to a ZoneInfo time moves its wall clock, not the instant.
        instant = start.astimezone(UTC)
        match self.unit:
            case "m":
                return calendar.local(instant + timedelta(minutes=self.amount))
            case "h":
                return calendar.local(instant + timedelta(hours=self.amount))
            case "d":
                local = start.astimezone(calendar.timezone)
                return calendar.at_local(local.date() + timedelta(days=self.amount), local.time())
            case "bm":
                return calendar.add_business(start, self.amount)
            case "bh":
                return calendar.add_business(start, self.amount * 60)
            case "bd":
                return calendar.add_business_days(start, self.amount)
        raise AssertionError(f"unhandled unit {self.unit}")  # pragma: no cover
