"""The schema: messages (raw bytes kept), deliveries, attachments, tickets, events, contacts,
authorised contacts, incidents, the outbox, rate buckets and the few settings the
instances share.

Every column a later stage queries by is indexed; the ticket event table is
append-only and is the audit trail agents and ``sla explain`` replay.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from storage.types import SafeString, SafeText, UTCDateTime

# SQLite and PostgreSQL both autoincrement a plain INTEGER primary key on SQLite
# only when it is exactly INTEGER; BigInteger elsewhere for headroom.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class SafeJSON(TypeDecorator[Any]):
    """JSON whose strings are sanitised so PostgreSQL accepts what SQLite does.

    The sanitising is the engine's JSON serializer (``storage.types.json_dumps``, set
    by ``storage.engine.create_db_engine``), so a document is encoded once, not
    walked and then encoded.
    """

    impl = JSON
    cache_ok = True


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    def __init__(self, **values: Any) -> None:
        """A row object with its columns' defaults from the start, not only once inserted:
        the ingest adds a message, and on PostgreSQL a new ticket
        (``repository.next_ticket_id``), and writes their rows only at the transaction's
        flush; the steps before it read them."""
        scalars, factories = _defaults(type(self))
        for key, value in scalars:
            values.setdefault(key, value)
        for key, factory in factories:
            if key not in values:
                values[key] = factory()
        cls = type(self)
        for key, value in values.items():  # as SQLAlchemy's own declarative constructor
            if not hasattr(cls, key):
                raise TypeError(f"{key!r} is an invalid keyword argument for {cls.__name__}")
            setattr(self, key, value)


@functools.cache
def _defaults(cls: type[Base]) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]:
    """``cls``'s column defaults: (key, value) for constants, (key, factory) for the
    ``default=list``-like ones (each object gets its own). Worked out once a class: a
    message makes several row objects."""
    scalars: list[tuple[str, Any]] = []
    factories: list[tuple[str, Any]] = []
    for column in cls.__table__.columns:
        default = column.default
        if default is None:
            continue
        if default.is_scalar:
            scalars.append((column.key, default.arg))
        elif default.is_callable:
            # SQLAlchemy wraps ``list`` to take an execution context, which it ignores.
            factories.append((column.key, functools.partial(default.arg, None)))
    return tuple(scalars), tuple(factories)


class Message(Base):
    """One distinct message, however many times it was delivered."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(SafeString(998), index=True)
    message_id_generated: Mapped[bool] = mapped_column(Boolean, default=False)
    raw_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    # done | quarantined (later stages add awaiting_transcription, awaiting_triage, failed)
    state: Mapped[str] = mapped_column(String(32), index=True)
    state_reason: Mapped[str] = mapped_column(SafeText, default="")
    source: Mapped[str] = mapped_column(SafeString(255))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subject: Mapped[str] = mapped_column(SafeText, default="")
    from_addr: Mapped[str] = mapped_column(SafeString(998), default="", index=True)
    from_name: Mapped[str] = mapped_column(SafeText, default="")
    from_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    to_addrs: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    cc_addrs: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    date: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    in_reply_to: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    references: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    text: Mapped[str] = mapped_column(SafeText, default="")
    text_from_html: Mapped[bool] = mapped_column(Boolean, default=False)
    defects: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    auto: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)
    is_automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    parser: Mapped[str] = mapped_column(String(32), default="")
    # Why no automatic reply may ever answer this message ("" = one may): automatic
    # mail, a null sender, an unverified sender, DMARC fail. The outbox reads it.
    no_ack_reason: Mapped[str] = mapped_column(SafeText, default="")
    ticket_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("tickets.id"), nullable=True, index=True
    )

    ticket: Mapped[Ticket | None] = relationship(back_populates="messages")
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="message", order_by="Delivery.id"
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", order_by="Attachment.id"
    )


