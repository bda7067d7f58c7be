"""authorised contacts, incidents, shared settings; ticket match text, merges, incident links

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "authorised_contacts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("pattern", sa.String(length=998), nullable=False),
        sa.Column("customer", sa.String(length=998), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=255), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorised_contacts")),
        sa.UniqueConstraint("pattern", name=op.f("uq_authorised_contacts_pattern")),
    )
    op.create_index(
        op.f("ix_authorised_contacts_customer"), "authorised_contacts", ["customer"], unique=False
    )
    op.create_table(
        "incidents",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("ref", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column("category", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticket_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("customer_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("detection", sa.JSON(), nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint("ref", name=op.f("uq_incidents_ref")),
    )
    op.create_index(op.f("ix_incidents_status"), "incidents", ["status"], unique=False)
    op.create_index(op.f("ix_incidents_opened_at"), "incidents", ["opened_at"], unique=False)
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("no_ack_reason", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("match_text", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("merged_into_id", Id, nullable=True))
        batch_op.add_column(sa.Column("incident_id", Id, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_tickets_merged_into_id_tickets"), "tickets", ["merged_into_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_tickets_incident_id_incidents"), "incidents", ["incident_id"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_tickets_incident_id"), ["incident_id"], unique=False)
        batch_op.create_index(
            "ix_tickets_customer_status_created", ["customer", "status", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_tickets_category_created", ["category", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_category_created")
        batch_op.drop_index("ix_tickets_customer_status_created")
        batch_op.drop_index(batch_op.f("ix_tickets_incident_id"))
        batch_op.drop_constraint(batch_op.f("fk_tickets_incident_id_incidents"), type_="foreignkey")
        batch_op.drop_constraint(
            batch_op.f("fk_tickets_merged_into_id_tickets"), type_="foreignkey"
        )
        for column in ("incident_id", "merged_into_id", "match_text"):
            batch_op.drop_column(column)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("no_ack_reason")
    op.drop_table("settings")
    op.drop_index(op.f("ix_incidents_opened_at"), table_name="incidents")
    op.drop_index(op.f("ix_incidents_status"), table_name="incidents")
    op.drop_table("incidents")
    op.drop_index(op.f("ix_authorised_contacts_customer"), table_name="authorised_contacts")
    op.drop_table("authorised_contacts")
