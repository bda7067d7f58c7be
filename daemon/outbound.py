"""Writing a ticket's mail to the outbox: who it goes to, what it answers, its Message-ID.

The pipeline (acknowledgements), the scheduler (follow-ups, last notices,
breach notices) and agent commands (replies) all queue through ``Outbound.row``
(``write`` for one ORM row): the row is added in the caller's transaction, so the
mail exists exactly when the ticket change that owes it does. The row holds the
Message-ID and a spec; the sender calls ``compose_row`` at its first claim, which
builds the bytes with ``daemon.outmail`` (threading headers from the ticket's
messages as they are then). Each Message-ID carries the ticket's reply token, so a
customer's reply threads even when their client drops In-Reply-To.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from daemon.config_desk import OutboundConfig
from daemon.outmail import Kind, Outgoing, Sender, Templates, check, compose
from storage import outbox
from storage import settings as settings_repo
from storage.models import Message, OutboxMail, Ticket
from triage import replytoken
from triage.durations import Duration

MAX_REFERENCES = 20


def thread_ids(session: Session, ticket_id: int | None) -> list[str]:
    """Message-IDs of the ticket's stored messages, oldest first (ids only: never the raw)."""
    return threads(session, [ticket_id])[ticket_id] if ticket_id is not None else []


def threads(session: Session, ticket_ids: Collection[int]) -> dict[int, list[str]]:
    """``thread_ids`` of each of ``ticket_ids``, in one query: a claim that composes a
    scheduler pass's follow-ups holds up to a batch of them."""
    out: dict[int, list[str]] = {tid: [] for tid in ticket_ids}
    if out:
        for tid, mid in session.execute(_THREADS, {"ids": list(out)}):
            if tid is not None:  # never, by the query; the column is nullable
                out[tid].append(mid)
    return out


# The sender asks for every claim it composes: built once (a select() and its cache key
# per call cost as much as the query).
_THREADS = (
    select(Message.ticket_id, Message.message_id)
    .where(
        Message.ticket_id.in_(bindparam("ids", expanding=True)),
        Message.state == "done",
        Message.message_id_generated.is_(False),
    )
    .order_by(Message.id)
)


def nonces(count: int) -> list[str]:
    """``count`` Message-ID nonces of 64 random bits: one urandom read for a batch of mails."""
    text = os.urandom(8 * count).hex()
    return [text[i : i + 16] for i in range(0, 16 * count, 16)]


def when(t: datetime, timezone: str, language: str) -> str:
    """A deadline as the customer reads it: local wall time and the zone's name."""
    local = t.astimezone(ZoneInfo(timezone))
    # Formatted from the fields with %, not strftime or format specs (~2x each): a
    # scheduler pass writes ~15,000 of these.
    y, m, d, hh, mm = local.year, local.month, local.day, local.hour, local.minute
    if language in ("es", "bg"):
        return _DAY_FIRST % (d, m, y, hh, mm, timezone)
    return _YEAR_FIRST % (y, m, d, hh, mm, timezone)


_DAY_FIRST = "%02d/%02d/%04d %02d:%02d (%s)"  # es, bg: 24/12/2026 16:30 (Europe/Madrid)
_YEAR_FIRST = "%04d-%02d-%02d %02d:%02d (%s)"  # others: 2026-12-24 16:30 (Europe/Madrid)


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


def reply_token_key() -> settings_repo.Permanent:
    """The key reply tokens are signed with: one per database, shared by every instance."""
    return settings_repo.Permanent(settings_repo.REPLY_TOKEN_KEY, replytoken.new_key)


class Queued(NamedTuple):
    """A mail ``Outbound.write`` queued: its outbox row's id, Message-ID and recipient."""

    id: int
    message_id: str
    recipient: str


