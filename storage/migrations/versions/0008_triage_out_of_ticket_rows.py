"""tickets.triage dropped: a ticket's classification reasons live in its ``classified`` event

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

The ``triage`` document (every decision with its confidence and reason, ~2 KB) was
written twice: on the ticket and as the data of the ``classified`` event. On the ticket
it made each row about a page, so every SLA update (the scheduler rewrites thousands of
rows a pass) rewrote a page per ticket; bench/scheduler_ab.py measured the pass 7-23 %
faster on SQLite without it. A ticket that has a document but no ``classified`` event (one split
off another ticket) gets the event here, so nothing is lost; downgrade puts the newest
event's document back on the row.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not batch mode: on SQLite that copies the table and drops the old one, which the
    # rows of ticket_events and messages (foreign keys on) refuse. SQLite drops a column
    # itself since 3.35 (Debian 12 has 3.40, Ubuntu 24.04 3.45). Checked before any change.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} cannot drop a column; Buzón needs SQLite 3.35 "
            "or newer (a Python linked with it, as on Debian 12 or Ubuntu 24.04)"
        )
    # JSON has no equality on PostgreSQL (its type is json, not jsonb): compare the text.
    op.execute(
        "INSERT INTO ticket_events (ticket_id, at, kind, message_pk, data) "
        "SELECT t.id, t.updated_at, 'classified', NULL, t.triage FROM tickets t "
        "WHERE CAST(t.triage AS TEXT) NOT IN ('{}', 'null') AND NOT EXISTS ("
        "SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.kind = 'classified')"
    )
    op.drop_column("tickets", "triage")


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("triage", sa.JSON(), nullable=False, server_default="{}"))
    op.execute(
        "UPDATE tickets SET triage = (SELECT e.data FROM ticket_events e "
        "WHERE e.ticket_id = tickets.id AND e.kind = 'classified' ORDER BY e.id DESC LIMIT 1) "
        "WHERE EXISTS (SELECT 1 FROM ticket_events e "
        "WHERE e.ticket_id = tickets.id AND e.kind = 'classified')"
    )
