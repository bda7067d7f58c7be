"""Business calendars: arithmetic against a minute-stepping reference, seed rules, errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triage.calendar import (
    ALWAYS_OPEN,
    Calendar,
    CalendarError,
    calendars_from_config,
    parse_hours,
)
from triage.durations import Duration, DurationError

MADRID = ZoneInfo("Europe/Madrid")
MEXICO = ZoneInfo("America/Mexico_City")
SOFIA = ZoneInfo("Europe/Sofia")
MINUTE = timedelta(minutes=1)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def calendar(hours: str | list[str], zone: str = "Europe/Madrid", **table: Any) -> Calendar:
    return Calendar.from_config("test", {"timezone": zone, "hours": hours, **table})


OFFICE = calendar("mon-fri 09:00-17:00", holidays="ES")


# -- The reference: one UTC minute at a time ---------------------------------------------

Week = tuple[tuple[tuple[int, int], ...], ...]  # per weekday, Monday first: minute ranges


@dataclass
class Reference:
    """Open iff the local wall clock reads a minute inside a range of a business day."""

    zone: str
    week: Week
    country: str | None = None
    extra_holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()
    _days: dict[date, list[datetime]] = field(default_factory=dict)
    _ranges: dict[date, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tz = ZoneInfo(self.zone)
        country, _, subdiv = (self.country or "").partition("-")
        self.public = holidays.country_holidays(country, subdiv or None) if country else {}

    def ranges(self, day: date) -> tuple[tuple[int, int], ...]:
        if day not in self._ranges:
            self._ranges[day] = self._uncached_ranges(day)
        return self._ranges[day]

    def _uncached_ranges(self, day: date) -> tuple[tuple[int, int], ...]:
        if day in self.extra_workdays:
            return self.week[day.weekday()] or next(r for r in self.week if r)
        if day in self.extra_holidays or day in self.public:
            return ()
        return self.week[day.weekday()]

    def is_open(self, t: datetime) -> bool:
        local = t.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        return any(a <= minute < b for a, b in self.ranges(local.date()))

    def add_business(self, start: datetime, minutes: int) -> datetime:
        t = start
        if minutes == 0:
            while not self.is_open(t):
                t += MINUTE
            return t
        while minutes:
            minutes -= self.is_open(t)
            t += MINUTE
        return t

    def open_minutes_of(self, day: date) -> list[datetime]:
        """Every open UTC minute whose local date is ``day``; offsets stay within +-14 h."""
        if day not in self._days:
            t = datetime.combine(day, time(), UTC) - timedelta(hours=14)
            end = datetime.combine(day + timedelta(days=1), time(), UTC) + timedelta(hours=14)
            found = []
            while t < end:
                if t.astimezone(self.tz).date() == day and self.is_open(t):
                    found.append(t)
                t += MINUTE
            self._days[day] = found
        return self._days[day]

    def add_business_days(self, start: datetime, n: int) -> datetime:
        opened = self.add_business(start, 0)
        if n == 0:
            return opened
        wall = opened.astimezone(self.tz).replace(tzinfo=None)
        day = wall.date()
        while n:
            day += timedelta(days=1)
            n -= bool(self.open_minutes_of(day))
        minutes = self.open_minutes_of(day)
        target = datetime.combine(day, wall.time())
        for t in minutes:
            if t.astimezone(self.tz).replace(tzinfo=None) >= target:
                return t
        return minutes[-1] + MINUTE

    def minutes_between(self, a: datetime, b: datetime) -> int:
        count, t = 0, a
        while t < b:
            count += self.is_open(t)
            t += MINUTE
        return count


# -- Hypothesis strategies ----------------------------------------------------------------


def week(**days: Sequence[tuple[int, int]]) -> Week:
    """A week from ``mon_fri=[(540, 1020)]``-style keyword arguments (no wrapping)."""
    out: list[tuple[tuple[int, int], ...]] = [() for _ in DAYS]
    for key, ranges in days.items():
        first, _, last = key.partition("_")
        for i in range(DAYS.index(first), DAYS.index(last or first) + 1):
            out[i] = tuple(ranges)
    return tuple(out)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def lines(w: Week) -> list[str]:
    """The ``hours`` lines of a week, one per open day."""
    return [
        f"{DAYS[i]} " + ", ".join(f"{hhmm(a)}-{hhmm(b)}" for a, b in ranges)
        for i, ranges in enumerate(w)
        if ranges
    ]


ZONES = [
    ("Europe/Madrid", "ES"),
    ("Europe/Madrid", "ES-MD"),
    ("Europe/Madrid", None),
    ("America/Mexico_City", "MX"),
    ("America/Mexico_City", None),
    ("Europe/Sofia", "BG"),
    ("Europe/Sofia", None),
]
SHAPES = [
    week(mon_fri=[(540, 1020)]),
    week(mon_thu=[(540, 840), (900, 1080)], fri=[(480, 900)]),
    week(mon_sun=[(0, 1440)]),
    # Sunday 00:30-04:30 holds every DST change of the three zones (EU on Sundays at
    # 02:00/03:00 Madrid, 03:00/04:00 Sofia; Mexico until 2022 at 02:00).
    week(mon_fri=[(540, 1020)], sun=[(30, 270)]),
    week(sat_sun=[(60, 300), (1200, 1440)]),
    week(mon_sun=[(0, 180), (1380, 1440)]),
]
# DST changes (EU 2021/2026/2027, Mexico 2021/2022, its last), year ends, Christmas,
# Orthodox Easter 2027 in Bulgaria.
ANCHORS = [
    date(2021, 3, 28),
    date(2021, 4, 4),
    date(2021, 10, 31),
    date(2021, 12, 31),
    date(2022, 4, 3),
    date(2022, 10, 30),
    date(2026, 3, 29),
    date(2026, 10, 25),
    date(2026, 12, 24),
    date(2026, 12, 31),
    date(2027, 3, 28),
    date(2027, 5, 2),
    date(2027, 10, 31),
    date(2027, 12, 31),
]


@st.composite
def random_weeks(draw: st.DrawFn) -> Week:
    out: list[tuple[tuple[int, int], ...]] = []
    for _ in DAYS:
        count = draw(st.integers(0, 2))
        marks = sorted(draw(st.sets(st.integers(0, 288), min_size=2 * count, max_size=2 * count)))
        out.append(tuple((5 * a, 5 * b) for a, b in zip(marks[::2], marks[1::2], strict=True)))
    if not any(out):
        out[0] = ((540, 1020),)
    return tuple(out)


@dataclass(frozen=True)
class Case:
    reference: Reference
    calendar: Calendar
    start: datetime

    @property
    def longest_day(self) -> int:
        return max(sum(b - a for a, b in ranges) for ranges in self.reference.week)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A calendar in one of the three zones, and a start near a DST change or year end."""
    zone, country = draw(st.sampled_from(ZONES))
    w = draw(st.one_of(st.sampled_from(SHAPES), random_weeks()))
    if draw(st.integers(0, 3)):  # mostly near a DST change, a year end or Easter
        anchor = datetime.combine(draw(st.sampled_from(ANCHORS)), time(), UTC)
        start = anchor + draw(st.integers(-2 * 1440, 1440)) * MINUTE
    else:
        naive = draw(st.datetimes(datetime(2020, 1, 1), datetime(2028, 12, 31)))
        start = naive.replace(second=0, microsecond=0, tzinfo=UTC)
    extras = draw(st.dictionaries(st.integers(-1, 6), st.booleans(), max_size=4))
    local = start.astimezone(ZoneInfo(zone)).date()
    days_off = frozenset(local + timedelta(days=k) for k, off in extras.items() if off)
    days_on = frozenset(local + timedelta(days=k) for k, off in extras.items() if not off)
    table: dict[str, Any] = {
        "hours": lines(w),
        "extra_holidays": sorted(days_off),
        "extra_workdays": sorted(days_on),
    }
    if country:
        table["holidays"] = country
    return Case(Reference(zone, w, country, days_off, days_on), calendar(zone=zone, **table), start)


