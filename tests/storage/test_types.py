"""The column types' fast paths write exactly what SQLAlchemy's own processors would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, create_engine

from storage.types import UTCDateTime

SQLITE = create_engine("sqlite://").dialect
# What the column wrote before its SQLite fast path: this type's processing, then the
# dialect's DATETIME formatting. Stored times are compared as text, so not a character
# may differ.
GENERIC = DateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
FAST = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
GENERIC_READ = DateTime().dialect_impl(SQLITE).result_processor(SQLITE, None)
FAST_READ = UTCDateTime().dialect_impl(SQLITE).result_processor(SQLITE, None)

# One instant in three zones, and the next microsecond.
TIMES = [
    datetime(2026, 12, 3, 14, 0, tzinfo=UTC),
    datetime(2026, 12, 3, 15, 0, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 12, 3, 9, 30, tzinfo=timezone(timedelta(hours=-4, minutes=-30))),
    datetime(2026, 12, 3, 14, 0, 0, 1, tzinfo=UTC),
]
zones = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 1),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC) | zones,
    )
)
def test_sqlite_text_of_a_utc_time_is_the_dialects_own(t: datetime) -> None:
    assert GENERIC is not None and FAST is not None
    assert FAST(t) == GENERIC(t.astimezone(UTC).replace(tzinfo=None))


# Years 1000-9999: at the range's ends an offset moves the instant out of what datetime
# can hold (0001-01-01 at +00:01 has no UTC time), which no stored time comes near.
instants = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC) | zones
)


@given(st.lists(st.sampled_from(TIMES) | instants, max_size=8))
def test_the_kept_last_text_never_answers_for_another_instant(times: list[datetime]) -> None:
    """The processor keeps the last value's text: runs of one instant (in any zone) and
    changes between instants each get their own text."""
    assert GENERIC is not None and FAST is not None
    for t in times:
        assert FAST(t) == GENERIC(t.astimezone(UTC).replace(tzinfo=None))


def test_a_naive_time_is_refused_not_guessed() -> None:
    assert FAST is not None
    with pytest.raises(ValueError, match="naive datetime"):
        FAST(datetime(2026, 12, 5, 9, 0))
    assert FAST(None) is None


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30)))
def test_sqlite_times_read_back_as_the_dialect_reads_them_in_utc(t: datetime) -> None:
    assert FAST is not None and GENERIC_READ is not None and FAST_READ is not None
    text = FAST(t.replace(tzinfo=UTC))
    assert FAST_READ(text) == GENERIC_READ(text).replace(tzinfo=UTC)
    assert FAST_READ(text).tzinfo is UTC
    assert FAST_READ(None) is None


def test_a_sqlite_time_written_with_an_offset_is_read_in_utc() -> None:
    # Rows written by hand (sqlite3 shell, an old export) may carry their offset.
    assert FAST_READ is not None
    assert FAST_READ("2026-12-05 10:00:00+01:00") == datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    assert FAST_READ("2026-12-05 10:00:00Z") == datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-05 10:00:00", datetime(2026, 12, 5, 10, 0, tzinfo=UTC)),
        ("2026-12-05T10:00:00.250000", datetime(2026, 12, 5, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-12-05", datetime(2026, 12, 5, 0, 0, tzinfo=UTC)),  # a date alone: its midnight
    ],
)
def test_hand_written_sqlite_times_without_an_offset_are_utc(text: str, expected: datetime) -> None:
    assert FAST_READ is not None
    got = FAST_READ(text)
    assert got == expected and got.tzinfo is UTC
