"""The ingest pipeline: small steps with one signature, run in one database transaction.

A step takes the ``Work`` for one spool entry and either updates it or raises
``Done`` (control flow, not an error) to end the pipeline early, e.g. for a
duplicate. The pipeline itself is data: an ordered tuple of step names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from structlog.typing import FilteringBoundLogger

from daemon.triager import Triager
from parsers import ParsedMessage
from storage import repository as repo
from storage import voicemails as vm_repo
from storage.blobs import BlobStore
from storage.models import Attachment, Delivery, Message, Ticket, Voicemail
from triage.classification import Classification
from triage.classify import MessageFacts
from triage.refs import ref_for, refs_in_subject
from triage.sla import initial_stamps
from triage.threading import Candidate, ThreadKeys, decide


class Done(Exception):
    """Raised by a step to end the pipeline successfully; not an error."""


@dataclass
class Work:
    """Everything known about one spool entry while it goes through the pipeline."""

    spool_id: str
    raw: bytes
    sha256: str
    source: str
    envelope: dict[str, Any]
    received_at: datetime
    parsed: ParsedMessage | None
    quarantine_reason: str
    session: Session
    blobs: BlobStore
    now: datetime
    log: FilteringBoundLogger
    message: Message | None = None
    attachments: list[Attachment] = field(default_factory=list)
    voicemail: Voicemail | None = None
    ticket: Ticket | None = None
    triager: Triager | None = None
    outcome: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


Step = Callable[[Work], None]


_EOL = re.compile(rb"\r\n|\r|\n")
SAME_CALLER_WINDOW = timedelta(hours=24)


def _body(raw: bytes) -> bytes:
    """The bytes after the header block, with line endings normalised."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        _, found, body = raw.partition(sep)
        if found:
            return _EOL.sub(b"\n", body)
    return b""


def _same_message(existing: Message, work: Work) -> bool:
    """Same Message-ID is the same message only if the sender and body are the same too.

    Relays and IMAP servers add or rewrite headers but never the body; some
    mailers reuse one Message-ID for every mail, and trusting the id alone would
    silently drop a customer's message.
    """
    p = work.parsed
    assert p is not None
    sender = p.sender.addr_spec.lower() if p.sender else ""
    return existing.from_addr == sender and _body(existing.raw) == _body(work.raw)


def dedupe(work: Work) -> None:
    """End here when this delivery, these bytes or this message were stored before."""
    if repo.delivery_by_spool_id(work.session, work.spool_id) is not None:
        work.outcome = "already_stored"  # committed before a crash, spool file not yet removed
        raise Done
    existing = repo.message_by_sha(work.session, work.sha256)
    reason = "same raw bytes"
    if existing is None and work.parsed is not None and not work.parsed.message_id_generated:
        for candidate in repo.messages_by_message_id(work.session, work.parsed.message_id):
            if _same_message(candidate, work):
                existing, reason = candidate, "same Message-ID, sender and body"
                break
    if existing is None:
        return
    work.session.add(
        Delivery(
            message=existing,
            spool_id=work.spool_id,
            source=work.source,
            received_at=work.received_at,
            envelope=work.envelope,
            duplicate=True,
            raw_sha256=work.sha256,
            raw=None if existing.raw_sha256 == work.sha256 else work.raw,
        )
    )
    work.message = existing
    work.ticket = existing.ticket
    work.outcome = "duplicate"
    work.events.append(("message.duplicate", {"message_pk": existing.id, "reason": reason}))
    raise Done


