"""The IMAP test harness itself: a real Dovecot on loopback and the fault proxy.

These pin that the harness is real (bytes go through Dovecot unchanged) and
that each fault the IMAP-* battery relies on actually happens: a paused server
(IMAP-02), a UIDVALIDITY change (IMAP-03), a connection cut mid-FETCH (IMAP-01)
and a hung connection (IMAP-02).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from support.daemon import wait_until
from support.dovecot import Dovecot, require_dovecot, running_dovecot
from support.tcpproxy import TcpProxy

USER = "support"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    """A private Dovecot with the default ``support``/``secret`` user."""
    require_dovecot()
    with running_dovecot(tmp_path) as server:
        yield server


@pytest.fixture
def proxy(dovecot: Dovecot) -> Iterator[TcpProxy]:
    """A fault proxy in front of ``dovecot``."""
    with TcpProxy(dovecot.host, dovecot.port) as p:
        yield p


def message(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: Customer <customer@example.net>\r\n"
        b"To: help@desk.example.org\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Message-ID: <" + subject.replace(" ", "-").encode() + b"@example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + body
    )


def big_message(size: int = 200_000) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    return message("big one", line * (size // len(line)))


def login(host: str, port: int, timeout: float = 5.0) -> IMAPClient:
    client = IMAPClient(host, port, ssl=False, timeout=timeout)
    client.login(USER, "secret")
    return client


def fetch_body(client: IMAPClient, uid: int) -> bytes:
    client.select_folder("INBOX", readonly=True)
    body: bytes = client.fetch([uid], [b"BODY.PEEK[]"])[uid][b"BODY[]"]
    return body


def test_append_and_fetch_are_byte_exact(dovecot: Dovecot) -> None:
    """A CRLF message with 8-bit bytes APPENDed to Dovecot FETCHes back byte for byte."""
    raw = message("byte exact", "Grüße, ñandú — ünïcödé\r\n".encode() + b"\xff\xfe raw\r\n")
    uid = dovecot.append(USER, "INBOX", raw, flags=["\\Seen"])

    assert dovecot.uids(USER, "INBOX") == [uid]
    assert dovecot.flags(USER, "INBOX", uid) == {"\\Seen"}
    with login(dovecot.host, dovecot.port) as client:
        assert fetch_body(client, uid) == raw
    assert dovecot.fetch(USER, "INBOX", uid) == raw


def test_folders_and_second_user_are_separate(tmp_path: Path) -> None:
    """Extra users get their own mailboxes; create_folder makes a selectable folder."""
    require_dovecot()
    with running_dovecot(tmp_path, users={"support": "secret", "sales": "s3cret"}) as server:
        server.create_folder("sales", "Archive")
        uid = server.append("sales", "Archive", message("for sales"))
        assert server.uids("sales", "Archive") == [uid]
        assert server.uids("sales", "INBOX") == []
        assert server.uids("support", "INBOX") == []


def test_pause_makes_login_time_out_and_resume_recovers(dovecot: Dovecot) -> None:
    """pause() leaves the port accepting but silent; resume() makes logins work again."""
    dovecot.pause()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        login(dovecot.host, dovecot.port, timeout=1.0)
    assert time.monotonic() - started < 3.0

    dovecot.resume()
    with login(dovecot.host, dovecot.port) as client:
        assert client.noop()


def test_restart_and_kill_keep_port_and_mail(dovecot: Dovecot) -> None:
    """restart() and kill() + start() come back on the same port with the mail intact."""
    port = dovecot.port
    uid = dovecot.append(USER, "INBOX", message("survives"))

    dovecot.kill()
    assert not dovecot.running
    dovecot.start()
    assert dovecot.port == port
    assert dovecot.uids(USER, "INBOX") == [uid]

    dovecot.restart()
    assert dovecot.port == port
    assert dovecot.uids(USER, "INBOX") == [uid]


def test_reset_uidvalidity_keeps_messages(dovecot: Dovecot) -> None:
    """reset_uidvalidity() raises UIDVALIDITY and keeps the messages (and UIDs unless renumber)."""
    dovecot.create_folder(USER, "Support")
    raws = [message(f"keep {i}") for i in range(3)]
    uids = [dovecot.append(USER, "Support", raw) for raw in raws]
    before = dovecot.uidvalidity(USER, "Support")

    new = dovecot.reset_uidvalidity(USER, "Support")
    assert new > before
    assert dovecot.uidvalidity(USER, "Support") == new
    assert dovecot.uids(USER, "Support") == uids


def test_reset_uidvalidity_renumber_gives_new_uids(dovecot: Dovecot) -> None:
    """With renumber=True the same bytes and flags come back under new UIDs, even in INBOX."""
    raws = [message(f"renumber {i}") for i in range(3)]
    uids = [dovecot.append(USER, "INBOX", raw, flags=["\\Flagged"]) for raw in raws]
    before = dovecot.uidvalidity(USER, "INBOX")

    assert dovecot.reset_uidvalidity(USER, "INBOX", renumber=True) > before
    new_uids = dovecot.uids(USER, "INBOX")
    assert len(new_uids) == len(uids)
    assert not set(new_uids) & set(uids)
    assert [dovecot.fetch(USER, "INBOX", u) for u in new_uids] == raws
    assert all(dovecot.flags(USER, "INBOX", u) == {"\\Flagged"} for u in new_uids)


def test_proxy_passes_a_fetch_through(dovecot: Dovecot, proxy: TcpProxy) -> None:
    """Through the proxy a 200 KB FETCH arrives intact and each connection is counted."""
    raw = big_message()
    uid = dovecot.append(USER, "INBOX", raw)

    for expected in (1, 2):
        with login(proxy.host, proxy.port) as client:
            assert fetch_body(client, uid) == raw
        assert proxy.accepted == expected
    assert proxy.bytes_to_client > 2 * len(raw)
    wait_until(lambda: proxy.live == 0, timeout=5, what="proxied connections closed")


def test_cut_after_bytes_breaks_a_fetch_mid_response(dovecot: Dovecot, proxy: TcpProxy) -> None:
    """cut_after_bytes() kills the connection inside a FETCH literal; the next one works."""
    raw = big_message()
    uid = dovecot.append(USER, "INBOX", raw)
    proxy.cut_after_bytes(50_000)  # greeting + login + select are ~1 KB; the body 200 KB

    client = login(proxy.host, proxy.port)
    try:
        with pytest.raises((IMAPClientAbortError, OSError)):
            fetch_body(client, uid)
    finally:
        client.shutdown()
    assert proxy.cuts == 1
    assert not proxy.cut_pending
    assert proxy.bytes_to_client == 50_000  # exactly n bytes, well inside the literal

    with login(proxy.host, proxy.port) as client:
        assert fetch_body(client, uid) == raw
    assert proxy.accepted == 2


def test_cut_all_closes_live_connections(dovecot: Dovecot, proxy: TcpProxy) -> None:
    """cut_all() drops every live session: the next command fails, a new login works."""
    client = login(proxy.host, proxy.port)
    try:
        wait_until(lambda: proxy.live == 1, timeout=5, what="one live connection")
        proxy.cut_all()
        with pytest.raises((IMAPClientError, OSError)):
            client.noop()
    finally:
        client.shutdown()
    assert proxy.live == 0
    with login(proxy.host, proxy.port) as again:
        assert again.noop()


def test_hang_makes_reads_time_out(dovecot: Dovecot, proxy: TcpProxy) -> None:
    """hang() silences live and new connections without closing them; unhang() recovers."""
    client = login(proxy.host, proxy.port, timeout=1.0)
    try:
        proxy.hang()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.noop()
        assert time.monotonic() - started < 3.0
        with pytest.raises(TimeoutError):
            login(proxy.host, proxy.port, timeout=1.0)
        assert proxy.live == 2  # hung, not closed
    finally:
        client.shutdown()

    proxy.unhang()
    with login(proxy.host, proxy.port) as again:
        assert again.noop()


def test_stop_joins_threads_even_while_hung(dovecot: Dovecot, proxy: TcpProxy) -> None:
    """stop() closes hung live connections and joins every proxy thread."""
    client = login(proxy.host, proxy.port)
    try:
        proxy.hang()
        proxy.stop()
    finally:
        client.shutdown()
    prefix = f"tcpproxy-{proxy.port}"
    assert not [t for t in threading.enumerate() if t.name.startswith(prefix)]
    assert proxy.live == 0


def test_missing_dovecot_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a dovecot binary the IMAP tests are skipped locally but fail under CI."""
    monkeypatch.setattr("support.dovecot.dovecot_binary", lambda: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        require_dovecot()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_dovecot()
    assert os.environ.get("CI") is None
