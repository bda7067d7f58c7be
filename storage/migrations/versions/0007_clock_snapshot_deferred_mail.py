"""Clock snapshot on tickets; outbox rows queued as a spec and composed by the sender

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

``tickets.clocks`` caches the replay of a ticket's clock events (NULL until its next
event: the scheduler replays a ticket without one). ``outbox.spec`` holds what the
sender composes a row from; ``raw`` is NULL until it has. Rows queued before this
revision keep their bytes and no spec.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clocks", sa.JSON(), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spec", sa.JSON(), nullable=True))
        batch_op.alter_column("raw", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # A row still waiting to be composed cannot keep NOT NULL raw: it is cancelled, said why.
    op.execute(
        "UPDATE outbox SET state = 'cancelled', raw = '', "
        "last_error = 'downgraded before it was composed; queue it again' WHERE raw IS NULL"
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("raw", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("spec")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("clocks")
