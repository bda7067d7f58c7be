"""The metrics endpoint: scraped over HTTP, parsed with prometheus_client's own parser.

The figures must be the database's and the spool's exactly, and the SMTP reply counts
must be what the clients were told (RELIABILITY.md OPS-03).
"""

from __future__ import annotations

import smtplib
import socket
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

import daemon.metrics as metrics_mod
from daemon.config import Config, ImapAccount
from daemon.metrics import EventTally, Metrics
from daemon.metrics_http import MetricsServer
from daemon.parts import Parts, open_parts
from daemon.scheduler import Scheduler
from daemon.spool import Spool
from storage import imapstate
from storage import repository as repo
from storage.engine import Database
from storage.models import TicketEvent, Voicemail
from support.daemon import Daemon, free_port, wait_until
from support.ingest import ingest_raw
from support.intake import Intake
from support.mail import crlf, message, read_reply
from support.voicemail import asterisk_mail

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """GET /metrics and parse it; sample name -> label set -> value."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    """One label's values of a sample name, e.g. by(s, "buzon_messages", "state")."""
    return {dict(k)[label]: v for k, v in samples.get(name, {}).items()}


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    """Start MetricsServers on 127.0.0.1:0; each is stopped at teardown."""
    servers: list[MetricsServer] = []

    def start(metrics: Metrics, live: Any = lambda: (True, ""), ready: Any = None) -> int:
        server = MetricsServer(
            "127.0.0.1:0", metrics, live=live, ready=ready or (lambda: (True, ""))
        )
        servers.append(server)
        return server.start()[1]

    yield start
    for server in servers:
        server.stop()


TOPICS = (
    ("No puedo entrar al panel de control", "La contraseña nueva no funciona en el panel."),
    ("Factura de noviembre duplicada", "Me habéis cobrado dos veces la misma factura."),
    ("El certificado SSL caducó", "El navegador avisa de que el certificado no es válido."),
    ("Cambiar el titular del dominio", "Vendimos la empresa y el dominio pasa a otra sociedad."),
    ("Ampliar el espacio del buzón", "El buzón de ventas está lleno desde el lunes."),
    ("Migración de la base de datos", "Queremos pasar MySQL 5.7 a la versión 8 este mes."),
)
AR_FAIL = (
    "Authentication-Results: mx.example.com; spf=fail smtp.mailfrom=cliente.es;\r\n"
    " dmarc=fail (p=reject dis=none) header.from=cliente.es\r\n"
)