# -- Properties ---------------------------------------------------------------------------

REFERENCE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@REFERENCE
@given(cases(), st.data())
def test_add_business_matches_minute_stepping(case: Case, data: st.DataObject) -> None:
    """Adding business minutes lands where counting open minutes one by one lands."""
    minutes = data.draw(st.integers(0, 3 * case.longest_day), label="minutes")
    got = case.calendar.add_business(case.start, minutes)
    assert got == case.reference.add_business(case.start, minutes)
    assert got.utcoffset() == got.astimezone(case.calendar.timezone).utcoffset()


@REFERENCE
@given(cases(), st.integers(0, 4))
def test_add_business_days_matches_day_stepping(case: Case, days: int) -> None:
    """The Nth business day, at the opened start's local time clamped into that day's hours."""
    got = case.calendar.add_business_days(case.start, days)
    assert got == case.reference.add_business_days(case.start, days)
    # Answers are remembered by instant: the same instant read in another zone gets the
    # same answer at the calendar's offset, and another count of days is not confused.
    again = case.calendar.add_business_days(case.start.astimezone(ZoneInfo("Asia/Tokyo")), days)
    assert (again, again.utcoffset()) == (got, got.utcoffset())
    assert case.calendar.add_business_days(case.start, days + 1) > got


@REFERENCE
@given(cases(), st.integers(-2 * 1440, 3 * 1440))
def test_business_minutes_between_counts_open_minutes(case: Case, span: int) -> None:
    """The business minutes between two instants are the open minutes between them, signed."""
    end = case.start + span * MINUTE
    a, b = sorted((case.start, end))
    expected = case.reference.minutes_between(a, b) * (1 if span >= 0 else -1)
    assert case.calendar.business_minutes_between(case.start, end) == expected


