"""Queries the daemon needs, as small functions over a Session.

Each lookup is backed by an index (sha, message_id, ref, spool id), so the
cost of ingesting one message does not grow with the size of the database.

The lookups every ingested message makes are built once, with bound parameters
(``_BY_SHA`` …): building a ``select()`` and its cache key per call cost 60-180 µs
each, about a millisecond a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, bindparam, func, or_, select, text
from sqlalchemy.orm import Session, selectinload

from storage import core, eventlog
from storage.models import Contact, Delivery, Message, Ticket, TicketEvent

OPEN = "open"
MERGED = "merged"
CLOSED = "closed"
# A reply to a merged ticket's message belongs to the ticket it was merged into.
_LIVE = (OPEN, MERGED, CLOSED)


_BY_SHA = select(Message).where(Message.raw_sha256 == bindparam("sha"))
_BY_SHA_OR_MESSAGE_ID = select(Message.id, Message.raw_sha256, Message.message_id).where(
    or_(Message.raw_sha256 == bindparam("sha"), Message.message_id == bindparam("mid"))
)
_BY_SPOOL_ID = select(Delivery).where(Delivery.spool_id == bindparam("spool_id"))
_CONTACT_CUSTOMER = select(Contact.customer).where(Contact.address == bindparam("address"))


_LATEST_TWO = (
    select(Message.id, Message.received_at)
    .where(Message.ticket_id == bindparam("tid"))
    .order_by(Message.received_at.desc())
    .limit(2)
)


def previous_received_at(session: Session, ticket_id: int, message: Message) -> datetime | None:
    """When the latest of the ticket's other messages arrived: ids and times only, where
    loading ``Ticket.messages`` read every message's raw bytes, attachments included."""
    # Ingest runs without autoflush: ``message`` may not be in the table yet (its id None),
    # or be one of the two rows; either way it is not its own previous message.
    for pk, at in core.connection(session).execute(_LATEST_TWO, {"tid": ticket_id}):
        if pk != message.id:
            return at
    return None


def message_by_sha(session: Session, sha256: str) -> Message | None:
    return session.scalar(_BY_SHA, {"sha": sha256})


StoredKey = Row[int, str, str]  # a stored message's id, raw_sha256 and message_id


def messages_by_sha_or_message_id(
    session: Session, sha256: str, message_id: str
) -> Sequence[StoredKey]:
    """(id, raw_sha256, message_id) of the message of these bytes and of those of this
    Message-ID, in one statement. Keys, not messages: almost every mail matches none, and
    a mailer that reuses one Message-ID matches many, each with its raw bytes; the caller
    loads the one it compares (``Session.get``)."""
    params = {"sha": sha256, "mid": message_id}
    return core.connection(session).execute(_BY_SHA_OR_MESSAGE_ID, params).all()


def lock_sender(session: Session, sender: str, message_id: str) -> None:
    """Until this transaction ends, be the only one storing mail from ``sender`` (with no
    sender: the only one deciding about ``message_id``; neither: no lock).

    On PostgreSQL two instances storing one sender's mails at once each miss what the other
    has not committed: two copies of one message would both be stored (no unique index can
    back the Message-ID match: one id may name different mails), and a reply stored beside
    its original, or a second report of the same matter, would open a ticket of its own. A
    transaction-scoped advisory lock makes the second wait for the first's commit. A copy
    of a message has its original's sender (dedupe compares it), so the sender's lock
    covers copies too. SQLite needs none: its write transactions (BEGIN IMMEDIATE) already
    run one at a time.
    """
    if sender:
        _advisory_lock(session, f"sender:{sender.lower()}")
    elif message_id:
        _advisory_lock(session, message_id)


def lock_incident_detection(session: Session, category: str) -> bool:
    """Until this transaction ends, be the only one opening an incident in ``category``;
    True when that took a lock (PostgreSQL), so what was read before may be stale.

    Two instances detecting one outage at once each see only their own new ticket
    besides the committed ones, and would open two incidents: the second waits for the
    first's commit, reads again and joins its incident. Detection is rare (once an
    outage), so the wait is too. SQLite runs one write transaction at a time.
    """
    return _advisory_lock(session, f"incident-detection:{category}")


_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:id, 0))")


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _advisory_lock(session: Session, name: str) -> bool:
    if not _on_postgresql(session):
        return False
    core.connection(session).execute(_LOCK, {"id": name})
    return True


_NEXT_TICKET_ID = text("SELECT nextval(pg_get_serial_sequence('tickets', 'id'))")


