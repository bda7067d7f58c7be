"""voicemails: PBX metadata and the transcription stage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "voicemails",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("message_pk", _ID, nullable=False),
        sa.Column("attachment_pk", _ID, nullable=False),
        sa.Column("audio_format", sa.String(length=16), nullable=False),
        sa.Column("caller_number", sa.String(length=64), nullable=False),
        sa.Column("caller_name", sa.Text(), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("mailbox", sa.String(length=255), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("orig_time", _TS, nullable=True),
        sa.Column("pbx", sa.String(length=32), nullable=False),
        sa.Column("pbx_transcript", sa.Text(), nullable=False),
        sa.Column("source_fields", sa.JSON(), nullable=False),
        sa.Column("model_dir", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", _TS, nullable=False),
        sa.Column("claimed_by", sa.String(length=255), nullable=False),
        sa.Column("claimed_until", _TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("transcript", sa.JSON(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("needs_listening", sa.Boolean(), nullable=False),
        sa.Column("transcribed_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["attachment_pk"],
            ["attachments.id"],
            name=op.f("fk_voicemails_attachment_pk_attachments"),
        ),
        sa.ForeignKeyConstraint(
            ["message_pk"], ["messages.id"], name=op.f("fk_voicemails_message_pk_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voicemails")),
        sa.UniqueConstraint("message_pk", name=op.f("uq_voicemails_message_pk")),
    )
    with op.batch_alter_table("voicemails", schema=None) as batch_op:
        batch_op.create_index("ix_voicemails_state_due", ["state", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_voicemails_caller_number"), ["caller_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("voicemails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voicemails_caller_number"))
        batch_op.drop_index("ix_voicemails_state_due")
    op.drop_table("voicemails")
