"""Business calendars: when a support team is open, and deadline arithmetic over that time.

API (everything timezone-aware; a naive datetime raises ``ValueError``; results carry the
calendar's local UTC offset as a fixed ``datetime.timezone``, see ``Calendar.local``)::

    Calendar.from_config(name: str, table: Mapping[str, Any]) -> Calendar
    calendars_from_config(tables: Mapping[str, Any]) -> dict[str, Calendar]  # adds "24x7"
    ALWAYS_OPEN: Calendar                                   # the built-in "24x7", in UTC
    parse_hours(spec: str | Sequence[str], key: str = "hours") -> WeeklyHours
    cal.add_business(start: datetime, minutes: int) -> datetime
    cal.add_business_days(start: datetime, days: int) -> datetime
    cal.at_local(day: date, wall: time) -> datetime          # "same local time" on ``day``
    cal.is_open(t: datetime) -> bool
    cal.next_open(t: datetime) -> datetime
    cal.business_minutes_between(a: datetime, b: datetime) -> float   # negative if b < a
    cal.is_business_day(day: date) -> bool
    cal.local(t: datetime) -> datetime                      # t at the calendar's local offset
    cal.to_config() -> dict[str, Any]                       # round-trips through from_config
    CalendarError(ValueError)                               # "key: problem; fix"

A ``[calendars.NAME]`` table has ``timezone`` (IANA name, required), ``hours`` (a string or
a list of strings such as ``"mon-fri 09:00-17:00"`` or ``"mon-thu 09:00-14:00, 15:00-18:00"``,
required), ``holidays`` (``"ES"``, ``"ES-MD"``, ``"MX"``, ``"BG"``: country and optional
subdivision of the ``holidays`` package; default none), ``extra_holidays`` and
``extra_workdays`` (lists of dates; default empty).

Decisions, each pinned by a test:

* Open time is the set of instants whose *local wall-clock* reading falls in an open range of
  a business day. So DST changes outside open hours change nothing (09:00-17:00 is 8 h on
  the change day), and a change inside open hours counts real elapsed minutes: a 00:00-24:00
  Sunday is 23 h in spring and 25 h in autumn; the repeated hour counts twice, the skipped
  hour not at all.
* ``add_business`` from outside open time begins at the next opening (0 minutes gives the
  next opening). A deadline that uses up an interval exactly ends at its close (16:00 + 1bh
  is 17:00 the same day, not 09:00 the next).
* ``add_business_days``: after-hours mail counts from the next business day, so the start is
  first moved to the next opening; then the date moves N business days forward (a business
  day is a date with open time) and keeps that local time, clamped into the day's hours: a
  time before its opening or inside a break moves forward to the next opening that day, a
  time after its last close moves back to that close. Friday 18:00 + 1bd is Tuesday 09:00.
* "The same local time" on a day where it does not exist (spring gap) is the first instant
  after the gap; where it exists twice (autumn fold) it is the first occurrence.
* An extra workday opens with its own weekday's hours, or, if that weekday has none (a
  Saturday worked in exchange for a bridge day), with the hours of the first open weekday.
  An extra holiday closes the date whatever the hours say.
* A search that finds no open time for three years raises ``CalendarError`` instead of
  looping forever.
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from datetime import timezone as fixed_zone
from typing import Any
from zoneinfo import ZoneInfo

from holidays import country_holidays

from triage import calendar_keys
from triage.hours import (
    DAY_MINUTES,
    DAYS,
    CalendarError,
    Ranges,
    WeeklyHours,
    check_hours,
    parse_hours,
    render_hours,
)

__all__ = [
    "ALWAYS_OPEN",
    "DAYS",
    "Calendar",
    "CalendarError",
    "WeeklyHours",
    "calendars_from_config",
    "parse_hours",
]

Piece = tuple[datetime, datetime, timedelta]  # UTC [start, end) of open time, and its offset

# Every UTC offset tzdata has ever used lies within +-16 h, so the instants of one local
# date lie within [midnight - 16 h, next midnight + 16 h] read as UTC.
_REACH = timedelta(hours=16)
_GIVE_UP_DAYS = 3 * 366
_CACHE_DAYS = 4096
# The timeline of open time is cached in spans of this length counted from _EPOCH.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_SPAN = timedelta(days=32)
_CACHE_SPANS = 256
# The fixed offsets ``local`` puts on times, one object each (a calendar sees a handful).
_FIXED_ZONES: dict[timedelta, fixed_zone] = {}


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware, got naive {value.isoformat()}; "
            "attach a zone, e.g. tzinfo=ZoneInfo('Europe/Madrid')"
        )
    return value.astimezone(UTC)


def _as_utc(wall: datetime) -> datetime:
    """A naive wall-clock reading as if it were UTC: the base for ``wall - offset``."""
    return wall.replace(tzinfo=UTC)


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _segments(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[Piece]:
    """Split the UTC span [lo, hi) where ``tz``'s offset is constant.

    zoneinfo does not expose its transitions, so the offset is sampled hourly and a change
    is bisected to the second (tzdata transitions fall on whole seconds).
    """
    lo = lo.replace(microsecond=0)
    out: list[Piece] = []
    seg_start, offset, t = lo, _offset(tz, lo), lo
    while t < hi:
        nxt = min(t + timedelta(hours=1), hi)
        if _offset(tz, nxt) == offset:
            t = nxt
            continue
        before, after = t, nxt  # offset holds at ``before``, not at ``after``
        while after - before > timedelta(seconds=1):
            mid = before + timedelta(seconds=(after - before).total_seconds() // 2)
            before, after = (mid, after) if _offset(tz, mid) == offset else (before, mid)
        out.append((seg_start, after, offset))
        seg_start, offset, t = after, _offset(tz, after), after
    out.append((seg_start, hi, offset))
    return out


def _first_at_or_after(pieces: Sequence[Piece], wall: datetime) -> datetime | None:
    """The first instant of ``pieces`` whose local reading is ``wall`` or later."""
    target = _as_utc(wall)
    for start, end, offset in pieces:
        candidate = max(start, target - offset)
        if candidate < end:
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class Calendar:
    """A named business calendar: zone, weekly hours, holidays and one-off exceptions."""

    name: str
    timezone: ZoneInfo
    hours: WeeklyHours
    holidays: str | None = None  # "ES", "ES-MD": country and subdivision of ``holidays``
    extra_holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()
    # Caches: holiday years are computed on first use; day pieces are pure in the fields.
    _holiday_years: dict[int, frozenset[date]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _days: dict[date, tuple[Piece, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _spans: dict[int, tuple[tuple[Piece, ...], list[datetime]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _day_adds: dict[tuple[datetime, int], datetime] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        key = f"calendars.{self.name}"
        check_hours(self.hours, f"{key}.hours")
        both = self.extra_holidays & self.extra_workdays
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise CalendarError(
                key, f"{listed} is both an extra holiday and an extra workday; keep one"
            )
        if self.holidays is not None:
            country, subdiv = calendar_keys.holiday_region(self.holidays, f"{key}.holidays")
            object.__setattr__(self, "holidays", f"{country}-{subdiv}" if subdiv else country)

    @classmethod
    def from_config(cls, name: str, table: Mapping[str, Any]) -> Calendar:
        """Build the calendar of a ``[calendars.NAME]`` TOML table; every mistake names its key."""
        key = f"calendars.{name}"
        calendar_keys.check(table, key)
        holidays = table.get("holidays")
        return cls(
            name=name,
            timezone=calendar_keys.zone(table["timezone"], f"{key}.timezone"),
            hours=parse_hours(table["hours"], f"{key}.hours"),
            holidays=holidays or None,
            extra_holidays=calendar_keys.dates(
                table.get("extra_holidays", []), f"{key}.extra_holidays"
            ),
            extra_workdays=calendar_keys.dates(
                table.get("extra_workdays", []), f"{key}.extra_workdays"
            ),
        )

    def to_config(self) -> dict[str, Any]:
        """The TOML table of this calendar; ``from_config`` of it gives an equal calendar."""
        table: dict[str, Any] = {"timezone": self.timezone.key, "hours": render_hours(self.hours)}
        if self.holidays:
            table["holidays"] = self.holidays
        if self.extra_holidays:
            table["extra_holidays"] = sorted(self.extra_holidays)
        if self.extra_workdays:
            table["extra_workdays"] = sorted(self.extra_workdays)
        return table

    # -- Which dates open, and when -------------------------------------------------------

    def _public_holidays(self, year: int) -> frozenset[date]:
        cached = self._holiday_years.get(year)
        if cached is None:
            cached = frozenset()
            if self.holidays:
                country, _, subdiv = self.holidays.partition("-")
                # Neighbouring years too: an observed day can land in the year before its holiday.
                found = country_holidays(country, subdiv or None, years=(year - 1, year, year + 1))
                cached = frozenset(d for d in found if d.year == year)
            self._holiday_years[year] = cached
        return cached

    def _ranges_on(self, day: date) -> Ranges:
        weekday = self.hours[day.weekday()]
        if day in self.extra_workdays:
            return weekday or next(r for r in self.hours if r)
        if day in self.extra_holidays or day in self._public_holidays(day.year):
            return ()
        return weekday

    def is_business_day(self, day: date) -> bool:
        """Whether ``day`` has open hours (not a holiday, or an extra workday)."""
        return bool(self._ranges_on(day))

    def _day(self, day: date) -> tuple[Piece, ...]:
        """The open pieces of the local date ``day``, in UTC and in instant order."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        pieces: list[Piece] = []
        ranges = self._ranges_on(day)
        if ranges:
            midnight = datetime.combine(day, time())
            segments = _segments(
                self.timezone,
                _as_utc(midnight) - _REACH,
                _as_utc(midnight) + timedelta(days=1) + _REACH,
            )
            for start_min, end_min in ranges:
                opens = _as_utc(midnight + timedelta(minutes=start_min))
                closes = _as_utc(midnight + timedelta(minutes=end_min))
                for seg_start, seg_end, offset in segments:
                    lo, hi = max(seg_start, opens - offset), min(seg_end, closes - offset)
                    if lo < hi:
                        pieces.append((lo, hi, offset))
        result = tuple(sorted(pieces))
        if len(self._days) >= _CACHE_DAYS:
            self._days.clear()
        self._days[day] = result
        return result

    def _walk(self, start: datetime, stop: datetime) -> Iterator[Piece]:
        """Open pieces clipped to [start, stop), in instant order, built from the dates.

        Dates are produced one by one, but a fold across midnight can put part of a date
        before the end of the previous one, so pieces wait in a heap until no later date
        can start before them.
        """
        day = start.astimezone(self.timezone).date() - timedelta(days=1)
        heap: list[Piece] = []
        while True:
            for piece in self._day(day):
                heapq.heappush(heap, piece)
            later_dates_from = _as_utc(datetime.combine(day + timedelta(days=1), time())) - _REACH
            bound = min(later_dates_from, stop)
            while heap and heap[0][0] < bound:
                lo, hi, offset = heapq.heappop(heap)
                lo, hi = max(lo, start), min(hi, stop)
                if lo < hi:
                    yield lo, hi, offset
            if later_dates_from >= stop:
                return
            day += timedelta(days=1)

    def _span(self, k: int) -> tuple[tuple[Piece, ...], list[datetime]]:
        """The open pieces of the k-th ``_SPAN`` of time since ``_EPOCH``, and their ends.

        The scheduler computes thousands of deadlines a pass, nearly all within the same few
        weeks: walking the dates afresh for each was a fifth of its deciding.
        """
        cached = self._spans.get(k)
        if cached is None:
            lo = _EPOCH + k * _SPAN
            pieces = tuple(self._walk(lo, lo + _SPAN))
            cached = (pieces, [hi for _, hi, _ in pieces])
            if len(self._spans) >= _CACHE_SPANS:
                self._spans.clear()
            self._spans[k] = cached
        return cached

    def _pieces(self, start: datetime, stop: datetime | None = None) -> Iterator[Piece]:
        """Open pieces clipped to [start, stop), in instant order.

        A piece that crosses a span's edge comes as two; every caller only adds them up.
        """
        k = (start - _EPOCH) // _SPAN
        pieces, ends = self._span(k)
        first = bisect_right(ends, start)  # the first piece still open after ``start``
        last_open = start
        while True:
            for lo, hi, offset in itertools.islice(pieces, first, None):
                if stop is not None and lo >= stop:
                    return
                begin, end = max(lo, start), hi if stop is None else min(hi, stop)
                if begin < end:
                    yield begin, end, offset
            k += 1
            span_end = _EPOCH + k * _SPAN
            if stop is not None and span_end >= stop:
                return
            if pieces:
                last_open = pieces[-1][1]
            elif stop is None and span_end - last_open > timedelta(days=_GIVE_UP_DAYS):
                raise CalendarError(
                    f"calendars.{self.name}",
                    f"no open time in the {_GIVE_UP_DAYS} days after "
                    f"{last_open.astimezone(self.timezone).date()}; "
                    "check its hours, holidays and extra_holidays",
                )
            pieces, ends = self._span(k)
            first = 0

    # -- Arithmetic -----------------------------------------------------------------------

    def local(self, t: datetime) -> datetime:
        """``t`` at this calendar's local UTC offset, as a fixed offset.

        Not as a ZoneInfo time: PEP 495 makes one in a repeated (fold) hour compare unequal
        to the same instant in any other zone, which would break ``due == stored_utc``.
        """
        if t.tzinfo is not UTC:
            _aware(t, "t")  # the check only: astimezone converts from any aware zone
        local = t.astimezone(self.timezone)
        offset = local.utcoffset()
        assert offset is not None  # a ZoneInfo time always has one
        zone = _FIXED_ZONES.get(offset) or _FIXED_ZONES.setdefault(offset, fixed_zone(offset))
        return t.astimezone(zone)  # the same wall time, fold 0; ``replace`` costs ~3x

    def is_open(self, t: datetime) -> bool:
        """Whether the team is open at instant ``t``."""
        instant = _aware(t, "t")
        local_day = instant.astimezone(self.timezone).date()
        return any(lo <= instant < hi for lo, hi, _ in self._day(local_day))

    def opens_before(self, start: datetime, stop: datetime) -> bool:
        """Whether any open time lies in [start, stop)."""
        lo, hi = _aware(start, "start"), _aware(stop, "stop")
        if not lo < hi:
            return False
        # The first piece still open after ``lo`` decides it (pieces are in instant
        # order): a scheduler pass asks this of every passed business deadline, and the
        # generator below cost more than the answer. Past the span's end, walk as usual.
        pieces, ends = self._span((lo - _EPOCH) // _SPAN)
        first = bisect_right(ends, lo)
        if first < len(pieces):
            return pieces[first][0] < hi
        return next(self._pieces(lo, hi), None) is not None

    def next_open(self, t: datetime) -> datetime:
        """``t`` itself when open, else the next opening."""
        return self.add_business(t, 0)

    def add_business(self, start: datetime, minutes: int) -> datetime:
        """The instant ``minutes`` minutes of open time after ``start``."""
        if minutes < 0:
            raise ValueError(f"minutes must be 0 or more, got {minutes}")
        remaining = timedelta(minutes=minutes)
        for lo, hi, _ in self._pieces(_aware(start, "start")):
            if remaining <= hi - lo:
                return self.local(lo + remaining)
            remaining -= hi - lo
        raise AssertionError("unreachable: _pieces without stop never ends")  # pragma: no cover

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The ``days``-th business day after ``start`` at its local time (see module doc)."""
        if days < 0:
            raise ValueError(f"days must be 0 or more, got {days}")
        # Remembered by instant (equal instants in any zone give the same answer): a
        # scheduler pass counts every follow-up it sends from the pass's one ``now``.
        key = (_aware(start, "start"), days)
        found = self._day_adds.get(key)
        if found is None:
            found = self._add_business_days(start, days)
            if len(self._day_adds) >= _CACHE_DAYS:
                self._day_adds.clear()
            self._day_adds[key] = found
        return found

    def _add_business_days(self, start: datetime, days: int) -> datetime:
        opened = self.next_open(start)  # already at the local offset
        if days == 0:
            return opened
        wall = opened.replace(tzinfo=None)
        day, counted, last_open = wall.date(), 0, wall.date()
        while counted < days:
            day += timedelta(days=1)
            if self._day(day):
                counted, last_open = counted + 1, day
            elif (day - last_open).days > _GIVE_UP_DAYS:
                raise CalendarError(
                    f"calendars.{self.name}",
                    f"no business day in the {_GIVE_UP_DAYS} days after {last_open}; "
                    "check its hours, holidays and extra_holidays",
                )
        pieces = self._day(day)
        found = _first_at_or_after(pieces, datetime.combine(day, wall.time()))
        return self.local(pieces[-1][1] if found is None else found)

    def at_local(self, day: date, wall: time) -> datetime:
        """The instant the local clock first reads ``wall`` (or later, in a gap) on ``day``."""
        reading = datetime.combine(day, wall.replace(tzinfo=None, fold=0))
        found = _first_at_or_after(
            _segments(self.timezone, _as_utc(reading) - _REACH, _as_utc(reading) + _REACH),
            reading,
        )
        assert found is not None  # the span reaches past every offset
        return self.local(found)

    def point_within(self, start: datetime, stop: datetime, fraction: float) -> datetime | None:
        """When ``fraction`` of the open time from ``start`` to ``stop`` has gone by, in
        whole minutes rounded down; None when no open time lies between them.

        ``add_business(start, floor(business_minutes_between(start, stop) * fraction))``
        in one walk: the scheduler asks it of every pending deadline (its at-risk moment).
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
        lo, hi = _aware(start, "start"), _aware(stop, "stop")
        if hi <= lo:
            return None
        pieces = [(begin, end - begin) for begin, end, _ in self._pieces(lo, hi)]
        window = sum((length for _, length in pieces), start=timedelta())
        if not window:
            return None
        remaining = timedelta(minutes=math.floor(window / timedelta(minutes=1) * fraction))
        for begin, length in pieces:
            if remaining <= length:
                return self.local(begin + remaining)
            remaining -= length
        raise AssertionError("unreachable: the point lies within the window")  # pragma: no cover

    def business_minutes_between(self, a: datetime, b: datetime) -> float:
        """Minutes of open time from ``a`` to ``b``; negative when ``b`` comes first."""
        lo, hi = _aware(a, "a"), _aware(b, "b")
        if hi < lo:
            return -self.business_minutes_between(b, a)
        total = sum(((end - begin) for begin, end, _ in self._pieces(lo, hi)), start=timedelta())
        return total / timedelta(minutes=1)


_ALL_DAY: Ranges = ((0, DAY_MINUTES),)
ALWAYS_OPEN = Calendar("24x7", ZoneInfo("UTC"), (_ALL_DAY,) * 7)


def calendars_from_config(tables: Mapping[str, Any]) -> dict[str, Calendar]:
    """Every ``[calendars.NAME]`` of a config, plus the built-in ``24x7`` it may not redefine."""
    out = {ALWAYS_OPEN.name: ALWAYS_OPEN}
    for name, table in tables.items():
        if name in out:
            raise CalendarError(f"calendars.{name}", "is built in; choose another name")
        if not isinstance(table, Mapping):
            raise CalendarError(
                f"calendars.{name}", f"must be a table; e.g. {calendar_keys.EXAMPLE}"
            )
        out[name] = Calendar.from_config(name, table)
    return out