@REFERENCE
@given(cases(), st.integers(-1440, 3 * 1440), st.sampled_from([0.0, 0.5, 0.8, 0.999, 1.0]))
def test_point_within_a_window_matches_minute_stepping(
    case: Case, span: int, fraction: float
) -> None:
    """The at-risk moment: ``fraction`` of the window's open minutes (rounded down) added
    to its start, counted by the reference; None for a window with no open minute."""
    stop = case.start + span * MINUTE
    window = case.reference.minutes_between(case.start, stop) if span > 0 else 0
    got = case.calendar.point_within(case.start, stop, fraction)
    if window == 0:
        assert got is None
        return
    assert got == case.reference.add_business(case.start, math.floor(window * fraction))
    assert got is not None and case.start <= got <= stop
    # The scheduler asks only whether the window has time in it when its deadline passed.
    assert case.calendar.opens_before(case.start, stop)


@REFERENCE
@given(cases(), st.integers(-1440, 3 * 1440))
def test_opens_before_is_whether_a_window_holds_an_open_minute(case: Case, span: int) -> None:
    stop = case.start + span * MINUTE
    window = case.reference.minutes_between(case.start, stop) if span > 0 else 0
    assert case.calendar.opens_before(case.start, stop) == (window > 0)


@settings(max_examples=150, deadline=None)
@given(cases())
def test_is_open_and_next_open_match_reference(case: Case) -> None:
    """Open-ness of an instant and the next opening agree with the reference."""
    assert case.calendar.is_open(case.start) == case.reference.is_open(case.start)
    assert case.calendar.next_open(case.start) == case.reference.add_business(case.start, 0)


@settings(max_examples=150, deadline=None)
@given(cases(), st.data())
def test_business_minutes_round_trip(case: Case, data: st.DataObject) -> None:
    """Measuring from start to start + m business minutes gives m; more minutes end later."""
    minutes = data.draw(st.integers(0, 15 * case.longest_day), label="minutes")
    due = case.calendar.add_business(case.start, minutes)
    assert case.calendar.business_minutes_between(case.start, due) == minutes
    assert case.calendar.add_business(case.start, minutes + 1) > due >= case.start


@settings(max_examples=100, deadline=None)
@given(cases())
def test_config_round_trips(case: Case) -> None:
    """A calendar written back as its TOML table reads as an equal calendar."""
    again = Calendar.from_config("test", case.calendar.to_config())
    assert again == case.calendar
    assert again.hours == case.reference.week


