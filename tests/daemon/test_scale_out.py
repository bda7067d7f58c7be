"""Scale-out (issue 8): three instances on one PostgreSQL database lose and repeat nothing.

Three real ``buzon run`` subprocesses share one database, each with its own SMTP port and
spool, all fetching one Dovecot mailbox, and deliver acknowledgements to one relay.
Mail arrives by SMTP (spread over the three; a refused message is retried, unchanged,
on the next instance, as an MTA does) and by IMAP, while one instance, the one fetching
the mailbox when the first kill comes, is killed -9 and restarted twice.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from conftest import missing
from support.cluster import Instance, Mta, relay_sink, wait_for
from support.daemon import free_port, write_config
from support.dovecot import dovecot_binary, running_dovecot
from support.imaptest import NONCE, PASSWORD_ENV
from support.invariants import assert_invariants
from support.mail import crlf, message

IMAP_SOURCE = "imap:support/INBOX"
# Invented words: real vocabulary overlaps so much between messages that triage links
# them all into one incident ("falla masiva"); these keep every message a matter of its own.
SYLLABLES = [c + v for c in "bcdfglmnprstvz" for v in "aeiou"]


@dataclass(frozen=True)
class Load:
    smtp: int  # messages sent over SMTP, spread over the three instances
    imap: int  # messages appended to the shared mailbox meanwhile
    clients: int  # parallel SMTP clients
    rate: float | None  # new SMTP messages a second at most (None: as fast as they go)
    kills: tuple[float, ...]  # kill -9 + restart when this share of the SMTP mail is in
    leases: tuple[timedelta, timedelta] | None  # (IMAP folder, outbox row); None: the daemon's
    drain: float  # seconds allowed after the load for every message, ticket and ack


# Bounded: paced so that the load outlasts both kills (a restart takes 4-10 s on two cores),
# with `[[imap]] lease` and `[outbound] lease` short enough that a dead instance's mailbox and
# mail are taken over at once.
BOUNDED = Load(300, 100, 6, 12.0, (0.2, 0.6), (timedelta(seconds=4), timedelta(seconds=8)), 120)
# Full: the daemon's own leases (60 s, 5 min); paced too, or the clients are done (about
# 110 messages a second) before the victim is back from its first restart.
FULL = Load(3000, 1000, 12, 40.0, (0.2, 0.6), None, 1500)


def matter(rng: random.Random, channel: str, i: int) -> tuple[str, str, bytes]:
    """A new matter from a customer of its own: (nonce, sender, raw)."""
    nonce = uuid.uuid4().hex
    sender = f"{channel}{i}@empresa-{channel}{i}.es"

    def words(n: int) -> str:
        return " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(3, 4))) for _ in range(n))

    subject = words(4)
    body = f"Hola,\n{words(14)}.\n"
    return nonce, sender, message(subject, sender=sender, body=body, nonce=nonce)


def imap_account(port: int, lease: timedelta | None) -> str:
    return f"""