def test_a_scrape_reports_exactly_what_the_database_and_spool_hold(
    parts: Parts, config_factory: Callable[..., Config], serve: Callable[..., int]
) -> None:
    """Messages by state, tickets, outbox, suppressed acks by reason, spool, IMAP, transcription."""
    refs = [
        ingest_raw(parts, message(s, body=b, message_id=f"<t{i}@cliente.es>")).ticket_ref
        for i, (s, b) in enumerate(TOPICS)
    ]
    assert refs == [f"B-{i}" for i in range(1, 7)]  # six tickets; the sixth is over the rate
    reply = message("Re: panel", body="Sigue igual.\n", headers="In-Reply-To: <t0@cliente.es>\r\n")
    assert ingest_raw(parts, reply).ticket_ref == "B-1"
    ambiguous = message("Acceso urgente", body="Dadme acceso ya.\n").replace(
        b"From: Ana <ana@cliente.es>", b"From: ana@cliente.es, mallory@evil.example"
    )
    ingest_raw(parts, ambiguous)  # unverified sender: a ticket, no acknowledgement
    ingest_raw(parts, message("Copia de seguridad", body="¿Dónde está?\n", headers=AR_FAIL))
    ingest_raw(parts, message("Boletín", headers="List-Id: <x.lists.example>\r\n"))  # parked
    calls = [
        ingest_raw(parts, asterisk_mail(b"RIFF" + bytes(64), number=n, caller=f"+3460011122{n}"))
        for n in (1, 2, 3)
    ]
    # The transcription stage finished two calls: 3 s of work for 15 s of audio.
    with parts.db.transaction() as s:
        for out, (elapsed, duration) in zip(calls, ((2.0, 10.0), (1.0, 5.0)), strict=False):
            s.execute(
                update(Voicemail)
                .where(Voicemail.message_pk == out.message_pk)
                .values(state="done", transcript={"elapsed": elapsed, "duration": duration})
            )
    # Spool: one entry waiting, one quarantined.
    meta = {"source": "smtp", "received_at": datetime.now(UTC).isoformat(), "envelope": {}}
    parts.spool.put(message("En cola"), meta)
    bad = parts.spool.claim(parts.spool.put(message("Rota"), meta).id)
    assert bad is not None
    parts.spool.quarantine(bad, "test")
    # IMAP: one folder fetched a batch, one cannot log in.
    now = datetime.now(UTC).replace(microsecond=0)
    with parts.db.transaction() as s:
        assert imapstate.acquire(
            s, "soporte", "INBOX", holder="h", now=now, ttl=timedelta(minutes=1)
        )
        imapstate.checkpoint(
            s,
            "soporte",
            "INBOX",
            "h",
            uidvalidity=1,
            last_uid=9,
            fetched=9,
            lag=1.5,
            now=now,
            ttl=timedelta(minutes=1),
        )
        imapstate.set_status(s, "soporte", "Archivo", "auth_failed", "bad password")
    cfg = replace(
        config_factory(), imap=(ImapAccount(name="soporte", folders=("INBOX", "Archivo")),)
    )

    port = serve(Metrics(parts.db, parts.spool, cfg))
    m = scrape(port)
    assert one(m, "buzon_up") == 1
    assert by(m, "buzon_messages", "state") == {
        "done": 12,
        "quarantined": 0,
        "parked": 1,
        "dropped": 0,
    }
    assert by(m, "buzon_tickets", "status") == {"open": 11, "closed": 0, "merged": 0}
    assert by(m, "buzon_outbox", "state")["pending"] == 5  # the acknowledgements queued
    suppressed = {k: v for k, v in by(m, "buzon_acks_suppressed_total", "reason").items() if v}
    assert suppressed == {"rate_limit": 1, "unverified": 1, "dmarc": 1, "voicemail": 3}
    assert by(m, "buzon_transcription_backlog", "state") == {
        "pending": 1,
        "running": 0,
        "failed": 0,
    }
    assert one(m, "buzon_transcription_real_time_factor") == pytest.approx(0.2)
    assert by(m, "buzon_spool_entries", "dir") == {"new": 1, "cur": 0, "bad": 1}
    assert one(m, "buzon_spool_oldest_age_seconds") > 0
    assert by(m, "buzon_stage_queue", "stage") == {"ingest": 1, "transcription": 1, "outbox": 5}
    assert one(m, "buzon_imap_lag_seconds", account="soporte", folder="INBOX") == 1.5
    assert (
        one(m, "buzon_imap_last_fetch_timestamp_seconds", account="soporte", folder="INBOX")
        == now.timestamp()
    )
    states = {
        (dict(k)["folder"], dict(k)["state"]) for k, v in m["buzon_imap_folder_state"].items() if v
    }
    assert states == {("INBOX", "ok"), ("Archivo", "auth_failed")}
    assert (
        frozenset({("account", "soporte"), ("folder", "Archivo")})
        not in m["buzon_imap_lag_seconds"]
    )
    assert one(m, "buzon_sla_breached_open") == 0
    assert set(by(m, "buzon_build_info", "version")) and m["process_open_fds"]


def test_sla_alarms_and_breaches_match_what_the_scheduler_told(
    parts: Parts, config_factory: Callable[..., Config], serve: Callable[..., int]
) -> None:
    """Two days later every open ticket is breached; the alarm counters equal the pass's."""
    for i, (subject, body) in enumerate(TOPICS[:3]):
        ingest_raw(parts, message(subject, body=body, message_id=f"<s{i}@cliente.es>"))
    cfg = config_factory()
    later = datetime.now(UTC) + timedelta(days=30)
    report = Scheduler(parts.db, cfg.desk.sla, parts.outbound, clock=lambda: later).run_once()
    assert report.breached > 0
    with parts.db.transaction() as s:
        alarms = list(s.scalars(select(TicketEvent.data).where(TicketEvent.kind == "sla_alarm")))
    kinds = [d["kind"] for d in alarms]
    assert kinds.count("at_risk") == report.at_risk  # one passed with its breach: no row
    assert any(d.get("at_risk_passed") for d in alarms if d["kind"] == "breached")
    m = scrape(serve(Metrics(parts.db, parts.spool, cfg, clock=lambda: later)))
    assert by(m, "buzon_sla_alarms_total", "kind") == {
        "at_risk": report.at_risk,
        "breached": report.breached,
    }
    assert one(m, "buzon_sla_breached_open") == 3


