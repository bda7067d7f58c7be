"""Migrations that move data keep it, up and down, on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from alembic import command
from sqlalchemy import text

from storage.engine import Database, alembic_config, current_revision, head_revision

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
