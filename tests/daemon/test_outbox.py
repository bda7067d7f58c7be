"""The outbox sender against real relays on loopback: RFC 5321 retry semantics (OUT-01, OUT-02)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from structlog.testing import capture_logs

from conftest import missing
from daemon.config_desk import OutboundConfig
from daemon.outbound import Outbound
from daemon.outbox import OutboxSender
from storage import outbox as box
from storage.engine import Database
from storage.models import OutboxMail

TRY_LATER = "451 4.3.0 try later"
NO_USER = "550 5.1.1 no such user"
HANG_UP = "hang up"  # take the message, then close the connection without a reply
SMTP_SINK = "/usr/sbin/smtp-sink"


class Clock:
    """A settable UTC clock: back-off is tested by moving it, never by sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    answered: bool  # False: the relay took the bytes but the client never heard so

    @property
    def message_id(self) -> str:
        return str(message_from_bytes(self.raw)["Message-ID"])


class FaultySink:
    """An aiosmtpd handler that answers scripted faults first, then accepts and records."""

    def __init__(self) -> None:
        self.rcpt_replies: list[str] = []  # one popped per RCPT while any are left
        self.data_replies: list[str] = []  # one popped per DATA: a reply, or HANG_UP
        self.received: list[Received] = []
        self.on_data: Callable[[], object] | None = None  # runs as each message arrives

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.received if r.answered]

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.on_data is not None:
            self.on_data()
        reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 queued"
        if reply.startswith(("4", "5")):
            return reply
        got = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, True)
        if reply == HANG_UP:
            got.answered = False
            self.received.append(got)
            assert server.transport is not None
            server.transport.close()  # the reply below is never written
            return "250 2.0.0 lost"
        self.received.append(got)
        return reply


