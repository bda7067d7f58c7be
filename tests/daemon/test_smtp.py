"""SMTP intake conformance: RFC 5321 limits, byte-exact storage, honest reply codes."""

from __future__ import annotations

import smtplib
import socket
import time
from pathlib import Path

import pytest

from support.intake import Intake
from support.mail import message, read_reply


@pytest.fixture
def intake(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Intake(tmp_path) as server:
        yield server


TO_DATA = (
    b"EHLO t\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"RCPT TO:<support@example.com>\r\n",
    b"DATA\r\n",
)


def raw_session(port: int, lines: list[bytes], *, final: bytes = b"QUIT\r\n") -> list[bytes]:
    """Speak SMTP by hand so no client library rewrites our bytes; return all replies."""
    replies: list[bytes] = []
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as sock,
        sock.makefile("rb") as f,
    ):
        replies.append(read_reply(f))
        for line in [*lines, final]:
            sock.sendall(line)
            if line.endswith(b"\r\n") and not line.startswith(b"  "):
                replies.append(read_reply(f))
    return replies


def test_smtp01_rfc5321_minimums_are_accepted(intake: Intake) -> None:
    """SMTP-01: a 64-octet local part, a 255-octet domain, 1000-octet lines, 100 recipients."""
    local = "a" * 64
    domain = ".".join(["d" * 63, "e" * 63, "f" * 63, "g" * 61])  # 253 + dots = 255 chars
    assert len(domain) == 253 or len(domain) <= 255
    line = b"x" * 998 + b"\r\n"
    raw = message().replace(b"\r\n\r\n", b"\r\n\r\n" + line, 1)
    rcpts = [f"r{i}@example.com" for i in range(99)] + [f"{local}@example.com"]
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        refused = smtp.sendmail(f"{local}@{domain}", rcpts, raw)
    assert refused == {}
    assert intake.stored() == [raw]


def test_a_path_cut_short_is_a_syntax_error_not_a_server_failure(intake: Intake) -> None:
    """``MAIL FROM:<`` and ``RCPT TO:<a@[`` crash CPython's address parser inside
    aiosmtpd; the client must hear 553 malformed address (its own mistake, not to retry)
    and the session go on, not a 451 with an error in the admin's log."""
    replies = raw_session(
        intake.port,
        [b"EHLO t\r\n", b"MAIL FROM:<\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<a@[\r\n"],
    )
    assert [r[:3] for r in replies] == [b"220", b"250", b"553", b"250", b"553", b"221"]
    assert intake.stored() == []


def test_smtp02_long_lines_are_stored_byte_exact(intake: Intake) -> None:
    """SMTP-02: body lines over 1000 octets (real Outlook mail) are kept exactly."""
    long_line = b"y" * 50_000 + b"\r\n"
    raw = message().replace(b"\r\n\r\n", b"\r\n\r\n" + long_line, 1)
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        smtp.sendmail("ana@cliente.es", ["support@example.com"], raw)
    assert intake.stored() == [raw]


def test_smtp03_size_advertised_and_enforced(tmp_path: Path) -> None:
    """SMTP-03: EHLO advertises SIZE; a larger message gets 552 and nothing is stored."""
    with Intake(tmp_path, max_message_size=10_000) as server:
        with smtplib.SMTP("127.0.0.1", server.port) as smtp:
            smtp.ehlo()
            assert smtp.esmtp_features["size"] == "10000"
            assert "8bitmime" in smtp.esmtp_features and "smtputf8" in smtp.esmtp_features
            smtp.mail("ana@cliente.es")
            smtp.rcpt("support@example.com")
            code, _ = smtp.data(message(body="z" * 20_000))
        assert code == 552
        with smtplib.SMTP("127.0.0.1", server.port) as smtp:
            smtp.ehlo()
            code, _ = smtp.mail("ana@cliente.es", ["SIZE=20000"])
        assert code == 552
        assert server.stored() == []


def test_smtp04_dot_stuffing_round_trips(intake: Intake) -> None:
    """SMTP-04: lines starting with dots come back exactly as the author wrote them."""
    body = b".\r\n..\r\n.hidden\r\n...three\r\nend\r\n"
    raw = b"Subject: dots\r\n\r\n" + body
    stuffed = b"".join(
        b"." + ln if ln.startswith(b".") else ln for ln in raw.splitlines(keepends=True)
    )
    replies = raw_session(
        intake.port,
        [
            *TO_DATA,
            stuffed + b".\r\n",
        ],
    )
    assert replies[-2].startswith(b"250 2.0.0")
    assert intake.stored() == [raw]


