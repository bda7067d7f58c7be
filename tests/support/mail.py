"""Build short test messages and send them over real SMTP."""

from __future__ import annotations

import re
import smtplib
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

_EOL = re.compile(rb"\r\n|\n|\r")


def crlf(data: bytes) -> bytes:
    """What an MTA puts on the wire (and IMAP carries): CRLF line ends and a final CRLF."""
    data = _EOL.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def read_reply(f: BinaryIO) -> bytes:
    """One whole SMTP reply, multi-line replies included."""
    out = b""
    while True:
        line = f.readline()
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


@contextmanager
def in_data(port: int) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A raw SMTP session already past DATA's 354, for tests that control every byte."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as sock,
        sock.makefile("rb") as f,
    ):
        read_reply(f)
        for cmd in (
            b"EHLO t\r\n",
            b"MAIL FROM:<ana@cliente.es>\r\n",
            b"RCPT TO:<support@example.com>\r\n",
            b"DATA\r\n",
        ):
            sock.sendall(cmd)
            read_reply(f)
        yield sock, f


def message(
    subject: str = "Mi web no carga",
    *,
    sender: str = "ana@cliente.es",
    body: str = "Hola,\nla web no carga desde ayer.\n",
    message_id: str | None = None,
    headers: str = "",
    nonce: str | None = None,
) -> bytes:
    mid = message_id or f"<{uuid.uuid4().hex}@cliente.es>"
    extra = f"X-Nonce: {nonce}\r\n" if nonce else ""
    text = (
        f"From: Ana <{sender}>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Fri, 20 Nov 2026 10:00:00 +0100\r\n{extra}{headers}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + body.replace("\n", "\r\n")
    )
    return text.encode("utf-8")


def message_and_reply(
    subject: str, *, sender: str, message_id: str, reply_sender: str = "", reply_body: str = ""
) -> tuple[bytes, bytes]:
    """A customer's message and their reply to it (``In-Reply-To`` its Message-ID)."""
    original = message(subject, sender=sender, message_id=message_id)
    reply = message(
        f"Re: {subject}",
        sender=reply_sender or sender,
        body=reply_body or "Sigue igual.\n",
        headers=f"In-Reply-To: {message_id}\r\n",
    )
    return original, reply


def send(
    port: int,
    raw: bytes,
    *,
    sender: str = "ana@cliente.es",
    rcpts: tuple[str, ...] = ("support@example.com",),
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        return smtp.sendmail(sender, list(rcpts), raw)


def data_reply(
    port: int, raw: bytes, *, sender: str = "ana@cliente.es", rcpt: str = "support@example.com"
) -> tuple[int, bytes]:
    """Send one message and return the reply to the end of DATA (no exception on 4xx/5xx)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        code, msg = smtp.mail(sender)
        if code != 250:
            return code, msg
        code, msg = smtp.rcpt(rcpt)
        if code not in (250, 251):
            return code, msg
        return smtp.data(raw)
