"""What a ticket's pending SLA clocks owe the scheduler: warnings, and when it next has work.

API::

    alarms(clocks, calendar, at_risk, sent=(), now=None) -> list[Alarm]
    next_due(clocks, alarms_sent, calendar, at_risk) -> datetime | None

An alarm is keyed by its clock, kind and deadline (in UTC), so it is sent once: a replay
that reproduces a deadline finds its alarms already sent; a re-stamp that moves it warns
afresh. The at-risk moment is ``at_risk`` of the deadline's window (business minutes for
a business deadline, rounded down to the minute).
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from triage.calendar import Calendar
from triage.clocks import Clocks, Deadline


class Alarm(NamedTuple):
    """A moment the scheduler must warn about a clock; ``key`` makes the warning once-only.

    A named tuple, not a frozen dataclass: a scheduler pass makes thousands, and a
    frozen dataclass's ``__init__`` costs ~4x a tuple's."""

    clock: Literal["assign", "respond"]
    kind: Literal["at_risk", "breached"]
    at: datetime
    deadline: datetime
    key: str


def alarms(
    clocks: Clocks,
    calendar: Calendar,
    at_risk: float,
    *,
    sent: Collection[str] = (),
    now: datetime | None = None,
) -> list[Alarm]:
    """At-risk and breach alarms of the pending clocks, earliest first, but those whose
    key is in ``sent`` (already sent: a pass need not walk the calendar for them).

    ``now``: an at-risk alarm whose deadline has passed by then comes at its deadline,
    its own moment not worked out (a pass that finds a deadline passed sends both alarms
    at once, and the at-risk one quietly); it exists, as always, only for a window with
    time in it.
    """
    if not 0 < at_risk < 1:
        raise ValueError(f"at_risk must be a fraction between 0 and 1 (e.g. 0.8), got {at_risk}")
    out: list[Alarm] = []
    pending: tuple[tuple[Literal["assign", "respond"], Deadline | None], ...] = (
        ("assign", clocks.assign),
        ("respond", clocks.respond),
    )
    for clock, deadline in pending:
        if deadline is None:
            continue
        due = deadline.due.astimezone(UTC).isoformat()  # the key's deadline (module doc)
        key = f"{clock}:at_risk:{due}"
        if key not in sent and (risky := _risk_moment(deadline, calendar, at_risk, now)):
            out.append(Alarm(clock, "at_risk", risky, deadline.due, key))
        key = f"{clock}:breached:{due}"
        if key not in sent:
            out.append(Alarm(clock, "breached", deadline.due, deadline.due, key))
    out.sort(key=_EARLIEST_FIRST)
    return out


_EARLIEST_FIRST = operator.itemgetter(*(Alarm._fields.index(f) for f in ("at", "clock", "kind")))


def _risk_moment(
    deadline: Deadline, calendar: Calendar, at_risk: float, now: datetime | None
) -> datetime | None:
    """When ``at_risk`` of the window has gone by; None for a window with no time in it.

    A deadline passed by ``now`` gives the deadline itself: the moment is not worked out,
    only whether the window has time in it."""
    passed = now is not None and deadline.due <= now
    if deadline.business:
        if passed:
            return deadline.due if calendar.opens_before(deadline.start, deadline.due) else None
        # Whole minutes, rounded down: an early warning is harmless, a late one is not.
        return calendar.point_within(deadline.start, deadline.due, at_risk)
    span = deadline.due - deadline.start
    if span.total_seconds() <= 0:
        return None
    return deadline.due if passed else calendar.local(deadline.start + span * at_risk)


def next_due(
    clocks: Clocks,
    alarms_sent: Collection[str],
    calendar: Calendar,
    at_risk: float,
    *,
    known: Sequence[Alarm] | None = None,
) -> datetime | None:
    """The earliest moment the scheduler has work on this ticket; None when it has none.

    ``known``: ``alarms(clocks, calendar, at_risk)`` when the caller has it already (with
    or without the sent ones).
    """
    moments = [t for t in (clocks.followup_due, clocks.close_due) if t is not None]
    pending = alarms(clocks, calendar, at_risk, sent=alarms_sent) if known is None else known
    moments += [a.at for a in pending if a.key not in alarms_sent]
    return min(moments, default=None)