@pytest.mark.postgres
def test_the_same_figures_on_postgresql(
    pg_url: str, config_factory: Callable[..., Config], serve: Callable[..., int]
) -> None:
    """On PostgreSQL: JSON reasons, alarms, the statement timeout; recent events counted live."""
    cfg = config_factory(database=pg_url)
    with open_parts(cfg, recover=True) as parts:
        for i, (subject, body) in enumerate(TOPICS):
            ingest_raw(parts, message(subject, body=body, message_id=f"<p{i}@cliente.es>"))
        later = datetime.now(UTC) + timedelta(days=30)
        report = Scheduler(parts.db, cfg.desk.sla, parts.outbound, clock=lambda: later).run_once()
        m = scrape(serve(Metrics(parts.db, parts.spool, cfg, clock=lambda: later)))
        assert one(m, "buzon_up") == 1
        assert by(m, "buzon_messages", "state")["done"] == 6
        assert by(m, "buzon_outbox", "state")["pending"] == 5
        assert one(m, "buzon_acks_suppressed_total", reason="rate_limit") == 1
        assert by(m, "buzon_sla_alarms_total", "kind") == {
            "at_risk": report.at_risk,
            "breached": report.breached,
        }
        assert one(m, "buzon_sla_breached_open") == 6


def test_event_counts_settle_only_once_no_transaction_can_commit_below_them(
    parts: Parts,
) -> None:
    """PostgreSQL mode: recent events are counted afresh each time, then folded in once."""
    ref = ingest_raw(parts, message()).ticket_ref
    tally = EventTally(settle_after=600.0)

    def add(reason: str) -> None:
        with parts.db.transaction() as s:
            ticket = repo.ticket(s, ref or "")
            assert ticket is not None
            repo.add_event(s, ticket, "ack_suppressed", datetime.now(UTC), data={"reason": reason})

    def totals(at: float) -> dict[str, int]:
        with parts.db.engine.connect() as conn:
            return {label: n for (kind, label), n in tally.totals(conn, at).items()}

    add("rate limit: at most 5 acknowledgements a day to ana@cliente.es")
    assert totals(0.0) == {"rate_limit": 1} and tally.settled_upto == 0
    add("sender is an agent")
    assert totals(10.0) == {"rate_limit": 1, "agent": 1} and tally.settled_upto == 0
    add("something new nobody mapped")
    assert totals(700.0) == {"rate_limit": 1, "agent": 1, "other": 1}
    assert tally.settled_upto > 0  # what was seen at 0.0 is settled; the rest still live
    assert totals(1400.0) == {"rate_limit": 1, "agent": 1, "other": 1}


def test_health_and_readiness_follow_their_checks(
    parts: Parts, config_factory: Callable[..., Config], serve: Callable[..., int]
) -> None:
    """200 "ok" or 503 with the reason, as the callables say; a raising check is a 503;
    a taken port is an OSError at start."""
    state = {"live": (True, ""), "ready": (False, "recovering the spool")}

    def ready() -> tuple[bool, str]:
        if state["ready"] is None:
            raise RuntimeError("boom")
        return state["ready"]

    metrics = Metrics(parts.db, parts.spool, config_factory())
    port = serve(metrics, live=lambda: state["live"], ready=ready)
    with pytest.raises(OSError):  # the port is taken: the daemon must hear of it at start
        MetricsServer(f"127.0.0.1:{port}", metrics, live=ready, ready=ready).start()
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (503, "recovering the spool\n")
    state["ready"] = (True, "")
    state["live"] = (False, "the ingest process died")
    assert get(port, "/readyz") == (200, "ok\n")
    assert get(port, "/healthz") == (503, "the ingest process died\n")
    state["ready"] = None  # type: ignore[assignment]
    status, body = get(port, "/readyz")
    assert status == 503 and "boom" in body
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics/extra")[0] == 404


