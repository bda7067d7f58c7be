"""The pipeline's SLA steps: stamp the clocks a message starts or stops, acknowledge new tickets.

``stamp``: a message that opened a ticket selects its policy and starts the
clocks; a customer's message on a ticket re-stamps the response clock (or
reopens a recently closed ticket); an agent's mail on the thread is a response.
``acknowledge``: a new ticket from a person gets the ticket reference and the
promised response time, unless the sender is a machine, a list, unverified or
over its rate (each suppression is a ticket event and a log line with the reason).
"""

from __future__ import annotations

from daemon import sla
from daemon.outbound import when
from daemon.work import Work
from storage import outbox
from storage import repository as repo

CHASE_FLAG = "chase"


def stamp(work: Work) -> None:
    """Start, re-stamp or stop the ticket's clocks for this message."""
    ticket, msg = work.ticket, work.message
    if ticket is None or msg is None or ticket.status == "merged":
        return
    cfg = work.desk.sla
    if not ticket.sla_policy:
        clocks = sla.stamp(work.session, ticket, cfg, work.now, message=msg, opened=work.opened)
        work.events.append(
            (
                "ticket.stamped",
                {
                    "policy": ticket.sla_policy,
                    "calendar": ticket.sla_calendar,
                    "assign_by": ticket.assign_by.isoformat() if ticket.assign_by else None,
                    "respond_by": ticket.respond_by.isoformat() if ticket.respond_by else None,
                    "provisional": clocks.respond_provisional,
                },
            )
        )
        return
    if work.opened or msg.is_automatic:
        return  # bounces and notices on a ticket are not the customer speaking
    if work.agent:
        sla.respond(work.session, ticket, cfg, work.now, agent=work.agent, via="mail", message=msg)
        work.events.append(("ticket.responded", {"agent": work.agent, "via": "mail"}))
        return
    reopening = ticket.status == "closed"
    chase = CHASE_FLAG in work.flags_raised
    sla.customer_message(
        work.session, ticket, cfg, work.now, at=msg.received_at, message=msg, chase=chase
    )
    if reopening:
        work.events.append(("ticket.reopened", {"status": ticket.status}))


def _no_ack_reason(work: Work) -> str:
    """Why this new ticket gets no acknowledgement; "" when it gets one."""
    msg, ticket = work.message, work.ticket
    assert msg is not None and ticket is not None
    auto = msg.auto or {}
    checks = (
        (bool(work.envelope.get("backfill")), "history import (buzon ingest, or --since)"),
        (ticket.channel != "email", "voicemail: the caller left no mail address"),
        (bool(msg.no_ack_reason), msg.no_ack_reason),
        (bool(auto.get("null_sender")), "null envelope sender"),
        (bool(auto.get("list_id")), "mailing list"),
        (msg.is_automatic, "automatic mail (Auto-Submitted, Precedence or a report)"),
        (bool(work.agent), "sender is an agent"),
        ("@" not in ticket.requester, "no mail address to answer"),
    )
    return next((why for failed, why in checks if failed), "")


def acknowledge(work: Work) -> None:
    """Queue the acknowledgement of a ticket this message opened, or say why not."""
    ticket, msg = work.ticket, work.message
    if work.outbound is None or not work.opened or ticket is None or msg is None:
        return
    why = _no_ack_reason(work)
    per_day = work.outbound.cfg.ack_per_day
    if not why and not outbox.take_token(work.session, ticket.requester, work.now, per_day=per_day):
        why = f"rate limit: at most {per_day:g} acknowledgements a day to {ticket.requester}"
    if why:
        msg.no_ack_reason = msg.no_ack_reason or why
        repo.add_event(work.session, ticket, "ack_suppressed", work.now, data={"reason": why})
        work.events.append(("ack.suppressed", {"reason": why}))
        return
    timezone = work.desk.sla.calendar(ticket.sla_calendar).timezone.key
    respond_by = ticket.respond_by or ticket.assign_by
    values = {
        "respond_by": when(respond_by, timezone, ticket.language) if respond_by else "",
        "customer_name": msg.from_name or "",
        "calendar_note": "",
    }
    mail = work.outbound.write(
        work.session, ticket, "ack", work.now, values=values, to_name=msg.from_name
    )
    repo.add_event(
        work.session,
        ticket,
        "ack_queued",
        work.now,
        data={"outbox": mail.id, "message_id": mail.message_id, "to": mail.recipient},
    )
    work.events.append(("ack.queued", {"outbox": mail.id, "to": mail.recipient}))
