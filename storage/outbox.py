"""The outbox queue: mail rows written with the ticket change, claimed by a lease, settled.

A row is written in the transaction that decided to send it (``enqueue``), so a
crash either loses both the decision and the mail or keeps both. A sender claims
due rows (``pending`` and due, or ``sending`` under a lease that expired because
its sender died) with ``SKIP LOCKED``, so several instances share one queue on
PostgreSQL. Per-address token buckets bound automatic mail to one address
(LOOP-05).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from storage import bulk, core
from storage.models import OutboxMail, RateBucket

PENDING, SENDING, SENT, FAILED, CANCELLED = "pending", "sending", "sent", "failed", "cancelled"


_TABLE = cast(Table, OutboxMail.__table__)
_INSERT = insert(_TABLE)
_INSERT_ONE = _INSERT.returning(_TABLE.c.id)


def enqueue(session: Session, row: Mapping[str, Any]) -> int:
    """Insert one pending row (due at its ``due_at``) in the caller's transaction, now;
    its id.

    Inserted at once rather than added to the session: the caller records the id in a
    ticket event, and a flush of the whole session to learn it was one more unit-of-work
    pass for every message acknowledged.
    """
    values = {**row, "state": PENDING, "attempts": row.get("attempts") or 0}
    return int(core.connection(session).execute(_INSERT_ONE, values).scalar_one())


_CANCEL = (
    update(_TABLE)
    .where(
        _TABLE.c.ticket_id == bindparam("b_ticket"),
        _TABLE.c.state == bindparam("b_pending"),
        _TABLE.c.kind == bindparam("b_kind"),
    )
    .values(state=bindparam("b_state"), last_error=bindparam("b_why"))
)


def enqueue_many(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert pending rows given as column values (``state`` included); their ids, in order.

    executemany, not RETURNING: SQLite would insert the rows one statement each to
    return their ids in order. On SQLite the ids are counted back from the last one:
    the transaction holds the database's only write lock, and an ``INTEGER PRIMARY KEY``
    with no id given is the table's largest plus one, so the rows took consecutive ids.
    Elsewhere (other sessions insert meanwhile) they are looked up by Message-ID (unique).
    """
    if not rows:
        return []
    bulk.executemany(session, _INSERT, rows)
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        last = int(conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one())
        return list(range(last - len(rows) + 1, last + 1))
    wanted = [r["message_id"] for r in rows]
    found: dict[str, int] = {}
    for chunk in (wanted[i : i + 500] for i in range(0, len(wanted), 500)):
        query = select(_TABLE.c.id, _TABLE.c.message_id).where(_TABLE.c.message_id.in_(chunk))
        found.update((mid, pk) for pk, mid in session.execute(query))
    return [found[mid] for mid in wanted]


