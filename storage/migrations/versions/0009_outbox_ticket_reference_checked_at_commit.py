"""outbox.ticket_id's reference checked at commit on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

On PostgreSQL a new ticket's id is drawn from its sequence before its row is written
(``storage.repository.next_ticket_id``), so the row goes in once, with its ref and its
clocks, at the transaction's flush. The acknowledgement's outbox row is inserted before
that flush and refers to the ticket, so the reference is checked at commit: DEFERRABLE
INITIALLY DEFERRED. A missing ticket still fails the transaction, at its commit.

SQLite draws no id first, so nothing there needs it; the constraint is changed all the
same so that both databases hold the schema the models describe. SQLite changes a
constraint only by copying the table (batch mode): no other table refers to the outbox,
so the copy is allowed with foreign keys on.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FK = "fk_outbox_ticket_id_tickets"


def upgrade() -> None:
    _set(deferred=True)


def downgrade() -> None:
    _set(deferred=False)


def _set(*, deferred: bool) -> None:
    if op.get_bind().dialect.name == "postgresql":
        when = "DEFERRABLE INITIALLY DEFERRED" if deferred else "NOT DEFERRABLE"
        op.execute(f"ALTER TABLE outbox ALTER CONSTRAINT {_FK} {when}")
        return
    with op.batch_alter_table("outbox", recreate="always") as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.create_foreign_key(
            _FK,
            "tickets",
            ["ticket_id"],
            ["id"],
            deferrable=True if deferred else None,
            initially="DEFERRED" if deferred else None,
        )
