"""The daemon pulling from a real Dovecot: crashes, the corpus, SMTP+IMAP twins, the CLI."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError

from conftest import corpus_files
from support.daemon import Daemon, wait_until
from support.dovecot import Dovecot
from support.imaptest import NONCE, PASSWORD_ENV
from support.invariants import assert_invariants
from support.mail import crlf, message, send


def imap_extra(port: int, **keys: str) -> str:
    lines = [
        "[[imap]]",
        'name = "support"',
        'host = "127.0.0.1"',
        f"port = {port}",
        'security = "none"',
        'username = "support"',
        f'password_env = "{PASSWORD_ENV}"',
        "timeout = 5.0",
        "poll_interval = 0.5",
    ]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def db_nonces(d: Daemon) -> Counter[str]:
    counts: Counter[str] = Counter()
    with sqlite3.connect(d.config.parent / "buzon.db") as conn:
        for (raw,) in conn.execute("SELECT raw FROM messages"):
            counts.update(n.decode() for n in NONCE.findall(raw))
    return counts


def durable_nonces(d: Daemon) -> set[str]:
    """Nonces that are durable: in the database or in a spool file."""
    found = set(db_nonces(d))
    spool = d.config.parent / "spool"
    for sub in ("new", "cur", "bad"):
        for name in os.listdir(spool / sub):
            found.update(n.decode() for n in NONCE.findall((spool / sub / name).read_bytes()))
    return found


def handled_nonces(server: Dovecot, after: str) -> set[str]:
    """Nonces the daemon has acted on at the server: \\Seen in INBOX (``after = "seen"``),
    or anywhere in the folder of ``after = "move:<folder>"``."""
    folder = after[5:] if after.startswith("move:") else "INBOX"
    with server.session("support") as c:
        c.select_folder(folder, readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (X-NONCE)]"]) if uids else {}
    out = set()
    for item in data.values():
        if folder != "INBOX" or b"\\Seen" in item[b"FLAGS"]:
            header = next(v for k, v in item.items() if k.startswith(b"BODY"))
            out.update(n.decode() for n in NONCE.findall(header))
    return out


def _append_all(server: Dovecot, raws: list[bytes], pace: float = 0.0) -> None:
    """APPEND ``raws`` over one IMAP session (a new one after an error), ``pace`` s apart."""
    pending = list(raws)
    while pending:
        try:
            with server.session("support") as c:
                while pending:
                    c.append("INBOX", pending[0])
                    pending.pop(0)
                    if pace:
                        time.sleep(pace)
        except (OSError, IMAPClientError):
            time.sleep(0.2)


_SOAK = [pytest.mark.soak, pytest.mark.timeout(3600)]


@pytest.mark.parametrize(
    ("total", "preloaded", "kills", "after"),
    [
        pytest.param(150, 0, 5, "seen", id="bounded"),
        pytest.param(60, 0, 3, "move:Processed", id="bounded-move"),
        pytest.param(3000, 1500, 30, "seen", id="full", marks=_SOAK),
        pytest.param(3000, 1500, 30, "move:Processed", id="full-move", marks=_SOAK),
    ],
)
def test_dur02_kill9_while_fetching_a_growing_mailbox(
    dovecot: Dovecot,
    daemon_factory: Callable[..., Daemon],
    total: int,
    preloaded: int,
    kills: int,
    after: str,
) -> None:
    """DUR-02: kill -9 the daemon (its IMAP worker) repeatedly while a mailbox of ``total``
    messages (``preloaded`` of them there from the start) is fetched and appended to: at
    every kill, each message flagged \\Seen or moved on the server is already durable; at
    the end every message is stored exactly once, all were flagged or moved, and
    ``buzon verify`` finds nothing."""
    nonces = [uuid.uuid4().hex for _ in range(total)]
    raws = [message(f"dur02 {n[:6]}", nonce=n) for n in nonces]
    if after.startswith("move:"):
        dovecot.create_folder("support", after[5:])
    _append_all(dovecot, raws[:preloaded])
    extra = imap_extra(dovecot.port, after=f'"{after}"', batch_size="7")
    d = daemon_factory("dur02", extra=extra)
    rng = random.Random(3)
    delays = [rng.uniform(1.0, 3.0) for _ in range(kills)]
    # The rest arrives while the kills happen, spread over most of that time.
    pace = 0.75 * sum(delays) / max(1, total - preloaded)
    feeder = threading.Thread(target=_append_all, args=(dovecot, raws[preloaded:], pace))
    feeder.start()
    try:
        for delay in delays:
            time.sleep(delay)
            d.kill()
            acted = handled_nonces(dovecot, after)
            assert acted <= durable_nonces(d), f"{after}: done on the server before durable"
            d.start()
    finally:
        feeder.join()
    _wait_all_stored(d, set(nonces))
    assert d.stop() == 0
    assert db_nonces(d) == dict.fromkeys(nonces, 1)
    assert handled_nonces(dovecot, after) == set(nonces)
    if after.startswith("move:"):
        assert not dovecot.uids("support", "INBOX")
    assert_invariants(d.config)


def _wait_all_stored(d: Daemon, nonces: set[str], stall: float = 120.0) -> None:
    """Wait while the daemon keeps storing; fail, saying where things stand, when every
    nonce is not stored and no new one has been for ``stall`` seconds."""
    stored: set[str] = set()
    last_progress = time.monotonic()
    while not nonces <= stored:
        now = set(db_nonces(d))
        if len(now) > len(stored):
            last_progress = time.monotonic()
        stored = now
        if time.monotonic() - last_progress > stall:
            spool = d.config.parent / "spool"
            queued = {sub: len(os.listdir(spool / sub)) for sub in ("new", "cur", "bad")}
            recent = [e.get("event") for e in list(d.events)[-15:]]
            raise AssertionError(
                f"{len(nonces - stored)} of {len(nonces)} messages not stored and none for "
                f"{stall:g} s; spool {queued}; last events {recent}"
            )
        time.sleep(1.0)


def test_a_restarted_daemon_takes_its_folders_back_at_once_and_a_second_is_refused(
    dovecot: Dovecot, daemon_factory: Callable[..., Daemon]
) -> None:
    """A daemon killed -9 and restarted on its spool is the same lease holder: it fetches
    again within seconds, not after its dead lease's 60 s. A second ``buzon run`` on the
    same spool while one runs refuses to start, naming the pid that holds it."""
    d = daemon_factory("again", extra=imap_extra(dovecot.port, after='"seen"', lease="60"))
    first = [uuid.uuid4().hex for _ in range(3)]
    _append_all(dovecot, [message("antes", nonce=n) for n in first])
    wait_until(lambda: set(first) <= set(db_nonces(d)), 30, what="the first mail stored")
    assert d.proc is not None
    holder_pid = d.proc.pid
    second = Daemon(d.config, d.port).start(wait_ready=False)
    assert second.wait(30) == 1
    failed = [e for e in second.events if e.get("event") == "daemon.failed"]
    assert failed and f"another buzon run (pid {holder_pid})" in failed[0]["error"], failed
    d.kill()
    d.start()
    started = time.monotonic()
    later = [uuid.uuid4().hex for _ in range(3)]
    _append_all(dovecot, [message("después", nonce=n) for n in later])
    wait_until(lambda: set(later) <= set(db_nonces(d)), 20, what="mail after the restart")
    assert time.monotonic() - started < 20
    assert d.stop() == 0
    assert db_nonces(d) == dict.fromkeys(first + later, 1)


def test_corpus_appended_to_dovecot_is_ingested_byte_exact(
    corpus: Path, dovecot: Dovecot, daemon_factory: Callable[..., Daemon]
) -> None:
    """Every corpus file APPENDed to a Dovecot folder is stored with exactly the bytes the
    server holds: the bytes appended (CRLF, as IMAP carries them), except that an IMAP
    literal cannot carry NUL, which Dovecot turns into 0x80 on APPEND."""
    files = corpus_files(corpus)
    for f in files:
        dovecot.append("support", "INBOX", crlf(f.read_bytes()))
    d = daemon_factory("corpus", extra=imap_extra(dovecot.port, batch_size="25"))
    wait_until(
        lambda: d.processed() >= len(files),
        240,
        interval=0.5,
        what="every corpus message processed",
    )
    assert d.stop() == 0
    with sqlite3.connect(d.config.parent / "buzon.db") as conn:
        kept = {bytes(raw) for (raw,) in conn.execute("SELECT raw FROM messages")}
        kept |= {
            bytes(raw)
            for (raw,) in conn.execute("SELECT raw FROM deliveries WHERE raw IS NOT NULL")
        }
    held = [dovecot.fetch("support", "INBOX", uid) for uid in dovecot.uids("support", "INBOX")]
    assert [raw for raw in held if raw not in kept] == []
    altered = [f.name for f in files if crlf(f.read_bytes()) not in held]
    assert all(
        b"\x00" in (f.parent / name).read_bytes()
        for f in files
        for name in altered
        if f.name == name
    )
    assert len(altered) <= 2  # mail_malformed_3 and mail_outlook_1 carry NUL bytes


def test_same_message_by_smtp_and_imap_is_one_message(
    dovecot: Dovecot, daemon_factory: Callable[..., Daemon]
) -> None:
    """A message delivered by SMTP and also found in the IMAP mailbox (with the headers
    the mail server added) is one message with two deliveries."""
    d = daemon_factory("twins", extra=imap_extra(dovecot.port))
    nonce = uuid.uuid4().hex
    raw = message("gemelos", nonce=nonce)
    send(d.port, raw)
    dovecot.append(
        "support",
        "INBOX",
        b"Return-Path: <ana@cliente.es>\r\nDelivered-To: support@example.com\r\n" + raw,
    )
    wait_until(lambda: d.count("message.duplicate") == 1, 30, what="the twin recognised")
    assert d.stop() == 0
    assert db_nonces(d) == {nonce: 1}
    with sqlite3.connect(d.config.parent / "buzon.db") as conn:
        sources = sorted(s for (s,) in conn.execute("SELECT source FROM deliveries"))
    assert sources == ["imap:support/INBOX", "smtp"]


def test_ingest_imap_once_and_status(
    dovecot: Dovecot, daemon_factory: Callable[..., Daemon]
) -> None:
    """`buzon ingest --imap NAME --once` fetches and tickets what is there, a second run
    finds nothing new, and `buzon status` shows the folder's checkpoint."""
    nonces = []
    for _ in range(3):
        nonce = uuid.uuid4().hex
        dovecot.append("support", "INBOX", message("una vez", nonce=nonce))
        nonces.append(nonce)
    d = daemon_factory("once", extra=imap_extra(dovecot.port), start=False)
    first = json.loads(d.cli("ingest", "--imap", "support", "--once", "--json").stdout)
    assert first["ingested"] == 3 and first["failed"] == 0
    second = json.loads(d.cli("ingest", "--imap", "support", "--once", "--json").stdout)
    assert second["ingested"] == 0
    status = json.loads(d.cli("status", "--json").stdout)
    (folder,) = status["imap"]
    assert (folder["account"], folder["folder"], folder["state"]) == ("support", "INBOX", "ok")
    assert folder["last_uid"] == max(dovecot.uids("support", "INBOX"))
    assert db_nonces(d) == dict.fromkeys(nonces, 1)
    wrong = d.cli("ingest", "--imap", "nope", "--once", check=False)
    assert wrong.returncode == 2 and "no [[imap]] account named 'nope'" in wrong.stderr


