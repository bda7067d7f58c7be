"""Putting a message on a ticket: join one, open one; each a ticket event with its reason.

Shared by the steps that decide where a message goes (threading, duplicates,
automatic mail), so every path records the rule that put the message there.
"""

from __future__ import annotations

from typing import Any

from daemon.work import Work
from storage import repository as repo
from storage.models import Ticket
from triage.refs import ref_for


def reply_key(work: Work) -> str:
    """The key reply tokens are signed with, shared by every instance on the database.

    Both the automatic and the thread step need it; it is read once per message.
    """
    return work.reply_keys.get(work.session, work.now)


def join(
    work: Work, ticket: Ticket, rule: str, reason: str, extra: dict[str, Any] | None = None
) -> None:
    """Add the message to ``ticket``, recording the rule that put it there."""
    msg = work.message
    assert msg is not None
    msg.ticket = ticket
    ticket.message_count += 1
    ticket.updated_at = work.now
    data = {"rule": rule, "reason": reason, "message_id": msg.message_id, **(extra or {})}
    repo.add_event(work.session, ticket, "message_added", work.now, data=data, message=msg)
    work.ticket = ticket
    work.events.append(("ticket.updated", {"rule": rule, "reason": reason}))


def open_ticket(
    work: Work,
    *,
    subject: str,
    customer: str,
    requester: str,
    channel: str,
    reason: str,
    flags: tuple[str, ...] = (),
) -> Ticket:
    """A new ticket holding the message; the event says why none was joined."""
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
        flags=list(flags),
        match_text=work.fingerprint,
    )
    tid = repo.next_ticket_id(work.session)
    if tid is not None:
        ticket.id = tid  # its row goes in at the next flush (``next_ticket_id``)
    work.session.add(ticket)
    msg.ticket = ticket  # before any flush: the message row goes in with its ticket id
    if tid is None:
        work.session.flush()
    ticket.ref = ref_for(ticket.id)
    repo.add_event(
        work.session,
        ticket,
        "created",
        work.now,
        data={
            "reason": reason,
            "message_id": msg.message_id,
            "source": work.source,
            "customer": customer,
            "flags": list(flags),
        },
        message=msg,
    )
    work.ticket = ticket
    work.opened = True
    work.events.append(
        ("ticket.created", {"reason": reason, "channel": channel, "flags": list(flags)})
    )
    return ticket
