"""A ticket's clocks as plain JSON: the snapshot the scheduler reads instead of a replay.

The events stay the truth and ``triage.clocks.replay`` the way to read them; the
snapshot is a cache of the replay's result without its words (``steps``, each
deadline's ``how``), written beside the deadline columns after every clock event.
A pass over thousands of due tickets then decodes one small document per ticket and
applies the one event it records, which is the replay's own fold step, so the result
is what a full replay would give. ``buzon verify`` and ``buzon sla explain`` compare
the snapshot with a fresh replay.

Times keep the calendar's local offset (``Calendar.local``), as the fold keeps them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from triage.clocks import Clocks, Deadline, State

VERSION = 1
_STATES = ("open", "waiting", "closed")


class SnapshotError(ValueError):
    """A stored snapshot is not one this version wrote; replay the events instead."""


def encode(clocks: Clocks) -> dict[str, Any]:
    """``clocks`` as JSON-ready data (steps and the deadlines' words left out)."""
    return {
        "v": VERSION,
        "state": clocks.state,
        "assign": _deadline(clocks.assign),
        "first_response": _deadline(clocks.first_response),
        "reply": _deadline(clocks.reply),
        "followup_due": iso(clocks.followup_due),
        "followups_sent": clocks.followups_sent,
        "close_due": iso(clocks.close_due),
    }


def decode(data: Any) -> Clocks:
    """The clocks ``encode`` stored; SnapshotError when ``data`` is not such a snapshot."""
    try:
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise SnapshotError(f"not a version-{VERSION} clock snapshot")
        state = data["state"]
        if state not in _STATES:
            raise SnapshotError(f"unknown state {state!r}")
        return Clocks(
            state=cast(State, state),
            assign=_read_deadline(data["assign"]),
            first_response=_read_deadline(data["first_response"]),
            reply=_read_deadline(data["reply"]),
            followup_due=_read_time(data["followup_due"]),
            followups_sent=int(data["followups_sent"]),
            close_due=_read_time(data["close_due"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"malformed clock snapshot ({type(exc).__name__}: {exc})") from exc


def iso(t: datetime | None) -> str | None:
    """``t`` in ISO 8601 with its offset, None for None: how times are kept in JSON."""
    return t.isoformat() if t is not None else None


def _read_time(value: Any) -> datetime | None:
    if value is None:
        return None
    t = datetime.fromisoformat(str(value))
    if t.utcoffset() is None:
        raise SnapshotError(f"time {value!r} has no UTC offset")
    return t


def _deadline(d: Deadline | None) -> list[Any] | None:
    if d is None:
        return None
    return [d.start.isoformat(), d.due.isoformat(), d.business, d.provisional]


def _read_deadline(value: Any) -> Deadline | None:
    if value is None:
        return None
    start, due, business, provisional = value
    begins, ends = _read_time(start), _read_time(due)
    if begins is None or ends is None:
        raise SnapshotError("a deadline needs both its start and its due time")
    return Deadline(begins, ends, bool(business), "", bool(provisional))
