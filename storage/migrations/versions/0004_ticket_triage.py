"""tickets: triage values (category, priority, severity, language, flags) and explanations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("category", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("priority", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("severity", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("language", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("flags", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("triage", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.create_index(batch_op.f("ix_tickets_category"), ["category"], unique=False)
        batch_op.create_index(batch_op.f("ix_tickets_priority"), ["priority"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_priority"))
        batch_op.drop_index(batch_op.f("ix_tickets_category"))
        for column in ("triage", "flags", "language", "severity", "priority", "category"):
            batch_op.drop_column(column)
