"""Read the tickets whose category or priority an agent corrected: the learned model's examples.

A correction is a ``ticket_events`` row of kind ``corrected`` (data: ``field``,
``from``, ``to``, ``by``). The ticket's current category and priority are then
an agent's judgement, and the first message is what the classifier read: its
subject and text, or a voicemail's transcript.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Message, Ticket, TicketEvent, Voicemail

CORRECTED = "corrected"


@dataclass(frozen=True, slots=True)
class CorrectedTicket:
    """One ticket an agent corrected: its first message and its labels as they stand now."""

    ticket_id: int
    subject: str
    text: str
    channel: str  # email | voicemail
    category: str
    priority: str


def corrected_tickets(session: Session) -> list[CorrectedTicket]:
    """Every ticket with at least one ``corrected`` event, oldest first."""
    first = (
        select(Message.ticket_id, func.min(Message.id).label("first_id"))
        .where(Message.ticket_id.is_not(None))
        .group_by(Message.ticket_id)
        .subquery()
    )
    corrected = select(TicketEvent.ticket_id).where(TicketEvent.kind == CORRECTED)
    rows = session.execute(
        select(Ticket, Message, Voicemail.text)
        .join(first, first.c.ticket_id == Ticket.id)
        .join(Message, Message.id == first.c.first_id)
        .outerjoin(Voicemail, Voicemail.message_pk == Message.id)
        .where(Ticket.id.in_(corrected))
        .order_by(Ticket.id)
    ).all()
    return [
        CorrectedTicket(
            ticket_id=ticket.id,
            subject=message.subject,
            # A voicemail's email is the PBX's notice; the caller's words are the transcript.
            text=transcript or message.text,
            channel=ticket.channel or "email",
            category=ticket.category,
            priority=ticket.priority,
        )
        for ticket, message, transcript in rows
    ]