class Delivery(Base):
    """One arrival of a message (SMTP session, IMAP fetch, file ingest): never deduplicated."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_pk: Mapped[int] = mapped_column(Id, ForeignKey("messages.id"), index=True)
    spool_id: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(SafeString(255))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    envelope: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)
    duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    raw_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # The bytes of this delivery when they differ from the message row's (a relay
    # added headers, line endings were converted): nothing that arrived is dropped.
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    message: Mapped[Message] = relationship(back_populates="deliveries")


class Attachment(Base):
    """Metadata of an attachment; its bytes live in the blob store under their SHA-256."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_pk: Mapped[int] = mapped_column(Id, ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(SafeString(255))
    content_type: Mapped[str] = mapped_column(SafeString(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_id: Mapped[str] = mapped_column(SafeString(998), default="")
    disposition: Mapped[str] = mapped_column(String(32), default="")

    message: Mapped[Message] = relationship(back_populates="attachments")


class Ticket(Base):
    """One matter of one customer."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ref: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)  # open | closed | merged
    subject: Mapped[str] = mapped_column(SafeText, default="")
    customer: Mapped[str] = mapped_column(SafeString(998), index=True)
    requester: Mapped[str] = mapped_column(SafeString(998), index=True)
    channel: Mapped[str] = mapped_column(String(32))  # email | voicemail
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    assign_by: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    respond_by: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Triage of the message that opened the ticket (or its voicemail transcript): the
    # values agents filter on. Every decision with its confidence and reason is the data
    # of the ``classified`` event (``repository.triage_of``), not a column: the 2 KB
    # document made each row a page of its own, which every SLA update rewrote.
    category: Mapped[str] = mapped_column(String(64), default="", index=True)
    priority: Mapped[str] = mapped_column(String(16), default="", index=True)
    severity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    language: Mapped[str] = mapped_column(String(16), default="")
    flags: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    # What duplicate and incident matching compare: the opening message's subject
    # and own words, normalised and bounded, so matching never loads raw messages.
    match_text: Mapped[str] = mapped_column(SafeText, default="")
    merged_into_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tickets.id"), nullable=True)
    incident_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("incidents.id"), nullable=True, index=True
    )
    # SLA: the policy and calendar chosen at intake, who holds the ticket, and the
    # clocks as of its last event (the events are the truth; these are their fold).
    # next_due_at is the earliest thing the scheduler owes this ticket (a follow-up,
    # the auto-close, an at-risk or breach alarm), so a pass reads only due rows.
    team: Mapped[str] = mapped_column(String(64), default="")
    sla_policy: Mapped[str] = mapped_column(String(64), default="")
    sla_calendar: Mapped[str] = mapped_column(String(64), default="")
    assigned_to: Mapped[str] = mapped_column(SafeString(255), default="")
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    followup_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    followups_sent: Mapped[int] = mapped_column(Integer, default=0)
    close_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # Keys of the at-risk and breach alarms already emitted: each is logged once.
    alarms_sent: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    # The clocks as of the last event (``triage.clock_state``): what the scheduler reads
    # instead of replaying every due ticket's history. NULL: not written yet, replay.
    clocks: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON, nullable=True)

    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.id")
    incident: Mapped[Incident | None] = relationship(back_populates="tickets")
    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id"
    )

    # Duplicate candidates: the customer's open tickets, newest first. Incident
    # candidates: the category's newest tickets; without the pair SQLite's planner
    # (no statistics) scans the whole category and the cost grows with the table.
    __table_args__ = (
        Index("ix_tickets_customer_status_created", "customer", "status", "created_at"),
        Index("ix_tickets_category_created", "category", "created_at"),
    )


class TicketEvent(Base):
    """Append-only audit log: created, message_added, stamped, … with their inputs."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(Id, ForeignKey("tickets.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    message_pk: Mapped[int | None] = mapped_column(Id, ForeignKey("messages.id"), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)

    ticket: Mapped[Ticket] = relationship(back_populates="events")
    # Set by the object, so an event can name a message not flushed yet (no id to copy).
    message: Mapped[Message | None] = relationship()

    __table_args__ = (Index("ix_ticket_events_ticket_id_id", "ticket_id", "id"),)


class Contact(Base):
    """A person who wrote or called; ``customer`` groups the contacts of one customer."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(SafeString(998), unique=True)
    name: Mapped[str] = mapped_column(SafeText, default="")
    customer: Mapped[str] = mapped_column(SafeString(998), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuthorisedContact(Base):
    """Who may act on a customer's tickets (seed 002): one address, or ``@domain`` for all.

    A sender matching an entry belongs to its customer: a new ticket from them is
    that customer's, and they may add to the customer's open tickets.
    """

    __tablename__ = "authorised_contacts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    pattern: Mapped[str] = mapped_column(SafeString(998), unique=True)  # a@b.es | @b.es
    customer: Mapped[str] = mapped_column(SafeString(998), index=True)
    note: Mapped[str] = mapped_column(SafeText, default="")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    added_by: Mapped[str] = mapped_column(SafeString(255), default="")


class Incident(Base):
    """Many customers reporting the same failure at once ("falla masiva", seed 001)."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ref: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | closed
    title: Mapped[str] = mapped_column(SafeText, default="")
    category: Mapped[str] = mapped_column(String(64), default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ticket_count: Mapped[int] = mapped_column(Integer, default=0)
    customer_count: Mapped[int] = mapped_column(Integer, default=0)
    # The rule that formed it: threshold, window, similarity, and the first tickets.
    detection: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)

    tickets: Mapped[list[Ticket]] = relationship(back_populates="incident", order_by="Ticket.id")


class OutboxMail(Base):
    """A mail Buzón owes somebody, written in the transaction that decided to send it.

    The row is queued with its Message-ID and a ``spec`` (kind, recipient, values);
    the sender composes ``raw`` at its first claim and keeps it, so every attempt
    sends the same bytes and Message-ID (a relay that took it before an ambiguous
    failure sees a duplicate it can drop, never a new mail). ``state``: pending |
    sending | sent | failed | cancelled; a sender claims due rows by a lease.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # Checked at commit (migration 0009): on PostgreSQL a new ticket's row is written at
    # the transaction's flush, after its acknowledgement's row (``repository.next_ticket_id``).
    ticket_id: Mapped[int | None] = mapped_column(
        Id,
        ForeignKey("tickets.id", deferrable=True, initially="DEFERRED"),
        nullable=True,
        index=True,
    )
    kind: Mapped[str] = mapped_column(String(32))  # ack | followup | last_notice | reply | notice
    recipient: Mapped[str] = mapped_column(SafeString(998), index=True)
    envelope_from: Mapped[str] = mapped_column(SafeString(998), default="")  # "" = null sender
    message_id: Mapped[str] = mapped_column(SafeString(998), unique=True)
    subject: Mapped[str] = mapped_column(SafeText, default="")
    # What the sender composes the mail from (``daemon.outbound``); ``raw`` is NULL
    # until the first claim composes it, then every attempt sends those same bytes.
    spec: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON, nullable=True)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str] = mapped_column(String(255), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(SafeText, default="")


class RateBucket(Base):
    """A token bucket per recipient address: automatic mail stays within a rate (LOOP-05)."""

    __tablename__ = "rate_buckets"

    address: Mapped[str] = mapped_column(SafeString(998), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Setting(Base):
    """Values every instance on one database must agree on, e.g. the reply-token key."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ImapFolderState(Base):
    """Per IMAP account and folder: the durable checkpoint, the fetch lease and status.

    ``last_uid`` only ever covers UIDs whose messages are durably spooled; the
    lease (``holder`` until ``lease_until``) keeps two instances from fetching
    one folder at once, and lets another take over when a holder dies.
    """

    __tablename__ = "imap_folders"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(SafeString(255))
    folder: Mapped[str] = mapped_column(SafeString(998))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    holder: Mapped[str] = mapped_column(SafeString(255), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="new")
    last_error: Mapped[str] = mapped_column(SafeText, default="")
    last_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_fetched: Mapped[int] = mapped_column(Integer, default=0)
    lag_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Messages over the size limit that were reported and stepped over (newest last).
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(SafeJSON, default=list)

    __table_args__ = (UniqueConstraint("account", "folder"),)


class Voicemail(Base):
    """A message that carries a recording: what the PBX said, and the transcription stage.

    The message and its ticket exist before transcription starts; this row is the
    stage's queue entry (``state``: pending | running | done | failed),
    claimed by a lease so a dead runner's claim expires, and its result.
    """

    __tablename__ = "voicemails"
    __table_args__ = (Index("ix_voicemails_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_pk: Mapped[int] = mapped_column(Id, ForeignKey("messages.id"), unique=True)
    attachment_pk: Mapped[int] = mapped_column(Id, ForeignKey("attachments.id"))
    audio_format: Mapped[str] = mapped_column(String(16), default="")
    caller_number: Mapped[str] = mapped_column(SafeString(64), default="", index=True)
    caller_name: Mapped[str] = mapped_column(SafeText, default="")
    duration_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mailbox: Mapped[str] = mapped_column(SafeString(255), default="")
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    orig_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    pbx: Mapped[str] = mapped_column(String(32), default="")
    pbx_transcript: Mapped[str] = mapped_column(SafeText, default="")
    source_fields: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)
    model_dir: Mapped[str] = mapped_column(SafeText, default="")
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str] = mapped_column(String(255), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(SafeText, default="")
    transcript: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON, nullable=True)
    text: Mapped[str] = mapped_column(SafeText, default="")
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    needs_listening: Mapped[bool] = mapped_column(Boolean, default=False)
    transcribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    message: Mapped[Message] = relationship()
    attachment: Mapped[Attachment] = relationship()
