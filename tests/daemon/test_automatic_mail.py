"""Automatic mail never opens a ticket and is never answered (RELIABILITY.md LOOP-01..04,
LOOP-06): real reports from the corpus attach to the ticket of the message they return,
or are parked with their raw bytes; our own mail coming back is dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.parts import Parts
from storage import repository as repo
from storage import settings
from storage.models import Message
from support.ingest import ingest_raw
from support.mail import message
from triage import replytoken

MIMEKIT = "mimekit/UnitTests/TestData/messages"
# Corpus report -> (kind, Message-ID of the original it returns)
REPORTS = {
    f"{MIMEKIT}/delivery-status.txt": ("bounce", "31FC7EB4.41C6@netscape.com"),
    f"{MIMEKIT}/bounce.txt": ("bounce", None),
    f"{MIMEKIT}/disposition-notification.txt": ("read_report", "199509192301.23456@example.org"),
    f"{MIMEKIT}/feedback-report.txt": ("feedback_report", None),
    "nodemailer-mailparser/test/fixtures/delivery-status.eml": (
        "bounce",
        "xxxxx@email.amazonses.com",
    ),
}


def _message(parts: Parts, pk: int | None) -> Message:
    with parts.db.transaction() as s:
        m = repo.message(s, pk or 0)
        assert m is not None
        s.expunge(m)
        return m


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_reports_without_their_ticket_are_parked(parts: Parts, corpus: Path, name: str) -> None:
    """No ticket, raw bytes kept, the kind and reason recorded, never acknowledged."""
    raw = (corpus / name).read_bytes()
    out = ingest_raw(parts, raw, envelope={"mail_from": "", "rcpt_tos": ["support@example.com"]})
    assert (out.outcome, out.ticket_ref) == ("parked", None)
    m = _message(parts, out.message_pk)
    kind = REPORTS[name][0]
    assert m.state == "parked" and m.state_reason.startswith(kind)
    assert m.raw == raw and m.no_ack_reason.startswith(f"automatic mail: {kind}")
    with parts.db.transaction() as s:
        assert repo.counts(s).get("tickets.open", 0) == 0


@pytest.mark.parametrize("name", sorted(n for n, (_, mid) in REPORTS.items() if mid))
def test_a_report_attaches_to_the_ticket_of_the_message_it_returns(
    parts: Parts, corpus: Path, name: str
) -> None:
    """LOOP-04: the bounce names our customer's message; it lands on that ticket."""
    original = REPORTS[name][1]
    first = ingest_raw(parts, message("Mi web no carga", message_id=f"<{original}>"))
    out = ingest_raw(parts, (corpus / name).read_bytes())
    assert (out.outcome, out.ticket_ref) == ("attached", first.ticket_ref)
    with parts.db.transaction() as s:
        t = repo.ticket(s, first.ticket_ref or "")
        assert t is not None and t.message_count == 2
        (added,) = [e.data for e in t.events if e.kind == "message_added"]
        assert added["rule"] == REPORTS[name][0] and original in added["reason"]


def _key(parts: Parts) -> str:
    with parts.db.transaction() as s:
        return settings.get_or_create(
            s, settings.REPLY_TOKEN_KEY, replytoken.new_key, datetime.now(UTC)
        )


def test_out_of_office_attaches_through_our_token(parts: Parts) -> None:
    """An auto-reply to our acknowledgement names our Message-ID: it joins, unanswered."""
    first = ingest_raw(parts, message())
    ours = replytoken.message_id_for(first.ticket_ref or "", _key(parts), "u1", "desk.example")
    ooo = message(
        "Respuesta automática: Mi web no carga",
        headers=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: <{ours}>\r\n",
        body="Estoy fuera de la oficina hasta el lunes.\n",
    )
    out = ingest_raw(parts, ooo)
    assert (out.outcome, out.ticket_ref) == ("attached", first.ticket_ref)
    assert _message(parts, out.message_pk).no_ack_reason.startswith("automatic mail: out_of_office")


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ("Auto-Submitted: auto-replied\r\n", "out_of_office"),
        ("Auto-Submitted: auto-generated\r\n", "auto_generated"),
        ("Precedence: bulk\r\nList-Unsubscribe: <mailto:u@lists.example>\r\n", "list"),
        ("List-Id: Clientes <clientes.lists.example>\r\n", "list"),
        ("X-Auto-Response-Suppress: All\r\n", "auto_generated"),
    ],
)
def test_loop01_03_machine_mail_opens_no_ticket(parts: Parts, headers: str, kind: str) -> None:
    out = ingest_raw(parts, message("Aviso", headers=headers))
    assert (out.outcome, out.ticket_ref) == ("parked", None)
    assert _message(parts, out.message_pk).state_reason.startswith(kind)


def test_null_envelope_sender_opens_no_ticket(parts: Parts) -> None:
    out = ingest_raw(parts, message(), envelope={"mail_from": "", "rcpt_tos": ["s@example.com"]})
    assert (out.outcome, out.ticket_ref) == ("parked", None)


def test_loop06_our_own_mail_coming_back_is_dropped(parts: Parts) -> None:
    first = ingest_raw(parts, message())
    ours = replytoken.message_id_for(first.ticket_ref or "", _key(parts), "u2", "desk.example")
    out = ingest_raw(parts, message("Re: Mi web no carga", message_id=f"<{ours}>"))
    assert (out.outcome, out.ticket_ref) == ("dropped", None)
    m = _message(parts, out.message_pk)
    assert m.state == "dropped" and "LOOP-06" in m.state_reason


def test_a_customer_mail_is_not_automatic(parts: Parts) -> None:
    out = ingest_raw(parts, message())
    assert out.outcome == "stored" and out.ticket_ref
    assert _message(parts, out.message_pk).no_ack_reason == ""
