"""``storage.outbox``'s one-statement writes, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage import outbox
from storage.engine import Database
from storage.models import OutboxMail

NOW = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)


def _queue(db: Database, n: int) -> int:
    with db.transaction() as s:
        return outbox.enqueue(
            s,
            {
                "ticket_id": None,
                "kind": "ack",
                "recipient": f"ana{n}@cliente.example",
                "message_id": f"<q{n}@desk.example>",
                "created_at": NOW,
                "due_at": NOW,
                "attempts": None,
            },
        )


def _lease(db: Database, mail_id: int, holder: str, *, attempts: int = 0) -> None:
    with db.transaction() as s:
        row = s.get_one(OutboxMail, mail_id)
        row.state, row.claimed_by = outbox.SENDING, holder
        row.claimed_until, row.attempts = NOW + timedelta(minutes=5), attempts


def _row(db: Database, mail_id: int) -> OutboxMail:
    with db.transaction() as s:
        row = s.get_one(OutboxMail, mail_id)
        s.expunge(row)
        return row


def test_enqueue_inserts_a_pending_row_at_once_and_returns_its_id(db: Database) -> None:
    first, second = _queue(db, 1), _queue(db, 2)
    assert second != first
    row = _row(db, second)
    assert (row.recipient, row.state, row.attempts) == ("ana2@cliente.example", "pending", 0)
    assert (row.envelope_from, row.claimed_by, row.last_error, row.raw) == ("", "", "", None)


def test_mark_sent_settles_the_holders_row_in_one_statement(db: Database) -> None:
    mail_id = _queue(db, 1)
    _lease(db, mail_id, "host:1", attempts=2)
    with db.connection() as conn:
        assert outbox.mark_sent(conn, mail_id, "host:1", NOW) == 3
    row = _row(db, mail_id)
    assert (row.state, row.attempts, row.sent_at) == ("sent", 3, NOW)
    assert (row.claimed_by, row.claimed_until, row.last_error) == ("", None, "")


def test_mark_sent_leaves_a_row_another_sender_holds_or_nobody_leases(db: Database) -> None:
    theirs, pending = _queue(db, 1), _queue(db, 2)
    _lease(db, theirs, "other:2")
    with db.connection() as conn:
        assert outbox.mark_sent(conn, theirs, "host:1", NOW) is None
        assert outbox.mark_sent(conn, pending, "", NOW) is None  # not leased: "" holds nothing
    row = _row(db, theirs)
    assert (row.state, row.claimed_by, row.attempts, row.sent_at) == ("sending", "other:2", 0, None)
    assert _row(db, pending).state == "pending"
