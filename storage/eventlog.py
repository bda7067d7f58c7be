"""Ticket events of a session written at its commit in one INSERT, past the unit of work.

The ingest adds four or five events a message (``message_added``, ``classified``,
``stamped``, ``ack_queued`` …). As ORM objects each costs its construction, two
relationships kept in step and the unit of work's sorting of them against their ticket
and message: 7 % of a message's instructions (docs/BENCHMARKS.md). A session that opts
in with :func:`defer` keeps its events in a list instead; they are written when it
commits, after the flush that gives their tickets and messages ids, in one executemany.

A deferred event is a transient ``TicketEvent`` (no id, not in the session). It is
written where the unit of work would have flushed it at the latest: at a commit (the
outermost one, or a SAVEPOINT's release) and before a SAVEPOINT begins, on the enclosing
transaction, so a SAVEPOINT holds exactly the events added inside it. Hence:

* it is not in the database before then: :func:`pending` gives a ticket's unwritten
  events, which readers of a ticket's events in the same transaction add to what they
  read (``daemon.sla.clock_rows``);
* it is not in a loaded ``Ticket.events`` collection;
* a change to it is written if made before then (its ``data`` is read when written);
* a rollback, of the transaction or of a SAVEPOINT, drops the unwritten ones: the
  database drops what was written inside either.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import Connection, event, insert
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from storage.models import Message, Ticket, TicketEvent

_PENDING = "buzon.deferred_events"  # session.info: list[Deferred] while deferring
_INSERT = insert(TicketEvent)


class Deferred(NamedTuple):
    """An event and what it belongs to; their ids are read when it is written."""

    event: TicketEvent
    ticket: Ticket
    message: Message | None


def install(sessions: sessionmaker[Session]) -> None:
    """Let every session of ``sessions`` defer its events (once per session factory)."""
    event.listen(sessions, "before_commit", write)
    event.listen(sessions, "after_transaction_create", _before_savepoint)
    event.listen(sessions, "after_soft_rollback", _drop)
    event.listen(sessions, "after_transaction_end", _end)


def defer(session: Session) -> None:
    """Write the events ``session`` adds from now on at its commit (its factory must be
    ``install``-ed: ``storage.engine.Database`` does it)."""
    session.info[_PENDING] = []


def deferring(session: Session) -> list[Deferred] | None:
    """The list to append ``session``'s events to; None when it writes them itself."""
    found: list[Deferred] | None = session.info.get(_PENDING)
    return found


def pending(session: Session, ticket: Ticket, kinds: Collection[str]) -> list[TicketEvent]:
    """``ticket``'s events of ``kinds`` added to ``session`` and not written yet, in order."""
    return [
        d.event
        for d in session.info.get(_PENDING) or ()
        if d.ticket is ticket and d.event.kind in kinds
    ]


def write(session: Session) -> None:
    """Insert the deferred events now, in the session's current transaction (a commit
    does it); the session is flushed first, so every ticket and message has its id."""
    deferred: list[Deferred] | None = session.info.get(_PENDING)
    if deferred:
        session.flush()
        _insert(deferred, session.connection())


def _insert(deferred: list[Deferred], db: Connection) -> None:
    rows: list[dict[str, Any]] = [
        {
            "ticket_id": d.ticket.id,
            "at": d.event.at,
            "kind": d.event.kind,
            "message_pk": d.message.id if d.message is not None else None,
            "data": d.event.data,
        }
        for d in deferred
    ]
    db.execute(_INSERT, rows)
    deferred.clear()


def _before_savepoint(session: Session, transaction: SessionTransaction) -> None:
    # The SAVEPOINT is not sent yet (it goes with the savepoint's first statement) and the
    # unit of work has just flushed, on the enclosing transaction; the events go there too.
    deferred: list[Deferred] | None = session.info.get(_PENDING)
    if transaction.nested and deferred:
        assert transaction.parent is not None
        _insert(deferred, transaction.parent.connection(None))


def _drop(session: Session, previous: SessionTransaction) -> None:
    deferred: list[Deferred] | None = session.info.get(_PENDING)
    if deferred:
        deferred.clear()  # all added inside what was rolled back (see _before_savepoint)


def _end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction over, however it ended (a commit wrote the events, a
    # rollback or a close without either drops them): nothing may outlive it, or a session
    # used again would write them in its next transaction.
    if transaction.parent is None and session.info.get(_PENDING) is not None:
        defer(session)