def _fill(msg: Message, work: Work) -> None:
    """Copy the parse result onto ``msg``: quarantined when it could not be understood."""
    p = work.parsed
    if p is None or p.fatal:
        msg.state = "quarantined"
        msg.state_reason = work.quarantine_reason or (p.fatal if p else "not parsed")
        msg.message_id = p.message_id if p else f"{work.sha256[:32]}@generated.buzon.invalid"
        msg.message_id_generated = True if p is None else p.message_id_generated
        msg.parser = p.parser if p else "none"
        msg.defects = list(p.defects) if p else []
        return
    msg.state = "done"
    msg.state_reason = ""
    msg.message_id = p.message_id
    msg.message_id_generated = p.message_id_generated
    msg.subject = p.subject
    if p.sender is not None:
        msg.from_addr = p.sender.addr_spec.lower()
        msg.from_name = p.sender.display_name
        msg.from_verified = p.sender.verified
    msg.to_addrs = [a.addr_spec for a in p.to]
    msg.cc_addrs = [a.addr_spec for a in p.cc]
    msg.date = p.date
    msg.in_reply_to = list(p.in_reply_to)
    msg.references = list(p.references)
    msg.text = p.text
    msg.text_from_html = p.text_from_html
    msg.defects = list(p.defects)
    msg.auto = _auto_dict(p, work.envelope)
    msg.is_automatic = bool(msg.auto.get("is_automatic"))
    msg.parser = p.parser


def _after_fill(work: Work, msg: Message) -> None:
    work.message = msg
    if msg.state == "quarantined":
        work.outcome = "quarantined"
        work.events.append(("message.quarantined", {"reason": msg.state_reason}))
        raise Done
    work.outcome = "stored"
    work.events.append(
        ("message.stored", {"size": msg.size, "from": msg.from_addr, "subject": msg.subject[:200]})
    )


def store_message(work: Work) -> None:
    """Insert the message row (raw bytes always) and its delivery."""
    msg = Message(
        raw_sha256=work.sha256,
        raw=work.raw,
        size=len(work.raw),
        source=work.source,
        received_at=work.received_at,
        stored_at=work.now,
    )
    _fill(msg, work)
    work.session.add(msg)
    work.session.add(
        Delivery(
            message=msg,
            spool_id=work.spool_id,
            source=work.source,
            received_at=work.received_at,
            envelope=work.envelope,
            raw_sha256=work.sha256,
        )
    )
    work.session.flush()
    _after_fill(work, msg)


def refresh_message(work: Work) -> None:
    """Re-fill a quarantined message (``work.message``) from a new parse, for a retry."""
    assert work.message is not None
    _fill(work.message, work)
    work.session.flush()
    _after_fill(work, work.message)


def _auto_dict(p: ParsedMessage, envelope: dict[str, Any]) -> dict[str, Any]:
    a = p.auto
    null_sender = a.null_sender or envelope.get("mail_from") in ("", "<>")
    out: dict[str, Any] = {
        "auto_submitted": a.auto_submitted,
        "precedence": a.precedence,
        "auto_response_suppress": a.auto_response_suppress,
        "list_id": a.list_id,
        "is_bounce": a.is_bounce,
        "is_dsn": a.is_dsn,
        "is_mdn": a.is_mdn,
        "null_sender": null_sender,
    }
    out["is_automatic"] = a.is_automatic or null_sender
    return out


def store_attachments(work: Work) -> None:
    """Write attachment bytes by hash and record their metadata."""
    assert work.message is not None and work.parsed is not None
    for att in work.parsed.attachments:
        digest = work.blobs.put(att.content)
        row = Attachment(
            message=work.message,
            filename=att.filename,
            content_type=att.content_type,
            size=att.size,
            sha256=digest,
            content_id=att.content_id,
            disposition=att.disposition,
        )
        work.session.add(row)
        work.attachments.append(row)


def voicemail(work: Work) -> None:
    """Queue a recording for transcription; the ticket does not wait for it."""
    vm = work.parsed.voicemail if work.parsed is not None else None
    if vm is None or work.message is None:
        return
    if work.voicemail is None and work.message.id is not None:
        work.voicemail = vm_repo.for_message(work.session, work.message.id)  # a retry
    if work.voicemail is not None:
        return
    audio = vm.audio[0]
    work.voicemail = Voicemail(
        message=work.message,
        attachment=work.attachments[audio.index],
        audio_format=audio.format,
        caller_number=vm.caller_number,
        caller_name=vm.caller_name,
        duration_seconds=vm.duration_seconds,
        mailbox=vm.mailbox,
        urgent=vm.urgent,
        orig_time=vm.orig_time,
        pbx=vm.pbx,
        pbx_transcript=vm.pbx_transcript,
        source_fields=dict(vm.source_fields),
        state="pending",
        attempts=0,
        due_at=work.now,
    )
    work.session.add(work.voicemail)
    work.events.append(
        (
            "voicemail.detected",
            {
                "caller": vm.caller_number,
                "duration_s": vm.duration_seconds,
                "mailbox": vm.mailbox,
                "pbx": vm.pbx or "generic",
                "formats": [a.format for a in vm.audio],
                "urgent": vm.urgent,
            },
        )
    )


