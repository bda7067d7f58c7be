"""Writing a ticket's mail to the outbox: who it goes to, what it answers, its Message-ID.

The pipeline (acknowledgements), the scheduler (follow-ups, last notices,
breach notices) and agent commands (replies) all go through ``Outbound.write``,
which composes with ``daemon.outmail`` and adds the row in the caller's
transaction: the mail exists exactly when the ticket change that owes it does.
Each Message-ID carries the ticket's reply token, so a customer's reply threads
even when their client drops In-Reply-To.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config_desk import OutboundConfig
from daemon.outmail import Kind, Outgoing, Sender, Templates, compose
from storage import outbox
from storage import settings as settings_repo
from storage.models import Message, OutboxMail, Ticket
from triage import replytoken
from triage.durations import Duration

MAX_REFERENCES = 20


def thread_ids(session: Session, ticket: Ticket) -> list[str]:
    """Message-IDs of the ticket's stored messages, oldest first (ids only: never the raw)."""
    if ticket.id is None:
        return []
    rows = session.execute(
        select(Message.message_id)
        .where(
            Message.ticket_id == ticket.id,
            Message.state == "done",
            Message.message_id_generated.is_(False),
        )
        .order_by(Message.id)
    )
    return [mid for (mid,) in rows]


def when(t: datetime, timezone: str, language: str) -> str:
    """A deadline as the customer reads it: local wall time and the zone's name."""
    local = t.astimezone(ZoneInfo(timezone))
    day = local.strftime("%d/%m/%Y" if language in ("es", "bg") else "%Y-%m-%d")
    return f"{day} {local:%H:%M} ({timezone})"


_UNITS = {
    "es": {"m": ("minuto", "minutos"), "h": ("hora", "horas"), "d": ("día", "días")},
    "en": {"m": ("minute", "minutes"), "h": ("hour", "hours"), "d": ("day", "days")},
    "bg": {"m": ("минута", "минути"), "h": ("час", "часа"), "d": ("ден", "дни")},
}


def spoken(duration: Duration, language: str) -> str:
    """A wall-clock duration as a customer reads it: ``7d`` -> "7 días"."""
    names = _UNITS.get(language, _UNITS["en"]).get(duration.unit)
    if names is None:  # business units are never shown to customers; say them plainly
        return str(duration)
    return f"{duration.amount} {names[0] if duration.amount == 1 else names[1]}"


class Outbound:
    """Composes ticket mail from the templates and queues it."""

    def __init__(self, cfg: OutboundConfig, templates: Templates | None = None) -> None:
        self.cfg = cfg
        self.templates = templates or Templates.load(cfg.templates or None)
        self.sender = Sender(cfg.from_address, cfg.from_name, cfg.envelope_from)
        self.domain = cfg.from_address.rpartition("@")[2] or "buzon.invalid"
        self._key = ""

    def write(
        self,
        session: Session,
        ticket: Ticket,
        kind: Kind,
        now: datetime,
        *,
        values: Mapping[str, str] | None = None,
        to: str = "",
        to_name: str = "",
        due: datetime | None = None,
    ) -> OutboxMail:
        """Compose ``kind`` for ``ticket`` and add it to the outbox (not flushed)."""
        if not self._key:  # one per database, never changed: read it once
            self._key = settings_repo.get_or_create(
                session, settings_repo.REPLY_TOKEN_KEY, replytoken.new_key, now
            )
        key = self._key
        ref = ticket.ref or ""
        ids = thread_ids(session, ticket) if kind != "breach" else []
        references = tuple(ids[:1] + ids[1:][-(MAX_REFERENCES - 1) :]) if ids else ()
        message_id = replytoken.message_id_for(ref, key, uuid.uuid4().hex[:16], self.domain)
        recipient = to or ticket.requester
        composed = compose(
            Outgoing(
                kind=kind,
                to=recipient,
                to_name=to_name,
                language=ticket.language or "es",
                ref=ref,
                subject=ticket.subject,
                in_reply_to=ids[-1] if ids else "",
                references=references,
                reply_to=replytoken.plus_address(self.cfg.from_address, ref, key)
                if kind != "breach"
                else "",
                values=dict(values or {}),
            ),
            sender=self.sender,
            message_id=message_id,
            templates=self.templates,
            now=now,
        )
        return outbox.enqueue(
            session,
            OutboxMail(
                ticket_id=ticket.id,
                kind=kind,
                recipient=composed.recipient,
                envelope_from=composed.envelope_from,
                message_id=composed.message_id,
                subject=composed.subject,
                raw=composed.raw,
                attempts=0,
                created_at=now,
                due_at=due or now,
            ),
        )