# -- Seed rules -----------------------------------------------------------------------------


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def test_christmas_eve_plus_one_business_hour_is_monday() -> None:
    """Issue 6: Thursday 24 Dec 2026 16:30 in Madrid + 1bh = Monday 28 Dec 09:30 (25th off)."""
    due = Duration.parse("1bh").add(at(MADRID, 2026, 12, 24, 16, 30), OFFICE)
    assert due == at(MADRID, 2026, 12, 28, 9, 30)
    assert due.isoformat() == "2026-12-28T09:30:00+01:00"


def test_after_hours_mail_counts_from_next_business_day() -> None:
    """Seed 003: mail on Friday at 18:00 + 1bh is due Monday at 10:00."""
    assert OFFICE.add_business(at(MADRID, 2026, 12, 11, 18), 60) == at(MADRID, 2026, 12, 14, 10)
    assert OFFICE.next_open(at(MADRID, 2026, 12, 12, 11)) == at(MADRID, 2026, 12, 14, 9)
    assert not OFFICE.is_open(at(MADRID, 2026, 12, 11, 17))  # closing time is closed


def test_a_window_used_up_exactly_ends_at_closing() -> None:
    """16:00 + 1bh is 17:00 the same day; 0 minutes from outside hours is the next opening."""
    assert OFFICE.add_business(at(MADRID, 2026, 12, 9, 16), 60) == at(MADRID, 2026, 12, 9, 17)
    assert OFFICE.add_business(at(MADRID, 2026, 12, 9, 17), 0) == at(MADRID, 2026, 12, 10, 9)
    assert OFFICE.add_business(at(MADRID, 2026, 12, 9, 12), 0) == at(MADRID, 2026, 12, 9, 12)


def test_year_end_skips_new_years_day_and_the_weekend() -> None:
    """Thursday 31 Dec 2026 16:30 + 1bh is Monday 4 Jan 2027 09:30 (1 Jan is a holiday)."""
    due = OFFICE.add_business(at(MADRID, 2026, 12, 31, 16, 30), 60)
    assert due == at(MADRID, 2027, 1, 4, 9, 30)


def test_priority_matrix_in_business_hours_across_a_mexican_holiday() -> None:
    """Seed 004: High 4, Medium 12, Low 24 business hours; Monday 15 Mar 2027 is a holiday."""
    latam = calendar("mon-fri 09:00-18:00", zone="America/Mexico_City", holidays="MX")
    start = at(MEXICO, 2027, 3, 12, 10)  # Friday
    due = {text: Duration.parse(text).add(start, latam) for text in ("4bh", "12bh", "24bh")}
    assert due["4bh"] == at(MEXICO, 2027, 3, 12, 14)
    assert due["12bh"] == at(MEXICO, 2027, 3, 16, 13)
    assert due["24bh"] == at(MEXICO, 2027, 3, 17, 16)


def test_weekend_request_counts_from_the_next_business_day() -> None:
    """Seed 004: a Saturday request with 4 business hours is due Monday at 13:00."""
    latam = calendar("mon-fri 09:00-18:00", zone="America/Mexico_City", holidays="MX")
    assert Duration.parse("4bh").add(at(MEXICO, 2027, 3, 6, 11), latam) == at(
        MEXICO, 2027, 3, 8, 13
    )


def test_follow_up_every_four_business_days_across_holidays() -> None:
    """Seed 000: 4bd follow-ups skip Christmas, New Year's Day and Epiphany."""
    cadence, t = Duration.parse("4bd"), at(MADRID, 2026, 12, 22, 11)
    stamps = []
    for _ in range(3):
        t = cadence.add(t, OFFICE)
        stamps.append(t)
    assert stamps == [
        at(MADRID, 2026, 12, 29, 11),
        at(MADRID, 2027, 1, 5, 11),
        at(MADRID, 2027, 1, 12, 11),
    ]


