"""The automatic step: mail a machine sent never opens a ticket and is never answered.

Our own mail coming back (its Message-ID carries a token we signed) is dropped
(LOOP-06). Bounces and delivery, read and feedback reports attach to the ticket
of the message they are about, found through the Message-ID they return (a
stored message of ours or a customer's, or a reply token); out-of-office
replies attach to the ticket they answer. Whatever finds no ticket, and every
list or other automatic message, is parked: stored with its raw bytes, listed
by ``buzon parked list``, no ticket (LOOP-01..04). Every such message carries a
``no_ack_reason``, so no acknowledgement can ever go to it.

A voicemail notification is a person's call even when the PBX marks its mail
as auto-generated, so this step leaves voicemail alone.
"""

from __future__ import annotations

from daemon.ticketops import join, reply_key
from daemon.work import Done, Work
from storage import repository as repo
from storage.models import Ticket
from triage import replytoken

ATTACHABLE = frozenset(
    {"bounce", "delivery_report", "read_report", "feedback_report", "out_of_office"}
)


def _ticket_for(work: Work, message_ids: tuple[str, ...]) -> tuple[Ticket | None, str]:
    """The open ticket one of ``message_ids`` belongs to, and how it was found."""
    for mid, ticket in repo.open_tickets_for_message_ids(work.session, message_ids):
        return ticket, f"returned Message-ID <{mid}> is a message of {ticket.ref}"
    tokens = [
        t for t in replytoken.find(reply_key(work), "references", list(message_ids)) if t.valid
    ]
    for ticket in repo.open_tickets_by_refs(work.session, [t.ref for t in tokens]):
        return ticket, f"returned Message-ID carries the reply token of {ticket.ref}"
    return None, ""


def automatic(work: Work) -> None:
    """Drop our own mail, attach reports to their ticket, park the rest; else pass."""
    msg, p = work.message, work.parsed
    if msg is None or p is None or msg.ticket is not None or work.voicemail is not None:
        return
    key = reply_key(work)
    if not p.message_id_generated and replytoken.is_ours(p.message_id, key):
        msg.state, msg.state_reason = "dropped", "our own mail came back (LOOP-06)"
        msg.no_ack_reason = msg.state_reason
        work.outcome = "dropped"
        work.events.append(("message.dropped", {"reason": msg.state_reason}))
        raise Done
    auto = p.auto
    null_sender = bool(msg.auto.get("null_sender"))
    kind = auto.kind or ("auto_generated" if null_sender else "")
    if not kind:
        return
    reason = auto.reason or ("null envelope sender" if null_sender else kind)
    msg.no_ack_reason = f"automatic mail: {kind} ({reason})"
    # A report names the message it returns; an out-of-office reply answers one.
    ids = (*p.in_reply_to, *p.references) if kind == "out_of_office" else auto.returned_message_ids
    ticket, how = _ticket_for(work, ids) if kind in ATTACHABLE else (None, "")
    if ticket is not None:
        join(work, ticket, kind, f"{kind}: {how}", {"automatic": reason})
        work.outcome = "attached"
        work.events.append(("message.automatic", {"kind": kind, "attached_to": ticket.ref}))
        raise Done
    msg.state = "parked"
    msg.state_reason = (
        f"{kind}: {reason}; no open ticket matches the message it returns"
        if kind in ATTACHABLE
        else f"{kind}: {reason}"
    )
    work.outcome = "parked"
    work.events.append(("message.parked", {"kind": kind, "reason": msg.state_reason}))
    raise Done