def _voicemail_ticket(work: Work, vm: Voicemail) -> None:
    """A call: the caller is the customer; a repeat call about an open matter joins it."""
    msg = work.message
    assert msg is not None
    caller = f"tel:{vm.caller_number}" if vm.caller_number else ""
    requester = caller or msg.from_addr or "unknown"
    open_ticket = (
        repo.open_ticket_for_requester(
            work.session, caller, "voicemail", since=work.now - SAME_CALLER_WINDOW
        )
        if caller
        else None
    )
    if open_ticket is not None:
        _join(work, open_ticket, "same-caller", f"{caller} called again within 24 h")
        return
    customer = repo.contact_for(work.session, requester, vm.caller_name, requester, work.now)
    who = " ".join(x for x in (vm.caller_name, vm.caller_number) if x) or "an unknown caller"
    length = (
        f" ({vm.duration_seconds // 60}:{vm.duration_seconds % 60:02d})"
        if vm.duration_seconds is not None
        else ""
    )
    _open(
        work,
        subject=("URGENT " if vm.urgent else "") + f"Voicemail from {who}{length}",
        customer=customer.customer,
        requester=requester,
        channel="voicemail",
        reason="a voicemail opens a ticket at once; its transcript follows",
    )


def _join(work: Work, ticket: Ticket, rule: str, reason: str) -> None:
    msg = work.message
    assert msg is not None
    msg.ticket = ticket
    ticket.message_count += 1
    ticket.updated_at = work.now
    repo.add_event(
        work.session,
        ticket,
        "message_added",
        work.now,
        data={"rule": rule, "reason": reason, "message_id": msg.message_id},
        message=msg,
    )
    work.ticket = ticket
    work.events.append(("ticket.updated", {"rule": rule}))


def _open(
    work: Work, *, subject: str, customer: str, requester: str, channel: str, reason: str
) -> None:
    msg = work.message
    assert msg is not None
    ticket = Ticket(
        status="open",
        subject=subject,
        customer=customer,
        requester=requester,
        channel=channel,
        message_count=1,
        created_at=work.received_at,
        updated_at=work.now,
    )
    work.session.add(ticket)
    work.session.flush()
    ticket.ref = ref_for(ticket.id)
    msg.ticket = ticket
    repo.add_event(
        work.session,
        ticket,
        "created",
        work.now,
        data={"reason": reason, "message_id": msg.message_id, "source": work.source},
        message=msg,
    )
    work.ticket = ticket
    work.events.append(("ticket.created", {"reason": reason, "channel": channel}))


def thread(work: Work) -> None:
    """Join the open ticket this message answers, or open a new one."""
    msg, p = work.message, work.parsed
    assert msg is not None and p is not None
    if msg.ticket is not None:
        work.ticket = msg.ticket  # a retry of a message that already has its ticket
        return
    if work.voicemail is not None:
        _voicemail_ticket(work, work.voicemail)
        return
    candidates: list[Candidate] = []
    by_id = dict(repo.open_tickets_for_message_ids(work.session, (*p.in_reply_to, *p.references)))
    for header, ids in (("in-reply-to", p.in_reply_to), ("references", p.references)):
        for mid in ids:
            if mid in by_id:
                t = by_id[mid]
                candidates.append(Candidate(t.id, t.ref or "", t.requester, header))
    for t in repo.open_tickets_by_refs(work.session, refs_in_subject(p.subject)):
        candidates.append(Candidate(t.id, t.ref or "", t.requester, "subject-tag"))
    keys = ThreadKeys(msg.from_addr, msg.from_verified)
    decision = decide(keys, candidates)
    if decision.ticket_id is not None:
        ticket = work.session.get(Ticket, decision.ticket_id)
        assert ticket is not None
        _join(work, ticket, decision.rule, decision.reason)
        return
    requester = msg.from_addr or (work.envelope.get("mail_from") or "").lower()
    customer = (
        repo.contact_for(work.session, requester, msg.from_name, requester, work.now).customer
        if requester
        else "unknown"
    )
    _open(
        work,
        subject=msg.subject,
        customer=customer,
        requester=requester,
        channel="email",
        reason=decision.reason,
    )