def test_a_missing_database_answers_up_0_and_recovers(
    tmp_path: Path,
    config_factory: Callable[..., Config],
    serve: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database file gone: still a 200, buzon_up 0, the error counted, the spool reported."""
    monkeypatch.setattr(metrics_mod, "CACHE_SECONDS", 0.3)
    path = tmp_path / "m.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    spool = Spool(tmp_path / "spool")
    port = serve(Metrics(db, spool, config_factory()))
    first, cached = scrape(port), scrape(port)
    assert one(first, "buzon_up") == 1
    # Within the cache window the second scrape is the first one: no second read.
    assert one(cached, "buzon_scrape_duration_seconds") == one(
        first, "buzon_scrape_duration_seconds"
    )
    moved = [p.rename(p.with_name(p.name + ".away")) for p in tmp_path.glob("m.db*")]
    wait_until(lambda: one(scrape(port), "buzon_up") == 0, timeout=5, what="buzon_up 0")
    down = scrape(port)
    assert one(down, "buzon_scrape_errors_total", source="database") >= 1
    assert "buzon_messages" not in down and "buzon_spool_entries" in down
    assert not path.exists()  # a read-only connection never creates an empty database
    for p in moved:
        p.rename(p.with_name(p.name.removesuffix(".away")))
    wait_until(lambda: one(scrape(port), "buzon_up") == 1, timeout=5, what="buzon_up 1")


def test_smtp_replies_are_counted_as_the_client_sees_them(
    parts: Parts, config_factory: Callable[..., Config], serve: Callable[..., int], tmp_path: Path
) -> None:
    """250, 550 at RCPT, 452 for one recipient too many, 552 at MAIL SIZE= and after DATA."""
    metrics = Metrics(parts.db, parts.spool, config_factory())
    port = serve(metrics)
    told: list[int] = []
    with Intake(tmp_path / "intake", max_message_size=5000, max_recipients=1) as intake:
        intake.handler.on_reply = metrics.smtp_reply
        with smtplib.SMTP("127.0.0.1", intake.port) as smtp:
            smtp.ehlo()
            for rcpts, raw, options in (
                (["support@example.com"], message(), []),
                (["nobody@elsewhere.example", "support@example.com"], message(), []),
                (["support@example.com", "help@desk.example.org"], message(), []),
                (["support@example.com"], message(body="x" * 9000), ["SIZE=9100"]),
            ):
                told.extend(transaction(smtp, rcpts, raw, options))
        # A client that does not declare the size is refused after the data.
        with socket.create_connection(("127.0.0.1", intake.port)) as sock, sock.makefile("rb") as f:
            read_reply(f)
            for cmd in (
                b"EHLO t\r\n",
                b"MAIL FROM:<a@b.example>\r\n",
                b"RCPT TO:<support@example.com>\r\n",
                b"DATA\r\n",
            ):
                sock.sendall(cmd)
                read_reply(f)
            sock.sendall(crlf(message(body="y" * 9000)) + b".\r\n")
            told.append(int(read_reply(f)[:3]))
    assert told == [250, 550, 250, 452, 250, 552, 552]
    replies = by(scrape(port), "buzon_smtp_replies_total", "code")
    assert {k: int(v) for k, v in replies.items() if v} == {
        str(k): n for k, n in Counter(told).items()
    }


def transaction(smtp: smtplib.SMTP, rcpts: list[str], raw: bytes, options: list[str]) -> list[int]:
    """One mail transaction; every final reply code the client got (refusals, DATA's end)."""
    codes: list[int] = []
    code, _ = smtp.mail("ana@cliente.es", options)
    if code != 250:
        smtp.rset()
        return [code]
    accepted = 0
    for rcpt in rcpts:
        code, _ = smtp.rcpt(rcpt)
        if code == 250:
            accepted += 1
        else:
            codes.append(code)
    if not accepted:
        smtp.rset()
        return codes
    code, _ = smtp.data(raw)
    return [*codes, code]


class Sink:
    """A relay that accepts every mail, so the outbox drains."""

    def __init__(self) -> None:
        self.got = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got += 1
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def relay() -> Iterator[int]:
    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


LOAD = 300
LIMIT = 20_000  # [smtp] max_message_size for the load run: a few messages exceed it


def load_transaction(port: int, i: int) -> list[int]:
    """Transaction ``i`` of the load: mostly valid, some unknown recipients, some oversize."""
    sender = f"cliente{i % 12}@empresa{i % 12}.example"
    # Words of its own, so most messages open tickets (and meet the acknowledgement rate)
    # rather than join an earlier one as its duplicate.
    words = [f"tema{(i * k + k) % 997}" for k in (1, 3, 7, 11, 13)]
    raw = message(
        " ".join(words[:3]).capitalize(),
        sender=sender,
        body=f"{' '.join(reversed(words))}; referencia {i}.\n",
        message_id=f"<load-{i}@empresa.example>",
    )
    kind = i % 20
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo()
        if kind == 0:
            return transaction(smtp, ["nadie@otro.example"], raw, [])
        if kind == 1:  # declares its size: refused at MAIL FROM
            big = message(f"Adjunto {i}", sender=sender, body="z" * LIMIT)
            return transaction(smtp, ["support@example.com"], big, [f"SIZE={len(big)}"])
        if kind == 2:  # does not: refused after the data
            big = message(f"Adjunto {i}", sender=sender, body="z" * LIMIT)
            return transaction(smtp, ["support@example.com"], big, [])
        if kind == 3:
            return transaction(smtp, ["nadie@otro.example", "support@example.com"], raw, [])
        return transaction(smtp, ["support@example.com"], raw, [])


def test_ops03_metrics_reconcile_with_what_clients_were_told(
    daemon_factory: Callable[..., Daemon], relay: int
) -> None:
    """OPS-03: after a load run, reply counts by code equal the clients' own tally, every
    accepted message is a stored message, acknowledgements match the log, queues drain."""
    mport = free_port()
    extra = f'[metrics]\nlisten = "127.0.0.1:{mport}"\n\n[outbound]\nrelay = "127.0.0.1:{relay}"\n'
    d = daemon_factory(extra=extra, start=False)
    d.config.write_text(
        d.config.read_text().replace("max_message_size = 10485760", f"max_message_size = {LIMIT}")
    )
    d.start()
    assert get(mport, "/healthz") == (200, "ok\n")
    wait_until(lambda: get(mport, "/readyz")[0] == 200, timeout=10, what="ready")
    with ThreadPoolExecutor(max_workers=8) as pool:
        told = Counter(
            c
            for codes in pool.map(lambda i: load_transaction(d.port, i), range(LOAD))
            for c in codes
        )
    assert told == {250: 255, 550: 30, 552: 30}
    wait_until(lambda: d.processed() >= told[250], timeout=120, what="every message ingested")

    def drained() -> Samples | None:
        m = scrape(mport)
        queues = by(m, "buzon_stage_queue", "stage")
        return m if queues and not any(queues.values()) else None

    m = wait_until(drained, timeout=120, interval=0.5, what="every stage queue empty")
    assert one(m, "buzon_up") == 1
    replies = {int(k): int(v) for k, v in by(m, "buzon_smtp_replies_total", "code").items() if v}
    assert replies == told
    assert sum(by(m, "buzon_messages", "state").values()) == told[250] == d.processed()
    outbox = by(m, "buzon_outbox", "state")
    assert outbox["sent"] == d.count("ack.queued") > 0 and outbox["failed"] == 0
    suppressed = by(m, "buzon_acks_suppressed_total", "reason")
    assert sum(suppressed.values()) == d.count("ack.suppressed")
    limited = [
        e
        for e in list(d.events)
        if e.get("event") == "ack.suppressed" and str(e.get("reason", "")).startswith("rate limit")
    ]
    assert suppressed["rate_limit"] == len(limited) > 0
    assert by(m, "buzon_spool_entries", "dir") == {"new": 0, "cur": 0, "bad": 0}
    assert d.stop() == 0