def next_ticket_id(session: Session) -> int | None:
    """A new ticket's id drawn now from PostgreSQL's sequence; None on SQLite, which
    assigns it only by the INSERT.

    With the id (and so the ref) known first, the ticket's row is inserted once, with its
    ref and its clocks, at the transaction's flush: not an INSERT to learn the id and an
    UPDATE of the same row at commit (with a flush of its own). Rows inserted meanwhile
    that refer to it are checked at commit (the outbox's: migration 0009).
    """
    if not _on_postgresql(session):
        return None
    return int(core.connection(session).execute(_NEXT_TICKET_ID).scalar_one())


def delivery_by_spool_id(session: Session, spool_id: str) -> Delivery | None:
    return session.scalar(_BY_SPOOL_ID, {"spool_id": spool_id})


def follow_merges(session: Session, ticket: Ticket) -> Ticket:
    """The ticket that now holds ``ticket``'s matter (itself unless it was merged)."""
    for _ in range(20):  # merges form a short chain; a cycle is a bug, not a hang
        if ticket.status != MERGED or ticket.merged_into_id is None:
            return ticket
        target = session.get(Ticket, ticket.merged_into_id)
        if target is None:
            return ticket
        ticket = target
    return ticket


def _joinable(ticket: Ticket, closed_since: datetime | None) -> bool:
    """Open, or closed recently enough that a customer reply reopens it."""
    if ticket.status == OPEN:
        return True
    return (
        closed_since is not None
        and ticket.status == CLOSED
        and ticket.closed_at is not None
        and ticket.closed_at >= closed_since
    )


# Built once, as the other per-message look-ups (module doc).
_HOLDING = (
    select(Message.message_id, Ticket)
    .join(Ticket, Message.ticket_id == Ticket.id)
    .where(Message.message_id.in_(bindparam("ids", expanding=True)), Ticket.status.in_(_LIVE))
)
_BY_REFS = select(Ticket).where(Ticket.ref.in_(bindparam("refs", expanding=True)))


def open_tickets_for_message_ids(
    session: Session, message_ids: Sequence[str], closed_since: datetime | None = None
) -> list[tuple[str, Ticket]]:
    """(message_id, ticket) for every open ticket holding a message with one of these ids.

    With ``closed_since``, also tickets closed since then (a reply reopens them).
    """
    if not message_ids:
        return []
    rows = session.execute(_HOLDING, {"ids": list(message_ids)[:200]})
    out = [(mid, follow_merges(session, ticket)) for mid, ticket in rows]
    return [(mid, ticket) for mid, ticket in out if _joinable(ticket, closed_since)]


def open_tickets_by_refs(
    session: Session, refs: Sequence[str], closed_since: datetime | None = None
) -> list[Ticket]:
    """The open (or, with ``closed_since``, recently closed) tickets with these refs."""
    if not refs:
        return []
    rows = session.scalars(_BY_REFS, {"refs": list(refs)[:50]})
    live = [follow_merges(session, t) for t in rows if t.status in _LIVE]
    return [t for t in live if _joinable(t, closed_since)]


# The duplicate check scores the customer's recent open tickets by fingerprint: it reads
# ids and fingerprints only, as rows (``storage.core``), and loads the one it joins.
_OF_CUSTOMER = (
    select(Ticket.id, Ticket.match_text)
    .where(
        Ticket.customer == bindparam("customer"),
        Ticket.status == OPEN,
        Ticket.created_at >= bindparam("since"),
    )
    .order_by(Ticket.created_at.desc())
    .limit(bindparam("limit"))
)


def open_tickets_of_customer(
    session: Session, customer: str, *, since: datetime, limit: int
) -> Sequence[Row[int, str]]:
    """(id, match_text) of the customer's open tickets created since ``since``, newest
    first (an index range)."""
    params = {"customer": customer, "since": since, "limit": limit}
    return core.connection(session).execute(_OF_CUSTOMER, params).all()


class Candidate(NamedTuple):
    """What the incident step reads of a recent ticket: plain values, not an ORM object."""

    id: int
    customer: str
    match_text: str
    incident_id: int | None


_CREATED_SINCE = (
    select(Ticket.id, Ticket.customer, Ticket.match_text, Ticket.incident_id)
    .where(Ticket.created_at >= bindparam("since"), Ticket.status != MERGED)
    .order_by(Ticket.created_at.desc())
    .limit(bindparam("limit"))
)
_CREATED_IN_CATEGORY = _CREATED_SINCE.where(Ticket.category == bindparam("category"))


CandidateRow = Row[int, str, str, int | None]  # a Candidate's values, in its order