class Relay(Controller):
    """A loopback aiosmtpd relay that counts the TCP connections made to it."""

    def __init__(self, handler: FaultySink, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        self.sink = handler
        self.connections = 0

    def factory(self) -> SMTP:
        self.connections += 1
        server: SMTP = super().factory()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it bare
        return server

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def relay() -> Iterator[Relay]:
    server = Relay(FaultySink())
    server.start()
    server.connections = 0  # start() connected once to check the listener
    yield server
    server.stop()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("sqlite:///" + str(tmp_path / "buzon.db"))
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_mail(n: int) -> bytes:
    return (
        f"From: Soporte <soporte@desk.example>\r\n"
        f"To: ana@cliente.example\r\n"
        f"Subject: [#{n}] Recibido\r\n"
        f"Message-ID: <out-{n}@desk.example>\r\n"
        f"\r\n"
        f"Hemos recibido su mensaje.\r\n"
        f".una linea con punto\r\n"
    ).encode()


def add_mail(db: Database, clock: Clock, n: int = 1, *, envelope_from: str = "") -> int:
    with db.transaction() as s:
        return box.enqueue(
            s,
            {
                "ticket_id": None,
                "kind": "ack",
                "recipient": f"ana{n}@cliente.example",
                "envelope_from": envelope_from,
                "message_id": f"<out-{n}@desk.example>",
                "subject": f"[#{n}] Recibido",
                "raw": raw_mail(n),
                "created_at": clock(),
                "due_at": clock(),
            },
        )


def row(db: Database, mail_id: int) -> OutboxMail:
    with db.transaction() as s:
        got = s.get(OutboxMail, mail_id)
        assert got is not None
        return got


def sender(db: Database, clock: Clock, relay: str, **cfg: Any) -> OutboxSender:
    base = OutboundConfig(relay=relay, timeout=5.0, retry_first=60.0, retry_max=3600.0)
    return OutboxSender(db, replace(base, **cfg), clock=clock, holder="test:1")


def once(s: OutboxSender) -> int:
    return asyncio.run(s.run_once())


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_out01_4xx_is_retried_with_growing_back_off_then_delivered_once(
    db: Database, clock: Clock, relay: Relay
) -> None:
    """OUT-01: three 451s mean retries 60, 120, 240 s apart, none early, then one delivery."""
    relay.sink.data_replies = [TRY_LATER] * 3
    mail_id = add_mail(db, clock)
    with capture_logs() as logs:
        out = sender(db, clock, relay.address)
        for attempt, gap in enumerate([60, 120, 240], start=1):
            assert once(out) == 1
            mail = row(db, mail_id)
            assert (mail.state, mail.attempts) == (box.PENDING, attempt)
            assert mail.due_at - clock() == timedelta(seconds=gap)
            assert mail.last_error == TRY_LATER
            connections = relay.connections
            clock.advance(gap - 1)  # one second early: nothing goes out
            assert once(out) == 0
            assert relay.connections == connections and relay.sink.received == []
            clock.advance(1)
        assert once(out) == 1
        clock.advance(6 * 3600)
        assert once(out) == 0
    mail = row(db, mail_id)
    assert (mail.state, mail.attempts, mail.sent_at) == (box.SENT, 4, clock() - timedelta(hours=6))
    assert (mail.claimed_by, mail.claimed_until) == ("", None)
    assert [r.raw for r in relay.sink.delivered] == [raw_mail(1)]
    assert [e["retry_in"] for e in events(logs, "outbox.retry")] == [60, 120, 240]
    [sent] = events(logs, "outbox.sent")
    assert sent["attempts"] == 4 and sent["message_id"] == "<out-1@desk.example>"
    assert sent["outbox_id"] == mail_id and sent["recipient"] == "ana1@cliente.example"
    assert out.stats.sent == 1 and out.stats.retried == 3 and out.stats.failed == 0


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_out02_5xx_fails_at_once_without_a_retry_storm(
    db: Database, clock: Clock, relay: Relay, stage: str
) -> None:
    """OUT-02: a 550 at RCPT or DATA fails the mail after one attempt; no later connection."""
    if stage == "rcpt":
        relay.sink.rcpt_replies = [NO_USER]
    else:
        relay.sink.data_replies = [NO_USER]
    mail_id = add_mail(db, clock)
    with capture_logs() as logs:
        out = sender(db, clock, relay.address)
        assert once(out) == 1
        for _ in range(3):
            clock.advance(6 * 3600)
            assert once(out) == 0
    mail = row(db, mail_id)
    assert (mail.state, mail.attempts, mail.last_error) == (box.FAILED, 1, NO_USER)
    assert relay.connections == 1 and relay.sink.received == []
    [failed] = events(logs, "outbox.failed")
    assert failed["code"] == 550 and failed["attempts"] == 1
    assert "550 5.1.1 no such user" in failed["fix"] and "buzon outbox retry" in failed["fix"]
    assert events(logs, "outbox.retry") == [] and out.stats.failed == 1


def test_disconnect_after_data_retries_with_the_same_bytes(
    db: Database, clock: Clock, relay: Relay
) -> None:
    """A connection lost after the final dot is ambiguous: retried with the same Message-ID."""
    relay.sink.data_replies = [HANG_UP]
    mail_id = add_mail(db, clock)
    with capture_logs() as logs:
        out = sender(db, clock, relay.address)
        assert once(out) == 1
        mail = row(db, mail_id)
        assert (mail.state, mail.attempts) == (box.PENDING, 1)
        clock.advance(60)
        assert once(out) == 1
    assert row(db, mail_id).state == box.SENT
    first, second = relay.sink.received
    assert (first.answered, second.answered) == (False, True)
    assert first.raw == second.raw == raw_mail(1)
    assert first.message_id == second.message_id == "<out-1@desk.example>"
    [retry] = events(logs, "outbox.retry")
    assert retry["ambiguous"] is True and retry["stage"] == "data"


def test_persistent_4xx_fails_after_max_attempts(db: Database, clock: Clock, relay: Relay) -> None:
    """A relay that defers RCPT forever ends the mail in failed after max_attempts, not never."""
    relay.sink.rcpt_replies = [TRY_LATER] * 10
    mail_id = add_mail(db, clock)
    with capture_logs() as logs:
        out = sender(db, clock, relay.address, max_attempts=3)
        for _ in range(5):
            once(out)
            clock.advance(3600)
    mail = row(db, mail_id)
    assert (mail.state, mail.attempts, mail.last_error) == (box.FAILED, 3, TRY_LATER)
    assert relay.connections == 3 and len(relay.sink.rcpt_replies) == 7
    assert len(events(logs, "outbox.retry")) == 2
    [failed] = events(logs, "outbox.failed")
    assert failed["attempts"] == 3 and "kept deferring" in failed["fix"]


def test_envelope_sender_null_or_bounce_address(db: Database, clock: Clock, relay: Relay) -> None:
    """An empty envelope_from goes out as MAIL FROM:<> (aiosmtpd reports "<>"); else as set."""
    add_mail(db, clock, 1)
    add_mail(db, clock, 2, envelope_from="bounces@desk.example")
    assert once(sender(db, clock, relay.address)) == 2
    envelopes = [(r.mail_from, r.rcpt_tos) for r in relay.sink.delivered]
    assert envelopes == [
        ("<>", ["ana1@cliente.example"]),
        ("bounces@desk.example", ["ana2@cliente.example"]),
    ]
    assert relay.connections == 1  # one connection carries the batch


class HangUp:
    """A listener that accepts and hangs up at once: a relay that dies before its greeting."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("down", ["refused", "hang-up"])
def test_relay_down_is_transient(db: Database, clock: Clock, down: str) -> None:
    """No relay: every row of the batch back to pending with back-off, after a single dial."""
    ids = [add_mail(db, clock, n) for n in (1, 2)]
    listener = HangUp() if down == "hang-up" else None
    port = listener.port if listener else free_port()
    try:
        with capture_logs() as logs:
            assert once(sender(db, clock, f"127.0.0.1:{port}")) == 2
    finally:
        if listener:
            listener.close()
    for mail_id in ids:
        mail = row(db, mail_id)
        assert (mail.state, mail.attempts) == (box.PENDING, 1)
        assert mail.due_at == clock() + timedelta(seconds=60)
        assert "connect" in mail.last_error.lower()
    if listener:
        assert listener.accepted == 1  # the second row was deferred without redialling
    retries = events(logs, "outbox.retry")
    assert [e["stage"] for e in retries] == ["connect", "connect"]
    assert "fix" in retries[0] and events(logs, "outbox.failed") == []


def test_tls_handshake_failure_is_transient(db: Database, clock: Clock, relay: Relay) -> None:
    """tls = "tls" against a plain-text relay fails the handshake: deferred, nothing sent."""
    mail_id = add_mail(db, clock)
    with capture_logs() as logs:
        assert once(sender(db, clock, relay.address, tls="tls")) == 1
    mail = row(db, mail_id)
    assert (mail.state, mail.attempts) == (box.PENDING, 1) and relay.sink.received == []
    [retry] = events(logs, "outbox.retry")
    assert retry["stage"] == "connect" and retry["ambiguous"] is False


def test_stale_sending_row_is_sent_once(db: Database, clock: Clock, relay: Relay) -> None:
    """A row leased by a sender that died is claimed again and sent once; a live lease is not."""
    stale, live = add_mail(db, clock, 1), add_mail(db, clock, 2)
    with db.transaction() as s:
        for mail_id, until in ((stale, -60), (live, 240)):
            mail = s.get(OutboxMail, mail_id)
            assert mail is not None
            mail.state, mail.claimed_by = box.SENDING, "crashed:99"
            mail.claimed_until = clock() + timedelta(seconds=until)
    with capture_logs() as logs:
        out = sender(db, clock, relay.address)
        assert once(out) == 1
        assert once(out) == 0
    assert row(db, stale).state == box.SENT and row(db, live).state == box.SENDING
    assert [r.message_id for r in relay.sink.delivered] == ["<out-1@desk.example>"]
    [reclaimed] = events(logs, "outbox.reclaimed")
    assert reclaimed["previous_holder"] == "crashed:99" and reclaimed["outbox_id"] == stale


def test_a_restarted_instance_takes_back_its_own_rows_at_once(
    db: Database, clock: Clock, relay: Relay
) -> None:
    """The instance's name survives its restart (``daemon.instance``): the rows it had
    claimed when it died are sent again at its first pass, not after their 300 s lease;
    another holder's live lease is left alone, and a sender of a per-process name takes
    nothing back."""
    mine, theirs = add_mail(db, clock, 1), add_mail(db, clock, 2)
    with db.transaction() as s:
        for mail_id, holder in ((mine, "desk-1:abc"), (theirs, "desk-2:def")):
            mail = s.get(OutboxMail, mail_id)
            assert mail is not None
            mail.state, mail.claimed_by = box.SENDING, holder
            mail.claimed_until = clock() + timedelta(seconds=240)
    base = OutboundConfig(relay=relay.address, timeout=5.0)
    plain = OutboxSender(db, base, clock=clock, holder="desk-1:abc")
    assert once(plain) == 0  # take_back off: a live lease, even under its own name
    restarted = OutboxSender(db, base, clock=clock, holder="desk-1:abc", take_back=True)
    stop = asyncio.Event()

    async def one_pass() -> None:
        task = asyncio.create_task(restarted.run(stop, poll=0.05))
        await asyncio.sleep(0.5)
        stop.set()
        await task

    with capture_logs() as logs:
        asyncio.run(one_pass())
    assert row(db, mine).state == box.SENT and row(db, theirs).state == box.SENDING
    assert [r.message_id for r in relay.sink.delivered] == ["<out-1@desk.example>"]
    [taken] = events(logs, "outbox.taken_back")
    assert taken["rows"] == 1
    [reclaimed] = events(logs, "outbox.reclaimed")
    assert reclaimed["previous_holder"] == "desk-1:abc"


def test_a_lost_lease_is_not_overwritten(db: Database, clock: Clock, relay: Relay) -> None:
    """When another sender took the row over mid-send, this sender leaves the row to it."""
    mail_id = add_mail(db, clock)

    def take_over() -> None:
        with db.transaction() as s:
            mail = s.get(OutboxMail, mail_id)
            assert mail is not None
            mail.claimed_by = "other:2"

    relay.sink.on_data = take_over
    with capture_logs() as logs:
        out = sender(db, clock, relay.address)
        assert once(out) == 1
    mail = row(db, mail_id)
    assert (mail.state, mail.claimed_by, mail.attempts) == (box.SENDING, "other:2", 0)
    assert len(events(logs, "outbox.lease_lost")) == 1 and out.stats.sent == 0


def test_rows_whose_lease_ran_low_are_handed_back(db: Database, clock: Clock, relay: Relay) -> None:
    """A batch slowed past half its lease returns its unsent rows to pending, due as before."""
    ids = [add_mail(db, clock, n) for n in (1, 2, 3)]
    relay.sink.on_data = lambda: clock.advance(200)  # lease 300 s: 100 s left < the 150 s budget
    assert once(sender(db, clock, relay.address)) == 1
    states = [(row(db, i).state, row(db, i).claimed_by) for i in ids]
    assert states == [(box.SENT, ""), (box.PENDING, ""), (box.PENDING, "")]
    assert row(db, ids[1]).due_at == clock() - timedelta(seconds=200)
    assert [r.message_id for r in relay.sink.delivered] == ["<out-1@desk.example>"]


def test_no_relay_sends_nothing_and_says_so_once(db: Database, clock: Clock) -> None:
    """Without [outbound] relay mail stays pending and outbox.no_relay is logged once."""
    mail_id = add_mail(db, clock)
    with capture_logs() as logs:
        out = OutboxSender(db, OutboundConfig(), clock=clock)
        assert once(out) == 0 and once(out) == 0
    mail = row(db, mail_id)
    assert (mail.state, mail.attempts) == (box.PENDING, 0)
    [warning] = events(logs, "outbox.no_relay")
    assert warning["log_level"] == "warning" and 'relay = "host:port"' in warning["fix"]


def test_unreadable_password_file_keeps_mail_pending(
    db: Database, clock: Clock, relay: Relay, tmp_path: Path
) -> None:
    """A missing password file is a configuration error: no dial, nothing failed, logged once."""
    mail_id = add_mail(db, clock)
    missing = str(tmp_path / "nope")
    with capture_logs() as logs:
        out = sender(db, clock, relay.address, username="desk", password_file=missing)
        assert once(out) == 0 and once(out) == 0
    mail = row(db, mail_id)
    assert (mail.state, mail.attempts) == (box.PENDING, 0) and relay.connections == 0
    [error] = events(logs, "outbox.config_error")
    assert "password_file" in error["fix"] and missing in error["error"]


@pytest.mark.parametrize(("secret", "state"), [("s3cret\n", box.SENT), ("wrong", box.PENDING)])
def test_login_with_the_password_file(
    db: Database, clock: Clock, tmp_path: Path, secret: str, state: str
) -> None:
    """The stripped password file logs in; a refused login (535) defers, never fails the mail."""
    tried: list[bytes] = []

    def check(server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        tried.append(data.password)
        return AuthResult(success=data.password == b"s3cret", handled=False)

    server = Relay(FaultySink(), authenticator=check, auth_require_tls=False)
    server.start()
    try:
        (tmp_path / "pw").write_text(secret)
        mail_id = add_mail(db, clock)
        cfg = {"username": "desk", "password_file": str(tmp_path / "pw")}
        with capture_logs() as logs:
            once(sender(db, clock, server.address, **cfg))
    finally:
        server.stop()
    assert tried and set(tried) == {secret.strip().encode()}  # aiosmtplib tries each mechanism
    assert row(db, mail_id).state == state
    assert len(server.sink.delivered) == (state == box.SENT)
    if state == box.PENDING:
        [retry] = events(logs, "outbox.retry")
        assert retry["stage"] == "connect" and retry["code"] == 535
    assert not any("s3cret" in str(v) or "wrong" in str(v) for e in logs for v in e.values())


def test_wake_starts_a_pass_before_the_poll_interval(
    db: Database, clock: Clock, relay: Relay
) -> None:
    """run() sleeps for poll seconds, but wake() from another thread sends new mail at once."""

    async def main() -> float:
        out = sender(db, clock, relay.address)
        stop = asyncio.Event()
        task = asyncio.create_task(out.run(stop, poll=60.0))
        await asyncio.sleep(0.2)  # the first pass found nothing; run() now waits
        started = time.monotonic()
        await asyncio.to_thread(add_mail, db, clock)
        threading.Thread(target=out.wake).start()
        while not relay.sink.delivered and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(main()) < 5
    assert len(relay.sink.delivered) == 1


def test_delivery_to_postfix_smtp_sink(db: Database, clock: Clock, tmp_path: Path) -> None:
    """A real MTA sink receives the bytes with the null reverse-path on the wire."""
    if not os.path.exists(SMTP_SINK):
        missing("Postfix smtp-sink (Debian package postfix)")
    port = free_port()
    dump = tmp_path / "dump"
    user = ["-u", "root"] if os.geteuid() == 0 else []
    argv = [SMTP_SINK, *user, "-d", f"{dump}/m.", f"127.0.0.1:{port}", "10"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port)
        mail_id = add_mail(db, clock)
        assert once(sender(db, clock, f"127.0.0.1:{port}")) == 1
        deadline = time.monotonic() + 5
        while not (dump.is_dir() and any(dump.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(5)
        assert proc.stderr is not None
        proc.stderr.close()
    assert row(db, mail_id).state == box.SENT
    [dumped] = [p.read_bytes() for p in dump.iterdir()]
    assert b"X-Mail-Args: <>\n" in dumped and b"X-Rcpt-Args: <ana1@cliente.example>\n" in dumped
    assert raw_mail(1).replace(b"\r\n", b"\n") in dumped


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def queue_spec(db: Database, clock: Clock, outbound: Outbound, n: int) -> int:
    """A row queued as the daemon queues it: a spec, composed by the sender at its claim."""
    with db.transaction() as s:
        return box.enqueue(
            s,
            outbound.row(
                s,
                ticket_id=None,
                ref=f"B-{n}",
                subject="La web no carga",
                language="es",
                kind="ack",
                now=clock(),
                values={"respond_by": "mañana", "calendar_note": ""},
                to=f"ana{n}@cliente.example",
            ),
        )


def test_a_queued_spec_is_composed_once_and_retried_with_the_same_bytes(
    db: Database, clock: Clock, relay: Relay
) -> None:
    """Composed at the first claim and kept: the retry after a 4xx sends identical bytes,
    and a row whose spec cannot be composed fails, says why, and holds back nothing."""
    s = sender(db, clock, relay.address, from_address="soporte@example.com")
    outbound = Outbound(s.cfg)
    good, bad = queue_spec(db, clock, outbound, 1), queue_spec(db, clock, outbound, 2)
    with db.transaction() as t:
        broken = t.get(OutboxMail, bad)
        assert broken is not None and broken.spec is not None and broken.raw is None
        broken.spec = {**broken.spec, "values": {}}  # a template value went missing
    relay.sink.data_replies = ["451 4.3.0 try later"]
    with capture_logs() as logs:
        assert once(s) == 1
    first = row(db, good)
    assert first.state == "pending" and first.raw is not None and first.subject.startswith("[B-1]")
    failed = row(db, bad)
    assert failed.state == "failed" and "cannot compose" in failed.last_error
    assert "missing values" in events(logs, "outbox.failed")[0]["error"]
    clock.advance(61)
    assert once(s) == 1
    assert [r.raw for r in relay.sink.delivered] == [first.raw]
    assert row(db, good).state == "sent"
