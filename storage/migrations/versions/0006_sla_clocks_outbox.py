"""SLA clocks on tickets (policy, assignment, waiting, follow-ups, next due), outbox, rate buckets

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        for name, length in (("team", 64), ("sla_policy", 64), ("sla_calendar", 64)):
            batch_op.add_column(
                sa.Column(name, sa.String(length=length), nullable=False, server_default="")
            )
        batch_op.add_column(
            sa.Column("assigned_to", sa.String(length=255), nullable=False, server_default="")
        )
        for name in ("assigned_at", "waiting_since", "closed_at", "followup_due_at"):
            batch_op.add_column(sa.Column(name, When, nullable=True))
        batch_op.add_column(
            sa.Column("followups_sent", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("close_due_at", When, nullable=True))
        batch_op.add_column(sa.Column("next_due_at", When, nullable=True))
        batch_op.add_column(
            sa.Column("alarms_sent", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.create_index(batch_op.f("ix_tickets_next_due_at"), ["next_due_at"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("ticket_id", Id, nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=998), nullable=False),
        sa.Column("envelope_from", sa.String(length=998), nullable=False, server_default=""),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False, server_default=""),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", When, nullable=False),
        sa.Column("due_at", When, nullable=False),
        sa.Column("claimed_by", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("claimed_until", When, nullable=True),
        sa.Column("sent_at", When, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_outbox_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
    )
    op.create_index(op.f("ix_outbox_ticket_id"), "outbox", ["ticket_id"], unique=False)
    op.create_index(op.f("ix_outbox_recipient"), "outbox", ["recipient"], unique=False)
    op.create_index("ix_outbox_state_due", "outbox", ["state", "due_at"], unique=False)

    op.create_table(
        "rate_buckets",
        sa.Column("address", sa.String(length=998), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index("ix_outbox_state_due", table_name="outbox")
    op.drop_index(op.f("ix_outbox_recipient"), table_name="outbox")
    op.drop_index(op.f("ix_outbox_ticket_id"), table_name="outbox")
    op.drop_table("outbox")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_next_due_at"))
        for name in (
            "alarms_sent", "next_due_at", "close_due_at", "followups_sent", "followup_due_at",
            "closed_at", "waiting_since", "assigned_at", "assigned_to", "sla_calendar",
            "sla_policy", "team",
        ):  # fmt: skip
            batch_op.drop_column(name)