def test_support_closes_after_72_hours_setup_team_after_24_business_days() -> None:
    """Seed 000: 72h is wall clock (DST included); 24bd skips weekends and holidays."""
    start = at(MADRID, 2026, 12, 24, 16, 30)
    assert Duration.parse("72h").add(start, OFFICE) == at(MADRID, 2026, 12, 27, 16, 30)
    assert Duration.parse("24bd").add(start, OFFICE) == at(MADRID, 2027, 2, 1, 16, 30)
    autumn = at(MADRID, 2026, 10, 23, 12)  # clocks go back on Sunday 25 Oct
    assert Duration.parse("72h").add(autumn, OFFICE) == at(MADRID, 2026, 10, 26, 11)
    assert Duration.parse("3d").add(autumn, OFFICE) == at(MADRID, 2026, 10, 26, 12)


def test_business_days_start_from_the_next_opening() -> None:
    """Friday 18:00, Saturday and Monday 07:00 + 1bd are all Tuesday 09:00 (seed 003)."""
    for start in (at(MADRID, 2026, 12, 11, 18), at(MADRID, 2026, 12, 12, 10)):
        assert OFFICE.add_business_days(start, 1) == at(MADRID, 2026, 12, 15, 9)
    assert OFFICE.add_business_days(at(MADRID, 2026, 12, 14, 7), 1) == at(MADRID, 2026, 12, 15, 9)
    assert OFFICE.add_business_days(at(MADRID, 2026, 12, 14, 7), 0) == at(MADRID, 2026, 12, 14, 9)


def test_bulgarian_calendar_across_orthodox_easter_2027() -> None:
    """Good Friday, Easter Monday and the observed Labour Day close 30 Apr to 4 May 2027."""
    sofia = calendar("mon-fri 09:00-17:00", zone="Europe/Sofia", holidays="BG")
    assert sofia.add_business(at(SOFIA, 2027, 4, 29, 16), 120) == at(SOFIA, 2027, 5, 5, 10)
    assert sofia.add_business_days(at(SOFIA, 2027, 4, 29, 10), 1) == at(SOFIA, 2027, 5, 5, 10)
    assert not any(
        sofia.is_business_day(d) for d in (date(2027, 4, 30), date(2027, 5, 3), date(2027, 5, 4))
    )
    assert sofia.is_business_day(date(2027, 5, 5)) and not sofia.is_business_day(date(2027, 5, 6))


def test_extra_holidays_and_workdays() -> None:
    """A company day off closes a date; a worked Saturday opens with the first open hours."""
    office = calendar(
        ["mon-thu 09:00-17:00", "fri 08:00-15:00"],
        holidays="es-md",
        extra_holidays=["2026-12-24"],
        extra_workdays=[date(2026, 12, 26), date(2026, 12, 8)],
    )
    assert office.holidays == "ES-MD"
    assert office.add_business(at(MADRID, 2026, 12, 23, 16), 120) == at(MADRID, 2026, 12, 26, 10)
    assert office.is_open(at(MADRID, 2026, 12, 8, 10))  # Immaculate Conception, worked
    assert not office.is_open(at(MADRID, 2026, 12, 24, 10))
    assert not office.is_business_day(date(2026, 5, 2))  # Madrid Day, only in ES-MD


def test_several_ranges_a_day_and_clamping_into_hours() -> None:
    """Lunch breaks are skipped; a business day's local time is clamped into the target day."""
    office = calendar(["mon-thu 09:00-14:00, 15:00-18:00", "fri 08:00-15:00"])
    assert office.add_business(at(MADRID, 2026, 12, 14, 13, 30), 60) == at(
        MADRID, 2026, 12, 14, 15, 30
    )
    assert office.add_business(at(MADRID, 2026, 12, 17, 17, 30), 60) == at(
        MADRID, 2026, 12, 18, 8, 30
    )
    # Thursday 16:00 is after Friday's close (15:00): back to that close.
    thu = at(MADRID, 2026, 12, 17, 16)
    assert office.add_business_days(thu, 1) == at(MADRID, 2026, 12, 18, 15)
    # Friday 08:30 is before Monday's opening; Friday 14:30 falls in Monday's lunch break.
    assert office.add_business_days(at(MADRID, 2026, 12, 18, 8, 30), 1) == at(
        MADRID, 2026, 12, 21, 9
    )
    assert office.add_business_days(at(MADRID, 2026, 12, 18, 14, 30), 1) == at(
        MADRID, 2026, 12, 21, 15
    )
    assert office.business_minutes_between(thu, at(MADRID, 2026, 12, 21, 10)) == 120 + 420 + 60


