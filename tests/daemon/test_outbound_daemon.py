"""Outbound mail from a running daemon to a real relay on loopback (an aiosmtpd sink).

LOOP-08: every mail carries Auto-Submitted, In-Reply-To/References, our Message-ID and a
null envelope sender. SEC-01: an encoded CRLF in the subject adds no header or recipient.
LOOP-06: our acknowledgement coming back, or an auto-reply to it, never gets another one.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest

from support.daemon import Daemon, serving, wait_until
from support.mail import message, send


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    msg: EmailMessage
    raw: bytes


@dataclass
class Sink:
    """Accepts everything and keeps it."""

    got: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.got.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg, raw))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def relay() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    with serving(sink) as port:
        yield sink, port


def test_acknowledgement_reaches_the_relay_safe_and_never_loops(
    daemon_factory: Callable[..., Daemon], relay: tuple[Sink, int]
) -> None:
    sink, port = relay
    d = daemon_factory(extra=f'[outbound]\nrelay = "127.0.0.1:{port}"\n')
    hostile = message("=?utf-8?q?Hola=0D=0ABcc:_evil@x.example?=", message_id="<h1@cliente.es>")
    send(d.port, hostile)
    wait_until(lambda: sink.got, timeout=30, what="the acknowledgement at the relay")
    (ack,) = sink.got
    m = ack.msg
    # SEC-01: one recipient, the customer; no Bcc; the subject is one line.
    assert ack.rcpt_tos == ["ana@cliente.es"]
    assert m["Bcc"] is None and len(m.get_all("To") or []) == 1
    assert [a.addr_spec for a in m["To"].addresses] == ["ana@cliente.es"]
    assert "\n" not in str(m["Subject"]) and "[B-1]" in str(m["Subject"])
    # LOOP-08.
    assert ack.mail_from in ("<>", "")
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["In-Reply-To"] == "<h1@cliente.es>" and "<h1@cliente.es>" in str(m["References"])
    ours = str(m["Message-ID"])
    assert ours.startswith("<b-1.") and ours.endswith("@desk.example.org>")
    d.wait_event("outbox.sent")
    # The customer's auto-responder answers the ack; then the ack itself bounces back to us.
    auto = message(
        "Fuera de la oficina",
        headers=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {ours}\r\n",
        message_id="<ooo1@cliente.es>",
    )
    send(d.port, auto)
    send(d.port, ack.raw, sender="buzon@desk.example.org")
    wait_until(lambda: d.processed() >= 3, timeout=30, what="three messages processed")
    # A client that drops In-Reply-To: the Reply-To plus-address is accepted and threads.
    (reply_to,) = [a.addr_spec for a in m["Reply-To"].addresses]
    assert reply_to.startswith("help+b-1.")
    send(d.port, message("Gracias, otra pregunta sobre lo mismo"), rcpts=(reply_to,))
    joined = d.wait_event("ticket.updated", where=lambda e: e.get("rule") == "reply-token")
    assert joined["ticket"] == "B-1"
    d.cli("sla", "pass")
    assert len(sink.got) == 1  # nothing answered the auto-reply or our own mail
    assert d.stop() == 0
