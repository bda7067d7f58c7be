"""Weekly opening hours as admins write them: ``"mon-fri 09:00-17:00"``, parsed and checked.

Part of a calendar's configuration (``triage.calendar``): days then ranges, several
ranges a day, ranges of a day never overlapping, and rendering back to lines that parse
to the same hours. Every mistake is a ``CalendarError`` naming the key and the fix.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

__all__ = [
    "DAYS",
    "DAY_MINUTES",
    "CalendarError",
    "Ranges",
    "WeeklyHours",
    "check_hours",
    "parse_hours",
    "render_hours",
]

Ranges = tuple[tuple[int, int], ...]  # (start, end) minutes after local midnight, end <= 1440
WeeklyHours = tuple[Ranges, Ranges, Ranges, Ranges, Ranges, Ranges, Ranges]  # Monday first

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {name: i for names in (DAYS, _FULL_DAYS) for i, name in enumerate(names)}
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
DAY_MINUTES = 1440


class CalendarError(ValueError):
    """Raised when a calendar's configuration is wrong, or it has no open time to search."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


def _minute(text: str, where: str) -> int:
    match = _TIME.fullmatch(text.strip())
    hours, minutes = (int(match[1]), int(match[2])) if match else (99, 99)
    if not (hours < 24 and minutes < 60) and (hours, minutes) != (24, 0):
        raise CalendarError(where, f"{text.strip()!r} is not a time; write HH:MM, 00:00 to 24:00")
    return hours * 60 + minutes


def _days(text: str, where: str) -> list[int]:
    """``mon-fri``, ``sat``, ``mon,wed,fri`` or ``sun-thu`` (ranges may wrap the week)."""
    out: list[int] = []
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        for name in (first, last) if last else (first,):
            if name not in _DAY_INDEX:
                raise CalendarError(
                    where,
                    f"unknown day {name!r}; use {', '.join(DAYS)} or a range such as mon-fri",
                )
        a, b = _DAY_INDEX[first], _DAY_INDEX[last or first]
        out.extend((a + i) % 7 for i in range((b - a) % 7 + 1))
    return out


def parse_hours(spec: str | Sequence[str], key: str = "hours") -> WeeklyHours:
    """Weekly hours from ``"mon-fri 09:00-17:00"`` or a list of such lines.

    A line is days then comma-separated ranges. Ranges of one day may come from several
    lines but may not overlap; touching ranges merge. A range ends after it starts; a shift
    past midnight is two lines.
    """
    if not isinstance(spec, str | list | tuple):
        raise CalendarError(key, "must be a string or a list of strings: 'mon-fri 09:00-17:00'")
    lines = [spec] if isinstance(spec, str) else list(spec)
    if not lines:
        raise CalendarError(key, "is empty; give lines such as 'mon-fri 09:00-17:00'")
    per_day: list[list[tuple[int, int, str]]] = [[] for _ in DAYS]
    for i, line in enumerate(lines):
        where = key if isinstance(spec, str) else f"{key}[{i}]"
        if not isinstance(line, str):
            raise CalendarError(where, "must be a string such as 'mon-fri 09:00-17:00'")
        days_text, _, ranges_text = " ".join(line.split()).partition(" ")
        if not days_text or not ranges_text:
            raise CalendarError(where, f"{line!r} needs days then times: 'mon-fri 09:00-17:00'")
        for text in ranges_text.split(","):
            start_text, dash, end_text = text.partition("-")
            if not dash:
                raise CalendarError(where, f"{text.strip()!r} is not a range; write 09:00-17:00")
            start, end = _minute(start_text, where), _minute(end_text, where)
            if start >= end:
                raise CalendarError(
                    where,
                    f"{text.strip()!r} does not end after it starts; a shift past midnight "
                    "is two lines, e.g. 'mon 22:00-24:00' and 'tue 00:00-06:00'",
                )
            for day in _days(days_text, where):
                per_day[day].append((start, end, line))
    return _weekly(per_day, key)


def _weekly(per_day: list[list[tuple[int, int, str]]], key: str) -> WeeklyHours:
    week: list[Ranges] = []
    for day, items in enumerate(per_day):
        merged: list[tuple[int, int]] = []
        items.sort()
        for (_, prev_end, prev_line), (start, _, line) in itertools.pairwise(items):
            if start < prev_end:
                raise CalendarError(
                    key,
                    f"{DAYS[day]}: {prev_line!r} and {line!r} overlap; give each day's "
                    "ranges once, e.g. 'mon-thu 09:00-17:00' and 'fri 08:00-15:00'",
                )
        for start, end, _ in items:
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        week.append(tuple(merged))
    return (week[0], week[1], week[2], week[3], week[4], week[5], week[6])


def check_hours(hours: WeeklyHours, key: str) -> None:
    """Hours built by hand (not parsed) must still be sorted, disjoint ranges of a day."""
    if len(hours) != 7:
        raise CalendarError(key, f"needs 7 days (Monday first), got {len(hours)}")
    for day, ranges in zip(DAYS, hours, strict=True):
        ends = [0, *(m for r in ranges for m in r)]
        if any(b < a for a, b in itertools.pairwise(ends)) or ends[-1] > DAY_MINUTES:
            raise CalendarError(key, f"{day}: ranges {ranges} must be sorted and disjoint")
        if any(start == end for start, end in ranges):
            raise CalendarError(key, f"{day}: empty range in {ranges}")
    if not any(hours):
        raise CalendarError(key, "gives no open time on any day")


def render_hours(hours: WeeklyHours) -> list[str]:
    """Lines ``parse_hours`` reads back, grouping consecutive days with the same ranges."""
    lines: list[str] = []
    day = 0
    while day < 7:
        last = day
        while last + 1 < 7 and hours[last + 1] == hours[day]:
            last += 1
        if hours[day]:
            days = DAYS[day] if last == day else f"{DAYS[day]}-{DAYS[last]}"
            ranges = ", ".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in hours[day])
            lines.append(f"{days} {ranges}")
        day = last + 1
    return lines


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