def facts_for(msg: Message, envelope: dict[str, Any], previous: datetime | None) -> MessageFacts:
    """What triage reads from a stored message (a voicemail's text is its transcript)."""
    rcpts = [*msg.to_addrs, *msg.cc_addrs, *(envelope.get("rcpt_tos") or [])]
    minutes = (msg.received_at - previous).total_seconds() / 60 if previous else None
    return MessageFacts(
        subject=msg.subject,
        text=msg.text,
        channel="email",
        recipients=tuple(dict.fromkeys(a.lower() for a in rcpts if a)),
        minutes_since_previous=minutes,
    )


def apply_classification(
    work_session: Session, ticket: Ticket, msg: Message, c: Classification, now: datetime
) -> None:
    """Put a classification on the ticket it opened, with every decision in its event."""
    ticket.category = c.category.value
    ticket.priority = c.priority.value
    ticket.severity = c.severity.value
    ticket.language = c.language.value
    ticket.flags = list(c.flags.raised)
    ticket.triage = c.as_dict()
    repo.add_event(work_session, ticket, "classified", now, data=c.as_dict(), message=msg)


def classify(work: Work) -> None:
    """Classify the message: a new ticket takes its values; a reply is checked for a chase."""
    msg, ticket = work.message, work.ticket
    if work.triager is None or msg is None or ticket is None:
        return
    if work.voicemail is not None:
        return  # the PBX's notice says nothing of the matter: the transcript is classified
    earlier = [m.received_at for m in ticket.messages if m is not msg and m.id != msg.id]
    c = work.triager.classify(facts_for(msg, work.envelope, max(earlier, default=None)))
    if ticket.message_count <= 1 and not ticket.category:
        apply_classification(work.session, ticket, msg, c, work.now)
        work.events.append(
            (
                "ticket.classified",
                {
                    "category": c.category.value,
                    "priority": c.priority.value,
                    "severity": c.severity.value,
                    "language": c.language.value,
                    "flags": list(c.flags.raised),
                },
            )
        )
        return
    if c.flags.raised:
        # A reply keeps its ticket's classification; its own flags (a chase: seed 001,
        # attached, never a new ticket, never a reset clock) are recorded beside it.
        data = {name: d.as_dict() for name, d in c.flags.decisions() if d.value}
        repo.add_event(work.session, ticket, "message_flagged", work.now, data=data, message=msg)
        work.events.append(("message.flagged", {"flags": list(c.flags.raised)}))


def stamp(work: Work) -> None:
    """Stamp SLA deadlines on a ticket this message opened."""
    ticket = work.ticket
    if ticket is None or ticket.assign_by is not None:
        return
    stamps = initial_stamps(ticket.created_at)
    ticket.assign_by = stamps.assign_by
    ticket.respond_by = stamps.respond_by
    repo.add_event(
        work.session, ticket, "stamped", work.now, data=stamps.explain(), message=work.message
    )
    work.events.append(("ticket.stamped", stamps.explain()))


STEPS: dict[str, Step] = {
    "dedupe": dedupe,
    "store_message": store_message,
    "refresh_message": refresh_message,
    "store_attachments": store_attachments,
    "voicemail": voicemail,
    "thread": thread,
    "classify": classify,
    "stamp": stamp,
}
INGEST: tuple[str, ...] = (
    "dedupe",
    "store_message",
    "store_attachments",
    "voicemail",
    "thread",
    "classify",
    "stamp",
)
RETRY: tuple[str, ...] = (
    "refresh_message",
    "store_attachments",
    "voicemail",
    "thread",
    "classify",
    "stamp",
)


def run(work: Work, pipeline: tuple[str, ...] = INGEST) -> None:
    """Run the named steps in order until one raises Done or all have run."""
    for name in pipeline:
        try:
            STEPS[name](work)
        except Done:
            return