def test_ingest_imap_since_imports_history_marked_as_backfill(
    dovecot: Dovecot, daemon_factory: Callable[..., Daemon]
) -> None:
    """`--since DATE` imports only mail that arrived on or after DATE, and marks its
    spool entries as backfill so no acknowledgement will be sent for it."""
    old_nonce, new_nonce = uuid.uuid4().hex, uuid.uuid4().hex
    dovecot.append(
        "support",
        "INBOX",
        message("vieja", nonce=old_nonce),
        msg_time=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    )
    dovecot.append(
        "support",
        "INBOX",
        message("nueva", nonce=new_nonce),
        msg_time=datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
    )
    d = daemon_factory("since", extra=imap_extra(dovecot.port), start=False)
    out = json.loads(
        d.cli("ingest", "--imap", "support", "--once", "--since", "2026-01-01", "--json").stdout
    )
    assert out["ingested"] == 1
    assert db_nonces(d) == {new_nonce: 1}
    with sqlite3.connect(d.config.parent / "buzon.db") as conn:
        (envelope,) = conn.execute("SELECT envelope FROM deliveries").fetchone()
    assert json.loads(envelope)["imap"]["folder"] == "INBOX"
    assert json.loads(envelope)["backfill"] is True
    bad = d.cli("ingest", "--imap", "support", "--once", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "use a date like" in bad.stderr
