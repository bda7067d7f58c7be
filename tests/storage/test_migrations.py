"""Migrations that move data keep it, up and down, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from storage.engine import (
    HEAD_REVISION,
    Database,
    alembic_config,
    current_revision,
    head_revision,
    stored_revisions,
)

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _at(db: Database) -> Any:
    return NOW.replace(tzinfo=None) if db.backend == "sqlite" else NOW


def _ticket(db: Database, tid: int, triage: dict[str, Any]) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tickets (id, ref, status, subject, customer, requester, channel, "
                "message_count, created_at, updated_at, category, priority, language, flags, "
                "triage, match_text, team, sla_policy, sla_calendar, assigned_to, "
                "followups_sent, alarms_sent) VALUES (:id, :ref, 'open', 's', 'c', 'r', "
                "'email', 1, :at, :at, 'billing', 'high', 'es', '[]', :triage, '', '', '', '', "
                "'', 0, '[]')"
            ),
            {"id": tid, "ref": f"B-{tid}", "at": _at(db), "triage": json.dumps(triage)},
        )


def _classified(db: Database) -> list[tuple[int, dict[str, Any]]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT ticket_id, CAST(data AS TEXT) FROM ticket_events "
                "WHERE kind = 'classified' ORDER BY id"
            )
        )
        return [(tid, json.loads(data)) for tid, data in rows]


def test_head_revision_is_alembics_head() -> None:
    """The constant that lets a current database skip Alembic names the newest script."""
    assert head_revision() == HEAD_REVISION


def test_a_current_database_opens_without_alembic(blank: Database) -> None:
    """A blank database is migrated by Alembic; once at the head, opening it again (a
    new process: the daemon, its ingest process, a command) does not even import it."""
    assert stored_revisions(blank.engine) == []
    blank.upgrade()
    assert stored_revisions(blank.engine) == [HEAD_REVISION]
    probe = (
        "import sys; from storage.engine import Database; db = Database(sys.argv[1]); "
        "db.upgrade(); print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic'}))"
    )
    url = blank.engine.url.render_as_string(hide_password=False)
    out = subprocess.run(
        [sys.executable, "-c", probe, url], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_0008_moves_a_tickets_triage_into_its_classified_event_and_back(
    blank: Database,
) -> None:
    """The triage document leaves the ticket row: a ticket with a ``classified`` event
    keeps that one, one without (split off another ticket) gets the row's document as an
    event, an empty document gets none; downgrade puts the newest event's back."""
    cfg = alembic_config(blank.engine)
    command.upgrade(cfg, "0007")
    _ticket(blank, 1, {"decisions": {"category": {"value": "stale copy"}}})
    _ticket(blank, 2, {"decisions": {"category": {"value": "only on the row"}}})
    _ticket(blank, 3, {})
    event = {"decisions": {"category": {"value": "from the event"}}}
    with blank.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ticket_events (ticket_id, at, kind, data) "
                "VALUES (1, :at, 'classified', :data)"
            ),
            {"at": _at(blank), "data": json.dumps(event)},
        )

    blank.upgrade()

    assert current_revision(blank.engine) == head_revision()
    assert _classified(blank) == [
        (1, event),
        (2, {"decisions": {"category": {"value": "only on the row"}}}),
    ]
    with blank.engine.connect() as conn:
        columns = conn.execute(text("SELECT * FROM tickets")).keys()
    assert "triage" not in columns

    command.downgrade(cfg, "0007")
    with blank.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, CAST(triage AS TEXT) FROM tickets ORDER BY id"))
        back = {tid: json.loads(doc) for tid, doc in rows}
    assert back == {
        1: event,
        2: {"decisions": {"category": {"value": "only on the row"}}},
        3: {},
    }


def _outbox(conn: Any, db: Database, ticket_id: int, message_id: str) -> None:
    conn.execute(
        text(
            "INSERT INTO outbox (ticket_id, kind, recipient, envelope_from, message_id, subject, "
            "state, attempts, created_at, due_at, claimed_by, last_error) VALUES (:tid, 'ack', "
            "'ana@cliente.es', '', :mid, '', 'pending', 0, :at, :at, '', '')"
        ),
        {"tid": ticket_id, "mid": message_id, "at": _at(db)},
    )


def _ticket_row(conn: Any, db: Database, tid: int) -> None:
    conn.execute(
        text(
            "INSERT INTO tickets (id, ref, status, subject, customer, requester, channel, "
            "message_count, created_at, updated_at, category, priority, language, flags, "
            "match_text, team, sla_policy, sla_calendar, assigned_to, followups_sent, "
            "alarms_sent) VALUES (:id, :ref, 'open', 's', 'c', 'r', 'email', 1, :at, :at, "
            "'billing', 'high', 'es', '[]', '', '', '', '', '', 0, '[]')"
        ),
        {"id": tid, "ref": f"B-{tid}", "at": _at(db)},
    )


def _refused(db: Database, ticket_id: int, message_id: str) -> bool:
    """Whether a transaction inserting an outbox row for a ticket that never comes fails."""
    try:
        with db.engine.begin() as conn:
            _outbox(conn, db, ticket_id, message_id)
    except IntegrityError:
        return True
    return False


def test_0009_checks_the_outboxs_ticket_at_commit_and_keeps_the_rows(blank: Database) -> None:
    """After 0009 an outbox row may be inserted before its ticket in one transaction (the
    ingest draws a new ticket's id first and writes its row at the flush); a ticket that
    never comes still fails the transaction. Rows survive both ways; downgrade checks at
    once again."""
    cfg = alembic_config(blank.engine)
    command.upgrade(cfg, "0008")
    with blank.engine.begin() as conn:
        _ticket_row(conn, blank, 1)
        _outbox(conn, blank, 1, "<kept@x>")

    blank.upgrade()

    with blank.engine.begin() as conn:
        _outbox(conn, blank, 2, "<before-its-ticket@x>")  # checked at commit, not here
        _ticket_row(conn, blank, 2)
    assert _refused(blank, 404, "<no-ticket@x>")
    command.downgrade(cfg, "0008")
    with blank.engine.connect() as conn:
        kept = conn.execute(text("SELECT ticket_id, message_id FROM outbox ORDER BY id")).all()
    assert [tuple(r) for r in kept] == [(1, "<kept@x>"), (2, "<before-its-ticket@x>")]
    with pytest.raises(IntegrityError), blank.engine.begin() as conn:
        _outbox(conn, blank, 3, "<before-its-ticket-again@x>")  # refused at once
        _ticket_row(conn, blank, 3)
