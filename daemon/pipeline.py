"""The ingest pipeline: small steps with one signature, run in one database transaction.

A step takes the ``Work`` for one spool entry (``daemon.work``) and either
updates it or raises ``Done`` to end the pipeline early, e.g. for a duplicate
delivery. The pipeline itself is data: an ordered tuple of step names. The
storing steps live here; threading in ``daemon.ticketing``, automatic mail in
``daemon.automatic``, duplicates and incidents in ``daemon.similar``, SLA clocks
and acknowledgements in ``daemon.sla_steps``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from daemon.automatic import automatic
from daemon.similar import count_incident, incident
from daemon.sla_steps import acknowledge, stamp
from daemon.ticketing import thread
from daemon.work import Done, Step, Work
from parsers import ParsedMessage
from storage import repository as repo
from storage import voicemails as vm_repo
from storage.models import Attachment, Delivery, Message, Ticket, Voicemail
from triage.classification import Classification
from triage.classify import MessageFacts

_EOL = re.compile(rb"\r\n|\r|\n")


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


def _stored_before(work: Work) -> tuple[Message | None, str]:
    """The stored message this one repeats, and why: the same bytes, else the same
    Message-ID, sender and body (a generated Message-ID matches nothing)."""
    p = work.parsed
    if p is None:
        return repo.message_by_sha(work.session, work.sha256), "same raw bytes"
    # Locked before any look-up: this one and the threading's must see what a concurrent
    # instance storing a mail of the same sender commits (``lock_sender``).
    sender = p.sender.addr_spec if p.sender else ""
    repo.lock_sender(work.session, sender, "" if p.message_id_generated else p.message_id)
    if p.message_id_generated:
        return repo.message_by_sha(work.session, work.sha256), "same raw bytes"
    found = repo.messages_by_sha_or_message_id(work.session, work.sha256, p.message_id)
    for pk, sha, _ in found:
        if sha == work.sha256:
            return work.session.get(Message, pk), "same raw bytes"
    for pk, _, message_id in found:
        if message_id == p.message_id:
            candidate = work.session.get(Message, pk)
            if candidate is not None and _same_message(candidate, work):
                return candidate, "same Message-ID, sender and body"
    return None, ""


def dedupe(work: Work) -> None:
    """End here when this delivery, these bytes or this message were stored before."""
    existing, reason = _stored_before(work)
    if existing is None:
        # Then this entry was never committed either: one committed before a crash (its
        # spool file not yet removed) stored or matched a message the look-up finds. So
        # its delivery is looked for only below, which spares almost every message a query.
        return
    if repo.delivery_by_spool_id(work.session, work.spool_id) is not None:
        work.outcome = "already_stored"
        raise Done
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
    # Not flushed here: its rows go with the ticket's (or at commit); the steps refer
    # to it as an object, never by id.
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
    # Flags set before classification (unverified_thread, dmarc_fail) stay.
    ticket.flags = list(dict.fromkeys([*c.flags.raised, *ticket.flags]))
    repo.add_event(work_session, ticket, "classified", now, data=c.as_dict(), message=msg)


def classify(work: Work) -> None:
    """Classify the message: a new ticket takes its values; a reply is checked for a chase."""
    msg, ticket = work.message, work.ticket
    if work.triager is None or msg is None or ticket is None:
        return
    if work.voicemail is not None:
        return  # the PBX's notice says nothing of the matter: the transcript is classified
    # A ticket this message opened has no other message: nothing to read.
    previous = None if work.opened else repo.previous_received_at(work.session, ticket.id, msg)
    c = work.triager.classify(facts_for(msg, work.envelope, previous))
    work.flags_raised = tuple(c.flags.raised)
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


STEPS: dict[str, Step] = {
    "dedupe": dedupe,
    "store_message": store_message,
    "refresh_message": refresh_message,
    "store_attachments": store_attachments,
    "voicemail": voicemail,
    "automatic": automatic,
    "thread": thread,
    "classify": classify,
    "incident": incident,
    "stamp": stamp,
    "acknowledge": acknowledge,
    "count_incident": count_incident,
}
INGEST: tuple[str, ...] = (
    "dedupe",
    "store_message",
    "store_attachments",
    "voicemail",
    "automatic",
    "thread",
    "classify",
    "incident",
    "stamp",
    "acknowledge",
    "count_incident",  # last: it locks the incident's row until commit
)
RETRY: tuple[str, ...] = (
    "refresh_message",
    "store_attachments",
    "voicemail",
    "automatic",
    "thread",
    "classify",
    "incident",
    "stamp",
    "acknowledge",
    "count_incident",  # last: it locks the incident's row until commit
)

__all__ = ["INGEST", "RETRY", "STEPS", "Done", "Work", "run"]


def run(work: Work, pipeline: tuple[str, ...] = INGEST) -> None:
    """Run the named steps in order until one raises Done or all have run."""
    for name in pipeline:
        try:
            STEPS[name](work)
        except Done:
            return