def test_built_in_24x7_never_closes_at_midnight() -> None:
    """The built-in 24x7 calendar runs through midnights, weekends and year ends."""
    start = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert ALWAYS_OPEN.add_business(start, 60) == datetime(2027, 1, 1, 0, 30, tzinfo=UTC)
    assert ALWAYS_OPEN.is_open(datetime(2027, 1, 1, tzinfo=UTC))
    assert ALWAYS_OPEN.add_business_days(start, 2) == datetime(2027, 1, 2, 23, 30, tzinfo=UTC)
    assert ALWAYS_OPEN.business_minutes_between(start, start + timedelta(days=3)) == 3 * 1440
    assert calendars_from_config({})["24x7"] is ALWAYS_OPEN


# -- Daylight saving time -----------------------------------------------------------------


def test_dst_outside_open_hours_changes_nothing() -> None:
    """09:00-17:00 is 8 h on both DST days in Madrid, and 2d keeps the local time."""
    daily = calendar("mon-sun 09:00-17:00")
    for day in (date(2026, 3, 29), date(2026, 10, 25)):
        midnight = datetime.combine(day, time(), MADRID)
        assert daily.business_minutes_between(midnight, midnight + timedelta(days=1)) == 480
    assert Duration.parse("1d").add(at(MADRID, 2026, 10, 24, 10), daily) == at(
        MADRID, 2026, 10, 25, 10
    )


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (MADRID, date(2026, 3, 29), 23),
        (MADRID, date(2026, 10, 25), 25),
        (SOFIA, date(2027, 3, 28), 23),
        (SOFIA, date(2027, 10, 31), 25),
        (MEXICO, date(2021, 4, 4), 23),
        (MEXICO, date(2021, 10, 31), 25),
        (MEXICO, date(2023, 4, 2), 24),  # Mexico abolished DST in 2022
    ],
)
def test_dst_inside_open_hours_counts_real_minutes(zone: ZoneInfo, day: date, hours: int) -> None:
    """A 00:00-24:00 day lasts as long as the clock says: 23 h in spring, 25 h in autumn."""
    always = calendar("mon-sun 00:00-24:00", zone=zone.key)
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    assert always.business_minutes_between(start, end) == hours * 60
    assert always.add_business(start, hours * 60) == end


def test_a_fold_across_midnight_keeps_instant_order() -> None:
    """St John's went back from 00:01 to 23:01 in 2010: open time still follows the instants."""
    hours = week(mon_sun=[(0, 30), (1380, 1440)])
    newfoundland = calendar(lines(hours), zone="America/St_Johns")
    reference = Reference("America/St_Johns", hours)
    start = datetime(2010, 11, 6, 20, tzinfo=ZoneInfo("America/St_Johns")).astimezone(UTC)
    for minutes in range(0, 200, 3):
        assert newfoundland.add_business(start, minutes) == reference.add_business(start, minutes)
    end = start + timedelta(days=2)
    assert newfoundland.business_minutes_between(start, end) == reference.minutes_between(
        start, end
    )


def test_same_local_time_in_a_gap_or_a_fold() -> None:
    """A skipped local time becomes the end of the gap; a repeated one its first occurrence."""
    always = calendar("mon-sun 00:00-24:00")
    spring = always.add_business_days(at(MADRID, 2026, 3, 28, 2, 30), 1)
    assert spring.isoformat() == "2026-03-29T03:00:00+02:00"
    autumn = always.add_business_days(at(MADRID, 2026, 10, 24, 2, 30), 1)
    assert autumn.isoformat() == "2026-10-25T02:30:00+02:00"
    assert Duration.parse("2d").add(at(MADRID, 2026, 3, 27, 2, 30), always) == spring
    assert always.at_local(date(2026, 10, 25), time(2, 30)) == autumn


