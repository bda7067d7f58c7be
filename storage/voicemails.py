"""The transcription stage's queue: voicemail rows claimed with a lease, retried, finished.

A claim takes the oldest due row (``pending``, or ``running`` under a lease that
expired because its runner died) and leases it; ``SKIP LOCKED`` lets several
instances share the queue on PostgreSQL (SQLite ignores it: one instance).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import Voicemail


def claim(session: Session, holder: str, now: datetime, lease: timedelta) -> Voicemail | None:
    """Lease the next due voicemail to ``holder``; None when there is none."""
    row = session.scalars(
        select(Voicemail)
        .where(
            or_(
                (Voicemail.state == "pending") & (Voicemail.due_at <= now),
                (Voicemail.state == "running") & (Voicemail.claimed_until < now),
            )
        )
        .order_by(Voicemail.due_at, Voicemail.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None:
        return None
    row.state = "running"
    row.claimed_by = holder
    row.claimed_until = now + lease
    return row


def held_by(session: Session, holder: str) -> list[Voicemail]:
    """The recordings ``holder`` claimed and has not finished, locked.

    For a restarted instance, the same holder (``daemon.instance``): what it was
    transcribing when it died, to be retried now instead of after the lease (30 minutes,
    longer than any recording may take).
    """
    return list(
        session.scalars(
            select(Voicemail)
            .where(Voicemail.state == "running", Voicemail.claimed_by == holder)
            .order_by(Voicemail.id)
            .with_for_update()
        )
    )


def retry_failed(session: Session, now: datetime) -> int:
    """Give every failed transcription a new set of attempts (an admin fixed the cause)."""
    result = session.execute(
        update(Voicemail)
        .where(Voicemail.state == "failed")
        .values(state="pending", attempts=0, due_at=now, last_error="")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def for_message(session: Session, message_pk: int) -> Voicemail | None:
    return session.scalar(select(Voicemail).where(Voicemail.message_pk == message_pk))


def states(session: Session) -> dict[str, int]:
    """How many voicemails are in each stage state."""
    rows = session.execute(select(Voicemail.state, func.count()).group_by(Voicemail.state))
    return {state: int(n) for state, n in rows}
