"""Reading a ``[calendars.NAME]`` table: its keys, time zone, holiday region and dates.

The values of a calendar's configuration other than its weekly hours (``triage.hours``),
checked as ``triage.calendar`` builds a ``Calendar``. Every mistake is a
``CalendarError`` naming the key, what is wrong and what to write instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from holidays import list_supported_countries

from triage.hours import CalendarError

KEYS = ("timezone", "hours", "holidays", "extra_holidays", "extra_workdays")
EXAMPLE = "timezone = 'Europe/Madrid', hours = ['mon-fri 09:00-17:00'], holidays = 'ES'"


def check(table: Mapping[str, Any], key: str) -> None:
    """Every key of ``table`` known, the required ones present, ``holidays`` a string."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        hints = [difflib.get_close_matches(k, KEYS, n=1) for k in unknown]
        said = ", ".join(
            f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
            for k, h in zip(unknown, hints, strict=True)
        )
        raise CalendarError(key, f"unknown key {said}; accepted keys: {', '.join(KEYS)}")
    for required in ("timezone", "hours"):
        if required not in table:
            raise CalendarError(key, f"missing {required!r}; e.g. {EXAMPLE}")
    holidays = table.get("holidays")
    if holidays is not None and not isinstance(holidays, str):
        raise CalendarError(f"{key}.holidays", "must be a string such as 'ES' or 'ES-MD'")


def zone(value: object, key: str) -> ZoneInfo:
    """The IANA time zone ``value`` names; a misspelt name gets the closest real one."""
    if not isinstance(value, str):
        raise CalendarError(key, "must be an IANA time zone name such as 'Europe/Madrid'")
    try:
        return ZoneInfo(value)
    except (KeyError, ValueError, OSError):
        close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CalendarError(
            key, f"unknown time zone {value!r}; {hint}use an IANA name such as 'Europe/Madrid'"
        ) from None


def holiday_region(spec: str, key: str) -> tuple[str, str | None]:
    """``"ES-MD"`` as ("ES", "MD"), checked against what the ``holidays`` package knows."""
    country, _, subdiv = spec.strip().partition("-")
    supported = list_supported_countries()
    country = country.upper()
    if country not in supported:
        raise CalendarError(
            key,
            f"unknown holiday country {spec!r}; use an ISO 3166 code the holidays package "
            "supports, optionally with a subdivision: 'ES', 'ES-MD', 'MX', 'BG'",
        )
    if not subdiv:
        return country, None
    known = {s.upper(): s for s in supported[country]}
    if subdiv.upper() not in known:
        listed = ", ".join(supported[country]) or "none"
        raise CalendarError(
            key, f"{country} has no subdivision {subdiv!r}; its subdivisions: {listed}"
        )
    return country, known[subdiv.upper()]


def dates(value: object, key: str) -> frozenset[date]:
    """A TOML list of dates (TOML dates or ISO texts) as a set of dates."""
    if not isinstance(value, list):
        raise CalendarError(key, "must be a list of dates, e.g. [2026-12-24, '2026-12-31']")
    out: set[date] = set()
    for i, item in enumerate(value):
        if isinstance(item, date) and not isinstance(item, datetime):
            out.add(item)
            continue
        try:
            out.add(date.fromisoformat(item if isinstance(item, str) else ""))
        except ValueError:
            raise CalendarError(
                f"{key}[{i}]", f"{item!r} is not a date; write YYYY-MM-DD, e.g. 2026-12-24"
            ) from None
    return frozenset(out)