def test_results_in_a_repeated_hour_equal_their_utc_instant() -> None:
    """Results carry a fixed offset, so a time in the autumn fold equals the same UTC instant."""
    always = calendar("mon-sun 00:00-24:00")
    start = datetime(2027, 10, 31, 0, 0, tzinfo=UTC)  # 02:00 CEST, first of two
    assert always.next_open(start) == start
    assert always.add_business(start, 60) == datetime(2027, 10, 31, 1, 0, tzinfo=UTC)
    assert always.add_business(start, 60).isoformat() == "2027-10-31T02:00:00+01:00"


# -- Errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ("mon-fry 09:00-17:00", "unknown day 'fry'; use mon, tue"),
        ("mon-fri 17:00-09:00", "does not end after it starts; a shift past midnight"),
        ("mon-fri 09:00-25:00", "'25:00' is not a time; write HH:MM"),
        ("mon-fri 9-17", "'9' is not a time"),
        ("mon-fri", "needs days then times"),
        ("mon 09:00", "'09:00' is not a range"),
        (["mon-fri 09:00-17:00", "fri 08:00-15:00"], "fri: 'fri 08:00-15:00' and 'mon-fri"),
        ("mon 09:00-12:00, 11:00-13:00", "overlap; give each day's ranges once"),
        ([], "is empty"),
        (42, "must be a string or a list of strings"),
    ],
)
def test_bad_hours_name_the_problem_and_the_fix(hours: Any, message: str) -> None:
    """Each malformed hours line is refused with the key, the problem and an example fix."""
    with pytest.raises(CalendarError, match=r"^calendars\.test\.hours") as caught:
        calendar(hours)
    assert message in str(caught.value)


def test_hours_accept_lists_wrapping_ranges_full_names_and_touching_ranges() -> None:
    """``sun-thu`` wraps the week, ``saturday`` is a day, touching ranges merge."""
    hours = parse_hours(["sun-thu 08:00-12:00, 12:00-16:00", "saturday 10:00-13:00"])
    assert hours[6] == hours[0] == hours[3] == ((480, 960),)
    assert hours[4] == () and hours[5] == ((600, 780),)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"timezone": "Europe/Madird"}, "unknown time zone 'Europe/Madird'; did you mean"),
        ({"timezone": 1}, "must be an IANA time zone name"),
        ({"holidays": "XX"}, "unknown holiday country 'XX'"),
        ({"holidays": "ES-ZZ"}, "ES has no subdivision 'ZZ'; its subdivisions: AN"),
        ({"holiday": "ES"}, "unknown key 'holiday' (did you mean 'holidays'?)"),
        ({"extra_holidays": ["2026-13-01"]}, "'2026-13-01' is not a date"),
        ({"extra_workdays": "2026-12-26"}, "must be a list of dates"),
        (
            {"extra_holidays": ["2026-12-26"], "extra_workdays": ["2026-12-26"]},
            "2026-12-26 is both an extra holiday and an extra workday",
        ),
    ],
)
def test_bad_calendar_tables_name_the_key(table: dict[str, Any], message: str) -> None:
    """Wrong zones, holiday countries, keys and dates are refused with what to write instead."""
    base = {"timezone": "Europe/Madrid", "hours": "mon-fri 09:00-17:00"}
    with pytest.raises(CalendarError, match=r"^calendars\.test") as caught:
        Calendar.from_config("test", base | table)
    assert message in str(caught.value)


def test_missing_keys_and_redefined_built_ins_are_refused() -> None:
    """``timezone`` and ``hours`` are required; ``24x7`` cannot be redefined."""
    with pytest.raises(CalendarError, match="missing 'timezone'"):
        Calendar.from_config("x", {"hours": "mon-fri 09:00-17:00"})
    with pytest.raises(CalendarError, match=r"calendars\.24x7: is built in"):
        calendars_from_config({"24x7": {"timezone": "UTC", "hours": "mon-sun 00:00-24:00"}})
    assert set(calendars_from_config({"office": OFFICE.to_config()})) == {"24x7", "office"}