def claim_due(
    session: Session, holder: str, now: datetime, lease: timedelta, limit: int = 20
) -> list[tuple[OutboxMail, str]]:
    """Lease up to ``limit`` due rows to ``holder``, oldest due first; each with the holder
    whose expired lease it had ("" for a pending row)."""
    rows = list(
        session.scalars(
            select(OutboxMail)
            .where(
                or_(
                    (OutboxMail.state == PENDING) & (OutboxMail.due_at <= now),
                    (OutboxMail.state == SENDING) & (OutboxMail.claimed_until < now),
                )
            )
            .order_by(OutboxMail.due_at, OutboxMail.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    out = []
    for row in rows:
        out.append((row, row.claimed_by if row.state == SENDING else ""))
        row.state = SENDING
        row.claimed_by = holder
        row.claimed_until = now + lease
    return out


_SENT = (
    update(_TABLE)
    .where(
        _TABLE.c.id == bindparam("b_id"),
        _TABLE.c.state == SENDING,
        _TABLE.c.claimed_by == bindparam("b_holder"),
    )
    .values(
        state=SENT,
        attempts=_TABLE.c.attempts + 1,
        claimed_by="",
        claimed_until=None,
        sent_at=bindparam("b_now"),
        last_error="",
    )
    .returning(_TABLE.c.attempts)
)


def mark_sent(conn: Connection, mail_id: int, holder: str, now: datetime) -> int | None:
    """Record that ``holder`` sent the row it leased: its attempts now, or None when the
    lease is no longer ``holder``'s (another sender took the row over; it is left alone).

    One UPDATE: reading the row first (for update) loaded its bytes and spec to change
    five columns, for every mail sent. On a connection (``Database.connection``), not a
    session: a session's setup and commit cost a quarter of a settle (200 -> 160 µs).
    """
    params = {"b_id": mail_id, "b_holder": holder, "b_now": now}
    attempts = conn.execute(_SENT, params).scalar_one_or_none()
    return None if attempts is None else int(attempts)


def expire_claims(session: Session, holder: str, now: datetime) -> int:
    """End the leases ``holder`` took in an earlier life; how many rows it held.

    For a restarted instance, which is the same holder (``daemon.instance``): its rows
    are reclaimed at its first claim (and sent again with the same Message-ID, as any
    row of a sender that died) instead of waiting out ``[outbound] lease``.
    """
    result = session.execute(
        update(OutboxMail)
        .where(
            OutboxMail.state == SENDING,
            OutboxMail.claimed_by == holder,
            OutboxMail.claimed_until >= now,
        )
        .values(claimed_until=now - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def cancel_pending(
    session: Session, ticket_id: int, kinds: Sequence[str], why: str
) -> list[OutboxMail]:
    """Cancel the ticket's unsent mail of these kinds; the rows cancelled.

    A row a sender holds (``sending``) is left alone: it may already be on the
    wire, and cancelling it would only make the record lie.
    """
    rows = list(
        session.scalars(
            select(OutboxMail)
            .where(
                OutboxMail.ticket_id == ticket_id,
                OutboxMail.state == PENDING,
                OutboxMail.kind.in_(list(kinds)),
            )
            .with_for_update()
        )
    )
    for row in rows:
        row.state = CANCELLED
        row.last_error = why
    return rows


def cancel_pending_many(
    session: Session, ticket_ids: Sequence[int], kinds: Sequence[str], why: str
) -> int:
    """``cancel_pending`` for many tickets in one executemany; how many rows it cancelled.

    A row per (ticket, kind), not one ``IN`` list: an expanding ``IN`` is rendered anew
    for every length, which cost more than the update (a scheduler batch closing ~50).
    """
    rows = [
        {"b_ticket": tid, "b_kind": kind, "b_pending": PENDING, "b_state": CANCELLED, "b_why": why}
        for tid in ticket_ids
        for kind in kinds
    ]
    return bulk.executemany(session, _CANCEL, rows)


def states(session: Session) -> dict[str, int]:
    """How many outbox rows are in each state."""
    rows = session.execute(select(OutboxMail.state, func.count()).group_by(OutboxMail.state))
    return {state: int(n) for state, n in rows}


def retry_failed(session: Session, now: datetime) -> int:
    """Give every failed mail a new set of attempts (an admin fixed the relay)."""
    result = session.execute(
        update(OutboxMail)
        .where(OutboxMail.state == FAILED)
        .values(state=PENDING, attempts=0, due_at=now, last_error="")
    )
    return int(getattr(result, "rowcount", 0) or 0)


# Built once: ``session.get(..., with_for_update=True)`` built this statement and its
# cache key again at every acknowledgement, more than half of what taking a token cost.
_BUCKETS = cast(Table, RateBucket.__table__)
_BUCKET = (
    select(_BUCKETS.c.tokens, _BUCKETS.c.updated_at)
    .where(_BUCKETS.c.address == bindparam("address"))
    .with_for_update()
)
_NEW_BUCKET = insert(_BUCKETS)
_SET_BUCKET = (
    update(_BUCKETS)
    .where(_BUCKETS.c.address == bindparam("b_address"))
    .values(tokens=bindparam("b_tokens"), updated_at=bindparam("b_updated_at"))
)


def take_token(
    session: Session, address: str, now: datetime, *, per_day: float, burst: float | None = None
) -> bool:
    """Spend one of ``address``'s tokens; False when its bucket is empty.

    The bucket holds at most ``burst`` tokens (default ``per_day``) and refills
    continuously at ``per_day`` a day, so a dumb auto-responder mailing us every
    second gets at most ``per_day`` acknowledgements a day, never one per mail.
    """
    capacity = per_day if burst is None else burst
    key = address.lower()
    # Rows, not a RateBucket: no other code holds buckets loaded, and the ORM's select and
    # flushed UPDATE cost twice the statements' own work (``storage.core``).
    db = core.connection(session)
    found = db.execute(_BUCKET, {"address": key}).first()
    if found is None:
        tokens = capacity
    else:
        elapsed = max(0.0, (now - found.updated_at).total_seconds())
        tokens = min(capacity, found.tokens + elapsed * per_day / 86400.0)
    allowed = tokens >= 1.0
    tokens = tokens - 1.0 if allowed else tokens
    if found is None:
        db.execute(_NEW_BUCKET, {"address": key, "tokens": tokens, "updated_at": now})
    else:
        db.execute(_SET_BUCKET, {"b_address": key, "b_tokens": tokens, "b_updated_at": now})
    return allowed