[[imap]]
name = "support"
host = "127.0.0.1"
port = {port}
security = "none"
username = "support"
password_env = "{PASSWORD_ENV}"
timeout = 5.0
poll_interval = 0.5
{f"lease = {lease.total_seconds()}" if lease else ""}
"""


def outbound(port: int, lease: timedelta | None) -> str:
    # A sender's attempt gets half its lease, so a short lease needs a short timeout.
    short = f"lease = {lease.total_seconds()}\ntimeout = {lease.total_seconds() / 2}\n"
    return f'[outbound]\nrelay = "127.0.0.1:{port}"\n' + (short if lease else "")


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = create_engine(pg_url)
    try:
        yield eng
    finally:
        eng.dispose()


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)))


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def spool_files(d: Instance) -> dict[str, list[str]]:
    root = d.config.parent / "spool"
    return {sub: os.listdir(root / sub) for sub in ("tmp", "new", "cur", "bad")}


def lease_holder(engine: Engine, instances: list[Instance]) -> Instance | None:
    """The running instance that holds the mailbox's lease now: the holder is the
    instance's name, ``<host>:<the id in its spool's instance-id>`` (daemon.instance)."""
    holder = scalar(engine, "SELECT holder FROM imap_folders") or ""
    for d in instances:
        ident = d.config.parent / "spool" / "instance-id"
        running = d.proc is not None and d.proc.poll() is None
        if running and ident.exists() and holder.endswith(":" + ident.read_text().strip()):
            return d
    return None


def crash(d: Instance) -> None:
    """kill -9 the instance: the daemon and its ingest process at the same moment."""
    ingest = [e["pid"] for e in list(d.events) if e.get("event") == "ingest.started"]
    d.kill()
    for pid in ingest:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "load",
    [
        pytest.param(BOUNDED, id="bounded"),
        pytest.param(FULL, id="full", marks=[pytest.mark.soak, pytest.mark.timeout(3600)]),
    ],
)
def test_three_instances_one_killed_twice_store_ticket_and_ack_exactly_once(
    load: Load,
    pg_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 8: SMTP mail spread over three instances and IMAP mail from one shared
    mailbox, with one instance killed -9 and restarted twice, is stored, ticketed and
    acknowledged exactly once: one message row per nonce (a re-delivery is recorded as a
    duplicate delivery of it), one ticket per message, one acknowledgement row per ticket,
    each delivered to the relay (a repeat only for a send its dead sender left unsettled),
    and every spool empty."""
    if dovecot_binary() is None:
        missing("dovecot (Debian package dovecot-imapd)")
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    rng = random.Random(8)
    smtp_work = [matter(rng, "smtp", i) for i in range(load.smtp)]
    imap_work = [matter(rng, "imap", i) for i in range(load.imap)]
    began = time.monotonic()
    with running_dovecot(tmp_path) as server, relay_sink() as (sink, relay_port):
        instances = [
            Instance(
                write_config(
                    tmp_path / name,
                    port := free_port(),
                    database=pg_url,
                    extra=imap_account(server.port, load.leases and load.leases[0])
                    + outbound(relay_port, load.leases and load.leases[1]),
                ),
                port,
                name=name,
            )
            for name in "abc"
        ]
        try:
            report = _run(load, engine, server, sink, instances, smtp_work, imap_work)
        finally:
            for d in instances:
                if d.proc is not None and d.proc.poll() is None:
                    crash(d)
        report["seconds"] = round(time.monotonic() - began, 1)
        print(f"\nscale-out {report}")
        for d in instances:
            assert_invariants(d.config)