def test_naive_datetimes_and_negative_amounts_are_refused() -> None:
    """Every arithmetic entry point refuses naive datetimes and negative amounts."""
    naive = datetime(2026, 12, 24, 16, 30)
    calls: list[Callable[[], object]] = [
        lambda: OFFICE.add_business(naive, 60),
        lambda: OFFICE.add_business_days(naive, 1),
        lambda: OFFICE.is_open(naive),
        lambda: OFFICE.next_open(naive),
        lambda: OFFICE.business_minutes_between(naive, at(MADRID, 2026, 12, 24)),
        lambda: OFFICE.business_minutes_between(at(MADRID, 2026, 12, 24), naive),
        lambda: Duration.parse("1h").add(naive, OFFICE),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="timezone-aware"):
            call()
    with pytest.raises(ValueError, match="0 or more"):
        OFFICE.add_business(at(MADRID, 2026, 12, 24), -1)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Madrid"])
@pytest.mark.parametrize(
    "start",
    [datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC), datetime(2027, 10, 30, 23, 59, tzinfo=UTC)],
)
def test_long_walks_over_an_always_open_calendar_are_elapsed_time(
    zone: str, start: datetime
) -> None:
    """Open time is cached in spans of weeks; a piece crossing a span's edge comes in two.
    Over an always-open calendar open time is elapsed time, so 400 days of it (many edges,
    two DST changes in Madrid) must add up exactly, whichever way it is walked."""
    always = calendar("mon-sun 00:00-24:00", zone=zone)
    stop = start + timedelta(days=400)
    assert always.add_business(start, 400 * 24 * 60) == stop
    assert always.business_minutes_between(start, stop) == 400 * 24 * 60
    for days in (31, 32, 33, 64, 65):
        later = start + timedelta(days=days, minutes=7)
        assert always.business_minutes_between(start, later) == days * 24 * 60 + 7
        assert always.add_business(start, days * 24 * 60 + 7) == later


def test_a_calendar_without_open_time_gives_up() -> None:
    """Three years without open time raise instead of searching forever."""
    saturdays = [date(2026, 1, 3) + timedelta(weeks=k) for k in range(5 * 53)]
    shut = calendar("sat 10:00-11:00", extra_holidays=saturdays)
    with pytest.raises(CalendarError, match="no open time in the 1098 days after"):
        shut.add_business(at(MADRID, 2026, 1, 1), 1)
    with pytest.raises(CalendarError, match="no business day in the 1098 days after"):
        shut.add_business_days(at(MADRID, 2025, 12, 27, 10, 30), 1)
    assert shut.business_minutes_between(at(MADRID, 2026, 1, 1), at(MADRID, 2031, 1, 1)) == 0


@pytest.mark.parametrize("text", ["5x", "1.5h", "-1h", "", "h", "4 b d", "99999999bd"])
def test_bad_durations_name_the_accepted_forms(text: str) -> None:
    """A duration that is not a whole number and a unit lists the forms it could be."""
    with pytest.raises(DurationError, match="use a whole number and a unit: 30m, 1h, 2d"):
        Duration.parse(text)


def test_durations_parse_to_units() -> None:
    """Every unit parses, prints back, and says whether it counts business time."""
    parsed = [Duration.parse(t) for t in ("30m", "1h", "2d", "90bm", "1BH", " 4bd ")]
    assert [str(d) for d in parsed] == ["30m", "1h", "2d", "90bm", "1bh", "4bd"]
    assert [d.business for d in parsed] == [False, False, False, True, True, True]
    with pytest.raises(DurationError, match="out of range: 0 to 3650bd"):
        Duration.parse("3651bd")
    assert Duration.parse("90bm").add(at(MADRID, 2026, 12, 24, 16, 30), OFFICE) == at(
        MADRID, 2026, 12, 28, 10
    )
    assert Duration.parse("30m").add(datetime(2026, 12, 24, 12, tzinfo=UTC), OFFICE) == at(
        MADRID, 2026, 12, 24, 13, 30
    )