class Outbound:
    """Queues ticket mail as a spec and composes it from the templates when it is sent."""

    def __init__(self, cfg: OutboundConfig, templates: Templates | None = None) -> None:
        self.cfg = cfg
        self.templates = templates or Templates.load(cfg.templates or None)
        self.sender = Sender(cfg.from_address, cfg.from_name, cfg.envelope_from)
        self.domain = cfg.from_address.rpartition("@")[2] or "buzon.invalid"
        self._key = reply_token_key()

    def key(self, session: Session, now: datetime) -> str:
        """The reply-token key: one per database, never changed, so read once."""
        return self._key.get(session, now)

    def row(
        self,
        session: Session,
        *,
        ticket_id: int | None,
        ref: str,
        subject: str,
        language: str,
        kind: Kind,
        now: datetime,
        values: Mapping[str, str] | None = None,
        to: str,
        to_name: str = "",
        due: datetime | None = None,
        nonce: str = "",
    ) -> dict[str, Any]:
        """The outbox row that queues ``kind`` (column values, for one insert or many).

        ``nonce``: 16 random hex digits for the Message-ID, when the caller drew many at
        once (``nonces``); drawn here otherwise.

        What can be wrong with the mail is found here, in the caller's transaction: a
        recipient no relay can take, or values the template does not have (ValueError).
        Composing waits for the sender, so a pass that owes thousands of mails only
        writes rows, and the bytes are built once, by whoever sends them.
        """
        check(kind, values or {}, to)
        message_id = replytoken.message_id_for(
            ref, self.key(session, now), nonce or nonces(1)[0], self.domain
        )
        spec = {
            "kind": kind,
            "to": to,
            "to_name": to_name,
            "language": language or "es",
            "ref": ref,
            "subject": subject,
            "values": dict(values or {}),
        }
        return {
            "ticket_id": ticket_id,
            "kind": kind,
            "recipient": to,
            "envelope_from": self.sender.envelope_from,
            "message_id": message_id,
            "subject": "",
            "spec": spec,
            "raw": None,
            "state": outbox.PENDING,
            "attempts": 0,
            "claimed_by": "",
            "last_error": "",
            "created_at": now,
            "due_at": due or now,
        }

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
    ) -> Queued:
        """Queue ``kind`` for ``ticket`` in the outbox: the row is inserted now, so its id
        can go into the event that records it without flushing the session."""
        values_ = self.row(
            session,
            ticket_id=ticket.id,
            ref=ticket.ref or "",
            subject=ticket.subject,
            language=ticket.language or "es",
            kind=kind,
            now=now,
            values=values,
            to=to or ticket.requester,
            to_name=to_name,
            due=due,
        )
        mail_id = outbox.enqueue(session, values_)
        return Queued(mail_id, values_["message_id"], values_["recipient"])

    def compose_row(
        self,
        session: Session,
        row: OutboxMail,
        now: datetime,
        *,
        thread: Sequence[str] | None = None,
    ) -> None:
        """Build a queued row's bytes from its spec (ValueError when they cannot be);
        ``thread``: its ticket's ``thread_ids`` when the caller read them already."""
        spec = row.spec or {}
        kind = cast(Kind, spec.get("kind", row.kind))
        ref = str(spec.get("ref", ""))
        ids: list[str] = []
        if kind != "breach":
            ids = list(thread) if thread is not None else thread_ids(session, row.ticket_id)
        references = tuple(ids[:1] + ids[1:][-(MAX_REFERENCES - 1) :]) if ids else ()
        reply_to = ""
        if kind != "breach":
            reply_to = replytoken.plus_address(self.cfg.from_address, ref, self.key(session, now))
        composed = compose(
            Outgoing(
                kind=kind,
                to=str(spec.get("to", row.recipient)),
                to_name=str(spec.get("to_name", "")),
                language=str(spec.get("language", "es")),
                ref=ref,
                subject=str(spec.get("subject", "")),
                in_reply_to=ids[-1] if ids else "",
                references=references,
                reply_to=reply_to,
                values={str(k): str(v) for k, v in dict(spec.get("values", {})).items()},
            ),
            sender=self.sender,
            message_id=row.message_id,
            templates=self.templates,
            now=now,
        )
        row.recipient, row.envelope_from = composed.recipient, composed.envelope_from
        row.subject, row.raw = composed.subject, composed.raw
