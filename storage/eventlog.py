"""Ticket events of a session written at its commit in one INSERT, past the unit of work.

The ingest adds four or five events a message (``message_added``, ``classified``,
``stamped``, ``ack_queued`` …). As ORM objects each costs its construction, two
relationships kept in step and the unit of work's sorting of them against their ticket
and message: 7 % of a message's instructions (docs/BENCHMARKS.md). A session that opts
in with :func:`defer` keeps its events in a list instead; they are written when it
commits, after the flush that gives their tickets and messages ids, in one executemany.

A deferred event is a transient ``TicketEvent`` (no id, not in the session), so:

* it is not in the database before the commit: :func:`pending` gives a ticket's unwritten
  events, which readers of a ticket's events in the same transaction add to what they
  read (``daemon.sla.clock_rows``);
* it is not in a loaded ``Ticket.events`` collection;
* changing it before the commit is what is written (its ``data`` is read at the commit);
* a SAVEPOINT rolled back drops the events added inside it, as the database drops the
  rows written there; one released keeps them for the commit; a rolled-back transaction
  drops them all. Only the outermost commit writes.

Sessions that do not opt in add their events through the unit of work as before.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import event, insert
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from storage import core
from storage.models import Message, Ticket, TicketEvent

_PENDING = "buzon.deferred_events"  # session.info: list[Deferred] while deferring
_MARKS = "buzon.deferred_marks"  # session.info: {savepoint: len(pending) at its start}
_INSERT = insert(TicketEvent)


class Deferred(NamedTuple):
    """An event and what it belongs to; the ids are read at the commit."""

    event: TicketEvent
    ticket: Ticket
    message: Message | None


def install(sessions: sessionmaker[Session]) -> None:
    """Let every session of ``sessions`` defer its events (once per session factory)."""
    event.listen(sessions, "before_commit", _before_commit)
    event.listen(sessions, "after_transaction_create", _mark)
    event.listen(sessions, "after_soft_rollback", _drop)
    event.listen(sessions, "after_transaction_end", _end)


def defer(session: Session) -> None:
    """Write the events ``session`` adds from now on at its commit (its factory must be
    ``install``-ed: ``storage.engine.Database`` does it)."""
    session.info[_PENDING] = []
    session.info[_MARKS] = {}


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


def _before_commit(session: Session) -> None:
    if not session.in_nested_transaction():  # a SAVEPOINT released: still undoable
        write(session)


def write(session: Session) -> None:
    """Insert the deferred events now (the outermost commit does it); the session is
    flushed first, so that every ticket and message they name has its id."""
    deferred: list[Deferred] | None = session.info.get(_PENDING)
    if not deferred:
        return
    session.flush()
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
    core.connection(session).execute(_INSERT, rows)
    deferred.clear()
    session.info[_MARKS].clear()


def _mark(session: Session, transaction: SessionTransaction) -> None:
    deferred: list[Deferred] | None = session.info.get(_PENDING)
    if deferred is not None and transaction.nested:
        session.info[_MARKS][transaction] = len(deferred)


def _drop(session: Session, previous: SessionTransaction) -> None:
    deferred: list[Deferred] | None = session.info.get(_PENDING)
    if deferred is None:
        return
    mark = session.info[_MARKS].pop(previous, None) if previous.nested else 0
    if mark is not None:
        del deferred[mark:]


def _end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction over, however it ended (a commit wrote the events, a
    # rollback or a close without either drops them): nothing may outlive it, or a session
    # used again would write them in its next transaction.
    if transaction.parent is None and session.info.get(_PENDING) is not None:
        defer(session)