def _run(
    load: Load,
    engine: Engine,
    server: Any,
    sink: Any,
    instances: list[Instance],
    smtp_work: list[tuple[str, str, bytes]],
    imap_work: list[tuple[str, str, bytes]],
) -> dict[str, Any]:
    """Start the instances, load them, crash one twice, drain, stop, check; a summary."""
    first, *others = instances
    first.start(wait_ready=False)
    first.wait_event("spool.recovered", timeout=60)  # it migrates the fresh database
    for d in others:
        d.start(wait_ready=False)
    for d in instances:
        d.wait_event("daemon.ready", timeout=60)
    wait_for(lambda: lease_holder(engine, instances), 30, "an instance to lease the mailbox")

    deadline = time.monotonic() + 300 + load.smtp * 0.2
    mta = Mta([d.port for d in instances], clients=load.clients, deadline=deadline, rate=load.rate)
    appended: list[str] = []

    def appender() -> None:
        """Append the IMAP mail at the pace the SMTP mail goes in, so both overlap the kills."""
        with server.session("support") as c:
            for k, (nonce, _, raw) in enumerate(imap_work):
                while mta.accepted < k * load.smtp / load.imap and time.monotonic() < deadline:
                    time.sleep(0.01)
                c.append("INBOX", crlf(raw))
                appended.append(nonce)

    feeder = threading.Thread(target=appender)
    load_began = time.monotonic()
    mta.start(smtp_work)
    feeder.start()
    victim: Instance | None = None
    kills: list[dict[str, Any]] = []
    try:
        for share in load.kills:
            wait_for(
                lambda s=share: mta.accepted >= s * load.smtp,
                deadline - time.monotonic(),
                f"{share:.0%} of the SMTP mail accepted",
            )
            victim = victim or lease_holder(engine, instances) or first
            held = lease_holder(engine, instances) is victim
            crash(victim)
            killed = time.monotonic()
            at = {"smtp_accepted": mta.accepted, "imap_appended": len(appended)}
            time.sleep(0.5)
            victim.start()
            kills.append(
                {**at, "victim": victim.name, "held_lease": held,
                 "restart_s": round(time.monotonic() - killed, 1)}
            )  # fmt: skip
    finally:
        mta.join()
        feeder.join()
    load_done = time.monotonic()

    smtp_nonces = {n for n, _, _ in smtp_work}
    imap_nonces = {n for n, _, _ in imap_work}
    never = {n: mta.oracle[n] for n in smtp_nonces if ("250" not in {r for _, r in mta.oracle[n]})}
    assert never == {}, f"SMTP messages that never got a 250 (attempts): {never}"
    assert appended == [n for n, _, _ in imap_work]
    total = load.smtp + load.imap

    def drained() -> bool:
        if any(any(spool_files(d).values()) for d in instances):
            return False
        stored = scalar(engine, "SELECT count(*) FROM messages")
        unsent = scalar(engine, "SELECT count(*) FROM outbox WHERE state <> 'sent'")
        return bool(stored >= total and unsent == 0)

    wait_for(drained, load.drain, "every message stored, every spool empty, every ack sent")
    drain_s = time.monotonic() - load_done
    time.sleep(1.0)  # a late duplicate or a second send would show up now
    for d in instances:
        assert d.stop(timeout=30) == 0, f"instance {d.name} did not stop cleanly"

    # -- messages: every nonce exactly one row; a re-delivery only a duplicate delivery --
    messages = rows(engine, "SELECT id, raw, state, ticket_id, source FROM messages")
    nonce_of: dict[int, str] = {}
    for pk, raw, _, _, _ in messages:
        found = NONCE.findall(bytes(raw))
        assert len(found) == 1, f"message {pk} carries {len(found)} nonces"
        nonce_of[pk] = found[0].decode()
    stored = Counter(nonce_of.values())
    wrong = {n: stored[n] for n in smtp_nonces | imap_nonces if stored[n] != 1}
    assert wrong == {}, f"nonces not stored exactly once (rows): {wrong}"
    assert set(stored) == smtp_nonces | imap_nonces, "a message no one sent was stored"
    assert {state for _, _, state, _, _ in messages} == {"done"}
    deliveries = rows(engine, "SELECT message_pk, duplicate, source FROM deliveries")
    firsts = Counter(pk for pk, dup, _ in deliveries if not dup)
    assert firsts == Counter(dict.fromkeys(nonce_of, 1)), "a message without its one delivery"
    for pk, _, source in deliveries:
        channel = "smtp" if nonce_of[pk] in smtp_nonces else IMAP_SOURCE
        assert source == channel, f"nonce {nonce_of[pk]} arrived by {source}"
    repeats = Counter(source for _, dup, source in deliveries if dup)

    # -- tickets: one per message (each is a new matter), triaged and stamped once --
    ticket_of = {pk: ticket for pk, _, _, ticket, _ in messages}
    assert None not in ticket_of.values(), "a message without a ticket"
    assert set(Counter(ticket_of.values()).values()) == {1}, "two messages on one ticket"
    tickets = rows(engine, "SELECT id, message_count, assign_by, category, status FROM tickets")
    assert len(tickets) == total
    assert {t.message_count for t in tickets} == {1}
    assert all(t.assign_by is not None and t.category for t in tickets)
    events: dict[int, Counter[str]] = defaultdict(Counter)
    for ticket, kind, n in rows(
        engine, "SELECT ticket_id, kind, count(*) FROM ticket_events GROUP BY ticket_id, kind"
    ):
        events[ticket][kind] = n
    # Opened, triaged, stamped, acknowledged: once each, and nothing else (no
    # ack_suppressed, no message_added from a second copy, no incident_linked).
    once = dict.fromkeys(("created", "classified", "stamped", "ack_queued"), 1)
    off = {t.id: dict(events[t.id]) for t in tickets if dict(events[t.id]) != once}
    assert off == {}, f"tickets whose events are not {once}: {off}"

    # -- acknowledgements: one row per ticket, each at the relay --
    acks = rows(engine, "SELECT ticket_id, message_id, state FROM outbox WHERE kind = 'ack'")
    assert Counter(t for t, _, _ in acks) == Counter({t.id: 1 for t in tickets})
    assert {state for _, _, state in acks} == {"sent"}
    ack_ids = {mid for _, mid, _ in acks}
    assert set(sink.message_ids) == ack_ids, "the relay got mail no row explains, or not all"
    resent = {mid: n for mid, n in sink.message_ids.items() if n > 1}
    reclaimed = {e["message_id"] for d in instances for e in d.every_event("outbox.reclaimed")}
    assert set(resent) <= reclaimed, "an ack sent twice that no dead sender left unsettled"

    # -- spools --
    for d in instances:
        assert spool_files(d) == {"tmp": [], "new": [], "cur": [], "bad": []}, d.name
    (last_uid,) = rows(engine, "SELECT last_uid FROM imap_folders")[0]
    assert last_uid == max(server.uids("support", "INBOX"))

    takeovers = sum(len(d.every_event("imap.connected")) for d in instances)
    return {
        "smtp": load.smtp,
        "imap": load.imap,
        "kills": kills,
        "smtp_retried": len(mta.retried()),
        "duplicate_deliveries": dict(repeats),
        "acks_at_relay": sink.mails,
        "acks_repeated": resent,
        "imap_sessions": takeovers,
        "ticket_events": dict(sum(events.values(), Counter())),
        "load_s": round(load_done - load_began, 1),
        "drain_s": round(drain_s, 1),
    }