@pytest.mark.parametrize("sep", [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r"])
def test_smtp05_smuggling_sequences_make_one_message(intake: Intake, sep: bytes) -> None:
    """SMTP-05: bare-LF/CR end-of-data look-alikes never end DATA or start a second message."""
    smuggled = (
        b"Subject: outer\r\n\r\nhello"
        + sep
        + b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nevil\r\n"
    )
    replies = raw_session(
        intake.port,
        [
            *TO_DATA,
            smuggled + b".\r\n",
        ],
    )
    assert replies[-2].startswith(b"250 ")
    stored = intake.stored()
    assert len(stored) == 1
    # The would-be second transaction is data inside the first message.
    assert stored[0].startswith(b"Subject: outer") and b"MAIL FROM:<evil@x.example>" in stored[0]
    assert stored[0].endswith(b"evil\r\n")


def _still_open(sock: socket.socket) -> bool:
    """True while the server has neither written to nor closed ``sock``."""
    sock.setblocking(False)
    try:
        return not sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def test_smtp09_slow_connections_time_out_while_normal_clients_are_served(
    tmp_path: Path,
) -> None:
    """SMTP-09: 200 connections that stall (silent after the banner, or dripping a command
    that never ends) each get ``421 4.4.2`` and are closed after ``[smtp] timeout``; while
    all 200 hang, a normal client is served."""
    with Intake(tmp_path, timeout=5.0) as server:
        slow: list[socket.socket] = []
        try:
            for _ in range(200):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
                slow.append(sock)
            opened = time.monotonic()
            for sock in slow:
                assert sock.makefile("rb").readline().startswith(b"220 ")
            dripping = slow[::2]
            for sock in dripping:
                sock.sendall(b"EHL")  # a command begun, never ended: no CRLF
            with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
                smtp.sendmail("ana@cliente.es", ["support@example.com"], message("Mientras"))
            for sock in dripping:
                sock.sendall(b"O")
            # Served while every slow connection was still held open, not after they went.
            assert all(_still_open(sock) for sock in slow)
            for sock in slow:
                with sock.makefile("rb") as f:
                    assert f.readline().startswith(b"421 4.4.2 test.local Error: timeout")
                    assert f.read() == b""  # then closed
            assert time.monotonic() - opened >= 4.5  # the timeout, not an early close
        finally:
            for sock in slow:
                sock.close()
        assert len(server.stored()) == 1


def test_smtp11_handler_exception_answers_451_without_internals(intake: Intake) -> None:
    """SMTP-11: an internal failure is a temporary 451 4.3.0 that leaks nothing."""

    async def boom(raw: bytes, meta: dict[str, object]) -> object:
        raise RuntimeError("secret internal detail /var/lib/buzon")

    intake.writer.put = boom  # type: ignore[method-assign,assignment]
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        smtp.ehlo()
        smtp.mail("ana@cliente.es")
        smtp.rcpt("support@example.com")
        code, text = smtp.data(message())
    assert code == 451 and text.startswith(b"4.3.0")
    assert b"secret" not in text and b"RuntimeError" not in text
    assert intake.stored() == []


def test_smtp11_exception_in_protocol_hook_is_not_500(intake: Intake) -> None:
    """An exception escaping a hook reaches handle_exception: 451, never aiosmtpd's 500."""

    async def broken(*args: object) -> str:
        raise ValueError("internal")

    intake.handler.handle_RCPT = broken  # type: ignore[method-assign,assignment]
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        smtp.ehlo()
        smtp.mail("ana@cliente.es")
        code, text = smtp.rcpt("support@example.com")
    assert code == 451 and b"internal" not in text


def test_smtp12_unknown_recipient_refused_never_relays(intake: Intake) -> None:
    """SMTP-12: other domains and look-alikes get 550 5.1.1 at RCPT; nothing is stored."""
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        smtp.ehlo()
        smtp.mail("ana@cliente.es")
        for rcpt in (
            "victim@gmail.com",
            "x@example.com.evil.org",
            "x@sub.example.com",
            "other@desk.example.org",
        ):
            code, text = smtp.rcpt(rcpt)
            assert (code, text[:5]) == (550, b"5.1.1"), rcpt
        for malformed in ("@example.com", "a@b@example.com"):
            code, text = smtp.rcpt(malformed)
            assert code in (550, 553), malformed  # aiosmtpd's syntax check: 553 5.1.3
        assert smtp.rcpt("HELP@desk.example.org")[0] == 250
        assert smtp.rcpt("anyone@EXAMPLE.com")[0] == 250


def test_low_disk_answers_452_at_mail(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under 1.5 x the size limit free, MAIL FROM is refused with 452 4.3.1 (retry later)."""
    monkeypatch.setattr(intake.spool, "free_space", lambda: (1000, 10**6))
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        smtp.ehlo()
        code, text = smtp.mail("ana@cliente.es")
    assert (code, text[:5]) == (452, b"4.3.1")


def test_utf8_and_8bit_mail_is_accepted_byte_exact(intake: Intake) -> None:
    """SMTPUTF8 envelopes and 8-bit bodies are taken as they are."""
    raw = "From: José <josé@cliente.es>\r\nSubject: ñandú\r\n\r\nCafé ☕\r\n".encode()
    replies = raw_session(
        intake.port,
        [
            b"EHLO t\r\n",
            "MAIL FROM:<josé@cliente.es> SMTPUTF8 BODY=8BITMIME\r\n".encode(),
            b"RCPT TO:<support@example.com>\r\n",
            b"DATA\r\n",
            raw + b".\r\n",
        ],
    )
    assert replies[-2].startswith(b"250 ")
    assert intake.stored() == [raw]


def test_spool_sidecar_records_the_envelope(intake: Intake) -> None:
    """The sidecar keeps the envelope sender, recipients, peer and TLS flag."""
    with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
        smtp.sendmail("ana@cliente.es", ["support@example.com", "help@desk.example.org"], message())
    entry = intake.spool.get(intake.spool.pending()[0])
    assert entry is not None
    env = entry.meta["envelope"]
    assert env["mail_from"] == "ana@cliente.es"
    assert env["rcpt_tos"] == ["support@example.com", "help@desk.example.org"]
    assert env["peer"].startswith("127.0.0.1:") and env["tls"] is False
    assert entry.meta["source"] == "smtp" and entry.meta["received_at"].endswith("+00:00")
