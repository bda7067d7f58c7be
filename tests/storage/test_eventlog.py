"""Events a session defers reach the database at its commit, in order, with their ids,
and only what a rolled-back transaction or savepoint did not add."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from storage import eventlog
from storage import repository as repo
from storage.engine import Database
from storage.models import Ticket, TicketEvent
from support.rows import open_ticket, stored_message

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _ticket() -> Ticket:
    return open_ticket("ana@cliente.es", NOW)


def _deferring_with_a_ticket(s: Session) -> Ticket:
    """``s`` deferring its events, with a ticket flushed and an event "before" added."""
    eventlog.defer(s)
    ticket = _ticket()
    s.add(ticket)
    s.flush()
    repo.add_event(s, ticket, "before", NOW)
    return ticket


def _events(db: Database) -> list[tuple[str, int, int | None, dict[str, Any]]]:
    with db.transaction() as s:
        return [
            (e.kind, e.ticket_id, e.message_pk, e.data)
            for e in s.scalars(select(TicketEvent).order_by(TicketEvent.id))
        ]


def test_deferred_events_are_written_at_the_commit_in_one_statement(db: Database) -> None:
    """Before the commit nothing is in the table; at it, every event goes in with the ids
    its ticket and message got at the flush, in the order added, changes included."""
    inserts: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TICKET_EVENTS"):
            inserts.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        with db.transaction() as s:
            eventlog.defer(s)
            ticket, msg = _ticket(), stored_message(f"{1:064d}", NOW, message_id="m1@x")
            msg.ticket = ticket
            s.add_all([ticket, msg])  # neither flushed: no ids yet
            repo.add_event(s, ticket, "created", NOW)
            stamped = repo.add_event(s, ticket, "stamped", NOW, data={"a": 1}, message=msg)
            repo.add_event(s, ticket, "message_added", NOW, message=msg)
            stamped.data = {**stamped.data, "result": "kept"}  # changed before the commit
            s.flush()
            assert s.scalar(select(TicketEvent.id)) is None  # the flush wrote none of them
            assert [e.kind for e in eventlog.pending(s, ticket, {"stamped", "created"})] == [
                "created",
                "stamped",
            ]
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert len(inserts) == 1, inserts  # one statement for the three
    got = _events(db)
    assert [(k, d) for k, _, _, d in got] == [
        ("created", {}),
        ("stamped", {"a": 1, "result": "kept"}),
        ("message_added", {}),
    ]
    assert {t for _, t, _, _ in got} == {ticket.id}
    assert [m for _, _, m, _ in got] == [None, msg.id, msg.id]


def test_a_rolled_back_transaction_writes_none_and_the_session_starts_clean(
    db: Database,
) -> None:
    """A failed or abandoned transaction's events are dropped with it; the same session's
    next transaction writes only its own."""
    with db.session() as s:
        eventlog.defer(s)
        with s.begin():
            ticket = _ticket()
            s.add(ticket)
            s.flush()
            tid = ticket.id
        with s.begin():
            t = s.get_one(Ticket, tid)
            repo.add_event(s, t, "lost", NOW)
            s.rollback()
        s.begin()
        repo.add_event(s, s.get_one(Ticket, tid), "closed-over", NOW)
        s.close()  # ends the transaction without a commit or a rollback call
        with s.begin():
            t = s.get_one(Ticket, tid)
            repo.add_event(s, t, "kept", NOW)
    assert [k for k, *_ in _events(db)] == ["kept"]


def test_a_savepoint_rolled_back_drops_only_the_events_added_inside_it(db: Database) -> None:
    """As the database drops the rows a SAVEPOINT wrote, the events added inside it go;
    those added before it, and inside a released one, stay."""
    with db.transaction() as s:
        ticket = _deferring_with_a_ticket(s)
        first = s.begin_nested()
        repo.add_event(s, ticket, "undone-first", NOW)
        first.rollback()
        with s.begin_nested():
            repo.add_event(s, ticket, "released", NOW)
        inner = s.begin_nested()
        repo.add_event(s, ticket, "undone", NOW)
        with s.begin_nested():
            repo.add_event(s, ticket, "undone-too", NOW)
        inner.rollback()
        repo.add_event(s, ticket, "after", NOW)
    assert [k for k, *_ in _events(db)] == ["before", "released", "after"]


def test_a_commit_with_a_savepoint_left_open_writes_every_event(db: Database) -> None:
    """The outermost commit releases a SAVEPOINT still open: the events added before and
    inside it are all written, none lost with the savepoint."""
    with db.transaction() as s:
        ticket = _deferring_with_a_ticket(s)
        s.begin_nested()
        repo.add_event(s, ticket, "inside", NOW)
    assert [k for k, *_ in _events(db)] == ["before", "inside"]


def test_a_session_that_does_not_defer_adds_events_through_the_unit_of_work(
    db: Database,
) -> None:
    """Without ``defer`` an event is an ORM object in the session, flushed with the rest."""
    with db.transaction() as s:
        ticket = _ticket()
        s.add(ticket)
        added = repo.add_event(s, ticket, "created", NOW)
        assert added in s
        s.flush()
        assert added.id is not None and added.ticket_id == ticket.id
    assert [k for k, *_ in _events(db)] == ["created"]