def tickets_created_since(
    session: Session, since: datetime, *, limit: int, category: str | None = None
) -> Sequence[CandidateRow]:
    """Tickets opened since ``since``, newest first, at most ``limit`` (an index range).

    Rows, not tickets: each of up to 500 candidates per message is scored and almost all
    are dropped, and ORM objects, even with ``load_only``, cost ~10-14 ms per message more
    (bench/scale.py); the few a message acts on are loaded by id. No ``created_at``: the
    scan never reads it, and converting 500 timestamps a message is not free. Rows as
    they come: a ``Candidate`` built from each was half the fetch's cost, so the caller
    reads them by position and builds one only for the few that score.
    """
    params: dict[str, Any] = {"since": since, "limit": limit}
    stmt = _CREATED_SINCE
    if category:
        params["category"] = category
        stmt = _CREATED_IN_CATEGORY
    return core.connection(session).execute(stmt, params).all()


def open_ticket_for_requester(
    session: Session, requester: str, channel: str, *, since: datetime
) -> Ticket | None:
    """The requester's most recently active open ticket on ``channel``, if active since."""
    return session.scalar(
        select(Ticket)
        .where(
            Ticket.requester == requester,
            Ticket.channel == channel,
            Ticket.status == OPEN,
            Ticket.updated_at >= since,
        )
        .order_by(Ticket.updated_at.desc())
        .limit(1)
    )


def add_event(
    session: Session,
    ticket: Ticket,
    kind: str,
    at: datetime,
    *,
    data: dict[str, Any] | None = None,
    message: Message | None = None,
) -> TicketEvent:
    deferred = eventlog.deferring(session)
    if deferred is not None:  # written at the commit, ids and all (``storage.eventlog``)
        event = TicketEvent(kind=kind, at=at, data=data or {})
        deferred.append(eventlog.Deferred(event, ticket, message))
        return event
    event = TicketEvent(
        ticket=ticket,
        kind=kind,
        at=at,
        data=data or {},
        message=message,
    )
    session.add(event)
    return event


def triage_of(session: Session, ticket: Ticket) -> dict[str, Any]:
    """The ticket's latest classification, every decision with its reason; {} if none."""
    data = session.scalar(
        select(TicketEvent.data)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "classified")
        .order_by(TicketEvent.id.desc())
        .limit(1)
    )
    return dict(data) if data else {}


def customer_of(session: Session, address: str, name: str, customer: str, at: datetime) -> str:
    """The customer of ``address``'s contact, the contact made on first sight (with
    ``name`` and ``customer``, which it then answers).

    A column, not a ``Contact``: the callers read nothing else, and loading the object a
    message cost more than the query (``storage.core``). A new contact is not flushed
    here (its row goes with the ticket's). Ingest runs without autoflush, so one added
    earlier in this transaction is found among the session's pending objects.
    """
    found = core.connection(session).execute(_CONTACT_CUSTOMER, {"address": address}).first()
    if found is not None:
        return str(found.customer)
    pending = (o for o in session.new if isinstance(o, Contact) and o.address == address)
    contact = next(pending, None)
    if contact is None:
        contact = Contact(address=address, name=name, customer=customer, created_at=at)
        session.add(contact)
    return contact.customer


def list_tickets(
    session: Session, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[Ticket]:
    query = select(Ticket).order_by(Ticket.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Ticket.status == status)
    return list(session.scalars(query))


def ticket(session: Session, key: str | int) -> Ticket | None:
    """A ticket by numeric id or by ref (``B-42``), with messages and events loaded."""
    query = select(Ticket).options(
        selectinload(Ticket.messages).selectinload(Message.attachments),
        selectinload(Ticket.messages).selectinload(Message.deliveries),
        selectinload(Ticket.events),
    )
    text = str(key).strip()
    if text.isdigit():
        return session.scalar(query.where(Ticket.id == int(text)))
    return session.scalar(query.where(Ticket.ref == text.upper()))


def ticket_alone(session: Session, key: str | int) -> Ticket | None:
    """A ticket by numeric id or by ref, nothing else loaded: what an agent's action on its
    clocks needs. ``ticket`` loads every message (raw bytes and attachments included)."""
    text = str(key).strip()
    if text.isdigit():
        return session.get(Ticket, int(text))
    return session.scalar(select(Ticket).where(Ticket.ref == text.upper()))


def quarantined_messages(session: Session, limit: int = 1000) -> list[Message]:
    return list(
        session.scalars(
            select(Message).where(Message.state == "quarantined").order_by(Message.id).limit(limit)
        )
    )


def message(session: Session, pk: int) -> Message | None:
    return session.get(Message, pk)


def counts(session: Session) -> dict[str, int]:
    """Row counts by message state and ticket status, for status output and tests."""
    out: dict[str, int] = {}
    for state, n in session.execute(select(Message.state, func.count()).group_by(Message.state)):
        out[f"messages.{state}"] = n
    for status, n in session.execute(select(Ticket.status, func.count()).group_by(Ticket.status)):
        out[f"tickets.{status}"] = n
    out["deliveries"] = session.scalar(select(func.count()).select_from(Delivery)) or 0
    return out
