"""``storage.bulk.executemany`` stores exactly what ``Session.execute`` would, faster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, insert, literal_column, select, text, update
from sqlalchemy.orm import Session

from storage import bulk, outbox
from storage.engine import Database
from storage.models import OutboxMail, Ticket, TicketEvent
from support.rows import open_ticket

EVENTS = cast(Table, TicketEvent.__table__)
TICKETS = cast(Table, Ticket.__table__)
OUTBOX = cast(Table, OutboxMail.__table__)
INSERT = insert(EVENTS)
STAMP = (
    update(TICKETS)
    .where(TICKETS.c.id == bindparam("b_id"))
    .values(next_due_at=bindparam("b_due"), alarms_sent=bindparam("b_sent"))
)
MADRID_WINTER = timezone(timedelta(hours=1))


def _events(ticket_id: int, tag: str) -> list[dict[str, Any]]:
    """Rows with what the processors must handle: times in and out of UTC, a NUL in a
    JSON string, None."""
    return [
        {
            "ticket_id": ticket_id,
            "at": datetime(2026, 12, 3, 14, 0, 0, n, tzinfo=UTC if n % 2 else MADRID_WINTER),
            "kind": f"{tag}{n}",
            "message_pk": None,
            "data": {"n": n, "text": "a\x00b", "list": [1, "dos"]},
        }
        for n in range(3)
    ]


def test_rows_are_stored_as_session_execute_stores_them(db: Database) -> None:
    with db.transaction() as s:
        t = open_ticket(at=datetime(2026, 12, 3, tzinfo=UTC))
        s.add(t)
        s.flush()
        s.execute(INSERT, _events(t.id, "orm"))
        bulk.executemany(s, INSERT, _events(t.id, "bulk"))
        bulk.executemany(
            s,
            STAMP,
            [{"b_id": t.id, "b_due": datetime(2026, 12, 4, 9, tzinfo=UTC), "b_sent": ["x"]}],
        )
        ticket_id = t.id
    with db.transaction() as s:
        # As text: the comparison that matters on SQLite is of the stored strings.
        raw = s.execute(
            text("SELECT kind, CAST(at AS TEXT), CAST(data AS TEXT) FROM ticket_events ORDER BY id")
        ).all()
        stored = {kind: (at, data) for kind, at, data in raw}
        for n in range(3):
            assert stored[f"bulk{n}"] == stored[f"orm{n}"]
        row = s.execute(
            select(TICKETS.c.next_due_at, TICKETS.c.alarms_sent).where(TICKETS.c.id == ticket_id)
        ).one()
    assert tuple(row) == (datetime(2026, 12, 4, 9, tzinfo=UTC), ["x"])


def test_a_row_without_a_parameter_the_statement_needs_is_refused_by_name(db: Database) -> None:
    """Column defaults are not applied: a missing column is an error, not a NULL."""
    with db.transaction() as s, pytest.raises(ValueError, match=r"lack the parameters \['data'\]"):
        bulk.executemany(s, INSERT, [{"ticket_id": 1, "at": None, "kind": "x", "message_pk": None}])


def test_no_rows_is_no_statement(db: Database) -> None:
    with db.transaction() as s:
        bulk.executemany(s, INSERT, [])
        assert s.execute(select(EVENTS.c.id)).first() is None


def test_a_statement_sqlalchemy_rewrites_at_execution_is_refused(db: Database) -> None:
    """An expanding IN is rendered per call: compiled once, the driver would get a
    placeholder it cannot fill. Refused before anything is sent."""
    expanding = (
        update(TICKETS)
        .where(TICKETS.c.id.in_(bindparam("b_ids", expanding=True)))
        .values(status=bindparam("b_status"))
    )
    with db.transaction() as s, pytest.raises(TypeError, match="expanding IN"):
        bulk.executemany(s, expanding, [{"b_ids": [1, 2], "b_status": "closed"}])


def _open_tickets(s: Session, count: int, now: datetime) -> list[int]:
    """``count`` new open tickets; their ids."""
    tickets = [open_ticket(at=now) for _ in range(count)]
    s.add_all(tickets)
    s.flush()
    return [t.id for t in tickets]


def test_cancel_pending_many_cancels_only_pending_mail_of_those_kinds(db: Database) -> None:
    """The scheduler's auto-close: each closed ticket's pending follow-ups and last notices
    are cancelled, with the reason; mail being sent, other kinds and other tickets are not,
    and the count is the rows changed."""
    now = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    with db.transaction() as s:
        tickets = _open_tickets(s, 3, now)
        for n, (tid, kind, state) in enumerate(
            [
                (tickets[0], "followup", "pending"),  # cancelled
                (tickets[0], "last_notice", "pending"),  # cancelled
                (tickets[0], "followup", "sending"),  # on the wire: kept
                (tickets[0], "ack", "pending"),  # another kind: kept
                (tickets[1], "followup", "pending"),  # cancelled
                (tickets[2], "followup", "pending"),  # not closing: kept
            ]
        ):
            s.add(
                OutboxMail(
                    ticket_id=tid,
                    kind=kind,
                    recipient="ana@a.es",
                    message_id=f"<{n}@desk>",
                    state=state,
                    created_at=now,
                    due_at=now,
                )
            )
    with db.transaction() as s:
        count = outbox.cancel_pending_many(
            s, tickets[:2], ("followup", "last_notice"), "ticket closed (auto)"
        )
    with db.transaction() as s:
        rows = s.scalars(select(OutboxMail).order_by(OutboxMail.id)).all()
        states = [(r.state, r.last_error) for r in rows]
    assert count == 3
    closed = ("cancelled", "ticket closed (auto)")
    kept = ("pending", "")
    assert states == [closed, closed, ("sending", ""), kept, closed, kept]


def test_enqueue_many_returns_each_rows_id_in_order(db: Database) -> None:
    """The ids go into the events that owe the mails, so each must be its own row's: after
    earlier rows, a deleted last row (SQLite may hand its id out again) and in two calls
    in one transaction."""
    now = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)

    def rows(tag: str, n: int) -> list[dict[str, Any]]:
        return [
            {
                "ticket_id": None,
                "kind": "notice",
                "recipient": "admins@desk.example.com",
                "envelope_from": "",
                "message_id": f"<{tag}{i}@desk>",
                "subject": "",
                "spec": {"n": i},
                "raw": None,
                "state": "pending",
                "attempts": 0,
                "created_at": now,
                "due_at": now,
                "claimed_by": "",
                "claimed_until": None,
                "sent_at": None,
                "last_error": "",
            }
            for i in range(n)
        ]

    with db.transaction() as s:
        first = outbox.enqueue_many(s, rows("a", 5))
    with db.transaction() as s:
        s.execute(OUTBOX.delete().where(OUTBOX.c.id == first[-1]))
    with db.transaction() as s:
        ids = outbox.enqueue_many(s, rows("b", 7)) + outbox.enqueue_many(s, rows("c", 3))
        assert outbox.enqueue_many(s, []) == []
    with db.transaction() as s:
        stored = dict(s.execute(select(OUTBOX.c.id, OUTBOX.c.message_id)).all())
    wanted = [f"<b{i}@desk>" for i in range(7)] + [f"<c{i}@desk>" for i in range(3)]
    assert [stored[i] for i in ids] == wanted
    assert len(set(ids)) == 10


def test_a_statement_of_one_parameter_takes_its_rows_too(db: Database) -> None:
    """One key: the row's value is taken alone, not as a tuple of its characters."""
    now = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    close = (
        update(TICKETS)
        .where(TICKETS.c.id == bindparam("b_id"))
        .values(status=literal_column("'closed'"))
    )
    with db.transaction() as s:
        ids = _open_tickets(s, 3, now)
        assert bulk.executemany(s, close, [{"b_id": ids[0]}, {"b_id": ids[2]}]) == 2
    with db.transaction() as s:
        states = s.execute(select(TICKETS.c.status).order_by(TICKETS.c.id)).scalars().all()
    assert states == ["closed", "open", "closed"]
