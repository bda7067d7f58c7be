"""The metrics endpoint: Buzón's counters and queues in Prometheus text format, and health.

Two kinds of numbers. What only this process sees happen, the reply each SMTP client
was given, is counted as it happens. Everything else (messages and tickets by state,
queue depths, IMAP lag, SLA alarms, suppressed acknowledgements) is read at scrape time
from the database and the spool, which stay the truth: a restart loses nothing, and
daemons sharing one database report the same figures. docs/METRICS.md lists every metric;
``daemon.metrics_http`` serves them.

Scrapes are cheap by design: GROUP BY on indexed columns, an id range over the
append-only ticket events, a 2 s cache so scrapes in a row cost one read, and on SQLite
a read-only connection of its own that never takes the write lock ingest needs. A
failing database answers ``buzon_up 0``, never an HTTP error: a scrape must not look
like an outage of the scraper's own making.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Connection, Engine, case, create_engine, event, func, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from daemon.config import Config
from daemon.logging import get_logger
from daemon.spool import Spool
from storage.engine import Database
from storage.models import ImapFolderState, Message, OutboxMail, Ticket, TicketEvent, Voicemail

CACHE_SECONDS = 2.0
RTF_WINDOW = 20  # done transcriptions the real-time factor is taken over
QUERY_TIMEOUT_MS = 5000  # PostgreSQL: a scrape gives up rather than pile up behind a lock
# PostgreSQL hands out ids before commit, so a slow transaction can commit an id below
# one already counted; events are settled into the running totals only once every
# transaction that could still add below them must have ended (SQLite commits in id order).
SETTLE_AFTER = 600.0

# Label values always present (at 0), so a rate or an alert has a series from the start.
SMTP_CODES = (250, 421, 451, 452, 550, 552)
MESSAGE_STATES = ("done", "quarantined", "parked", "dropped")
TICKET_STATUSES = ("open", "closed", "merged")
OUTBOX_STATES = ("pending", "sending", "sent", "failed", "cancelled")
BACKLOG_STATES = ("pending", "running", "failed")
IMAP_STATES = ("new", "ok", "auth_failed", "connection_failed")
ALARM_KINDS = ("at_risk", "breached")
# An ack_suppressed event's reason (daemon/sla_steps.py, daemon/ticketing.py) to a code:
# first match wins. The texts carry addresses and domains; the codes keep cardinality fixed.
ACK_REASONS = (
    ("history import%", "history"),
    ("voicemail%", "voicemail"),
    ("unverified sender%", "unverified"),
    ("%dmarc=fail%", "dmarc"),
    ("null envelope sender%", "null_sender"),
    ("mailing list%", "list"),
    ("automatic mail%", "automatic"),
    ("sender is an agent%", "agent"),
    ("no mail address%", "no_address"),
    ("rate limit%", "rate_limit"),
)
ACK_CODES = (*(code for _, code in ACK_REASONS), "other")
EVENT_KINDS = ("ack_suppressed", "sla_alarm")

# Every metric Buzón serves (besides process_*), with its help text; docs/METRICS.md says more.
HELP = {
    "buzon_smtp_replies": "Final SMTP replies by code: refused MAIL or RCPT, the end of DATA.",
    "buzon_scrape_errors": "Scrapes whose read of a source (database, spool) failed.",
    "buzon_build_info": "Always 1; the version running.",
    "buzon_up": "1 when the database and the spool answered this scrape, else 0.",
    "buzon_scrape_duration_seconds": "Seconds the last read of the database and spool took.",
    "buzon_messages": "Stored messages by state.",
    "buzon_tickets": "Tickets by status.",
    "buzon_outbox": "Outbox mails by state.",
    "buzon_spool_entries": "Spool entries by directory: new (waiting), cur (in ingest), bad.",
    "buzon_spool_bundles": "IMAP batches in spool/new not yet split into entries.",
    "buzon_spool_oldest_age_seconds": "Age of the oldest entry in spool/new; 0 when empty.",
    "buzon_stage_queue": "Work waiting for or inside a stage: ingest, transcription, outbox.",
    "buzon_transcription_backlog": "Voicemails not transcribed, by state.",
    "buzon_transcription_real_time_factor": "Recogniser seconds per audio second, recent calls.",
    "buzon_sla_breached_open": "Open tickets with an assign or respond deadline in the past.",
    "buzon_sla_alarms": "SLA alarms told (sla.at_risk, sla.breached log lines), by kind.",
    "buzon_acks_suppressed": "New tickets given no acknowledgement, by reason.",
    "buzon_imap_lag_seconds": "Server arrival to durable spool, worst of the last batch.",
    "buzon_imap_last_fetch_timestamp_seconds": "When the folder's last batch became durable.",
    "buzon_imap_folder_state": "1 for the folder's current state, 0 for the others.",
}

T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _version() -> str:
    try:
        return metadata.version("buzon")
    except metadata.PackageNotFoundError:
        return "unknown"


def reader_engine(db: Database) -> Engine:
    """The engine scrapes read with; on SQLite, read-only, deferred, one connection a scrape.

    The daemon's engine begins every transaction IMMEDIATE (the write lock), which a
    scrape must never hold: ingest would wait behind it. A deferred read in WAL mode sees
    one snapshot and blocks nobody. ``mode=ro`` makes a deleted database file an error,
    not a new empty one; no pool, so a scrape leaves no connection behind.
    """
    url = make_url(db.url)
    path = url.database or ""
    if url.get_backend_name() != "sqlite" or path in ("", ":memory:"):
        return db.engine

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{quote(path)}?mode=ro",
            uri=True,
            timeout=QUERY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


class EventTally:
    """Running totals of suppressed acknowledgements and SLA alarms from ``ticket_events``.

    Counting every such event at each scrape would scan the biggest table; it is
    append-only, so each scrape adds only the rows past the last id it settled.
    """

    def __init__(self, settle_after: float) -> None:
        self.settle_after = settle_after
        self.settled: Tally[tuple[str, str]] = Tally()
        self.settled_upto = 0
        self._tops: deque[tuple[float, int]] = deque()  # (when seen, highest id then)

    def totals(self, conn: Connection, now: float) -> Tally[tuple[str, str]]:
        """(event kind, label) -> count, for every event committed so far."""
        top = conn.scalar(select(func.max(TicketEvent.id))) or 0
        self._tops.append((now, top))
        target = self.settled_upto
        while self._tops and now - self._tops[0][0] >= self.settle_after:
            target = max(target, self._tops.popleft()[1])
        if target > self.settled_upto:
            self.settled.update(_tally(conn, self.settled_upto, target))
            self.settled_upto = target
        # Rows too recent to settle (PostgreSQL only) are counted afresh each time.
        return self.settled + _tally(conn, self.settled_upto, None)


def _tally(conn: Connection, after: int, upto: int | None) -> Tally[tuple[str, str]]:
    reason = TicketEvent.data["reason"].as_string()
    code = case(*((reason.like(pattern), code) for pattern, code in ACK_REASONS), else_="other")
    query = select(
        TicketEvent.kind.label("kind"),
        case(
            (TicketEvent.kind == "sla_alarm", TicketEvent.data["kind"].as_string()),
            else_=code,
        ).label("label"),
        # Alarms recorded without a log line (an at-risk due with its breach, in rows written
        # before such an alarm became a mark on its breach's event) were not told.
        TicketEvent.data["logged"].as_boolean().label("logged"),
    ).where(TicketEvent.id > after, TicketEvent.kind.in_(EVENT_KINDS))
    if upto is not None:
        query = query.where(TicketEvent.id <= upto)
    rows = query.subquery()
    # Grouped outside: PostgreSQL does not see an expression with bound values as the same
    # expression in SELECT and GROUP BY.
    grouped = select(rows.c.kind, rows.c.label, rows.c.logged, func.count()).group_by(
        rows.c.kind, rows.c.label, rows.c.logged
    )
    out: Tally[tuple[str, str]] = Tally()
    for kind, label, logged, n in conn.execute(grouped):
        if logged is None or logged:
            out[(str(kind), str(label))] += int(n)
    return out


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    messages: dict[str, int]
    tickets: dict[str, int]
    outbox: dict[str, int]
    voicemails: dict[str, int]
    breached_open: int
    real_time_factor: float | None
    imap: dict[tuple[str, str], tuple[str, float | None, datetime | None]]
    events: Tally[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class SpoolFacts:
    depth: dict[str, int]
    oldest_age: float


def _by(conn: Connection, column: Any, known: Iterable[str]) -> dict[str, int]:
    """Rows per value of an indexed ``column``; each of ``known`` present, 0 when absent."""
    out = dict.fromkeys(known, 0)
    for value, n in conn.execute(select(column, func.count()).group_by(column)):
        out[str(value)] = int(n)
    return out


class Metrics:
    """The registry the endpoint serves: live counters, and a collector that reads state."""

    def __init__(
        self,
        db: Database,
        spool: Spool,
        cfg: Config,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.db = db
        self.spool = spool
        self.cfg = cfg
        self.clock = clock
        self.log = get_logger(component="metrics")
        self.registry = CollectorRegistry()
        self._engine = reader_engine(db)
        self._events = EventTally(0.0 if self._engine.dialect.name == "sqlite" else SETTLE_AFTER)
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None
        self._failing: set[str] = set()
        self._replies = Counter(
            "buzon_smtp_replies", HELP["buzon_smtp_replies"], ["code"], registry=self.registry
        )
        for code in SMTP_CODES:
            self._replies.labels(str(code))
        self._errors = Counter(
            "buzon_scrape_errors", HELP["buzon_scrape_errors"], ["source"], registry=self.registry
        )
        info = Gauge(
            "buzon_build_info", HELP["buzon_build_info"], ["version"], registry=self.registry
        )
        info.labels(_version()).set(1)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    def smtp_reply(self, code: int) -> None:
        """Count one final SMTP reply (called on the event loop: a lock-protected add)."""
        self._replies.labels(str(code)).inc()

    # --- the collector --------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """The state families, read at most every CACHE_SECONDS however often scraped."""
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= CACHE_SECONDS:
                families = self._read()
                self._cached = (time.monotonic(), families)  # fresh from the read's end
            return list(self._cached[1])

    def _read(self) -> list[Metric]:
        started = time.perf_counter()
        database = self._attempt("database", self._read_database)
        spool = self._attempt("spool", self._read_spool)
        families = _families(database, spool, self.cfg)
        up = database is not None and spool is not None
        families.append(_gauge("buzon_up", 1.0 if up else 0.0))
        families.append(_gauge("buzon_scrape_duration_seconds", time.perf_counter() - started))
        return families

    def _attempt(self, source: str, read: Callable[[], T]) -> T | None:
        try:
            facts = read()
        except Exception as exc:  # any failure is reported as buzon_up 0, never an HTTP 500
            self._errors.labels(source).inc()
            if source not in self._failing:
                self._failing.add(source)
                self.log.warning("metrics.source_failed", source=source, error=repr(exc))
            return None
        if source in self._failing:
            self._failing.discard(source)
            self.log.info("metrics.source_recovered", source=source)
        return facts

    def _read_database(self) -> DatabaseFacts:
        now = self.clock()
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}")
            breached = conn.scalar(
                select(func.count())
                .select_from(Ticket)
                .where(
                    Ticket.status == "open", or_(Ticket.assign_by < now, Ticket.respond_by < now)
                )
            )
            recent = (
                select(
                    Voicemail.transcript["elapsed"].as_float().label("elapsed"),
                    Voicemail.transcript["duration"].as_float().label("duration"),
                )
                .where(Voicemail.state == "done")
                # Newest due first: read backwards along ix_voicemails_state_due. By id,
                # SQLite would sort every done row (3.5 s at 1M) for twenty.
                .order_by(Voicemail.due_at.desc())
                .limit(RTF_WINDOW)
                .subquery()
            )
            spent, audio = conn.execute(
                select(func.sum(recent.c.elapsed), func.sum(recent.c.duration))
            ).one()
            imap = {
                (r.account, r.folder): (r.state, r.lag_seconds, r.last_fetch_at)
                for r in conn.execute(
                    select(
                        ImapFolderState.account,
                        ImapFolderState.folder,
                        ImapFolderState.state,
                        ImapFolderState.lag_seconds,
                        ImapFolderState.last_fetch_at,
                    )
                )
            }
            return DatabaseFacts(
                messages=_by(conn, Message.state, MESSAGE_STATES),
                tickets=_by(conn, Ticket.status, TICKET_STATUSES),
                outbox=_by(conn, OutboxMail.state, OUTBOX_STATES),
                voicemails=_by(conn, Voicemail.state, BACKLOG_STATES),
                breached_open=int(breached or 0),
                real_time_factor=float(spent) / float(audio) if spent and audio else None,
                imap=imap,
                events=self._events.totals(conn, time.monotonic()),
            )

    def _read_spool(self) -> SpoolFacts:
        return SpoolFacts(self.spool.depth(), self.spool.oldest_age() or 0.0)


def _gauge(name: str, value: float) -> Metric:
    return GaugeMetricFamily(name, HELP[name], value=value)


def _by_label(name: str, label: str, values: dict[str, int], *, counter: bool = False) -> Metric:
    family = (CounterMetricFamily if counter else GaugeMetricFamily)(
        name, HELP[name], labels=[label]
    )
    for key, n in values.items():
        family.add_metric([key], n)
    return family


def _families(db: DatabaseFacts | None, spool: SpoolFacts | None, cfg: Config) -> list[Metric]:
    """Every state family that could be read; a source that failed contributes none."""
    out: list[Metric] = []
    queue: dict[str, int] = {}
    if spool is not None:
        depth = spool.depth
        out += [
            _by_label("buzon_spool_entries", "dir", {d: depth[d] for d in ("new", "cur", "bad")}),
            _gauge("buzon_spool_bundles", depth["bundles"]),
            _gauge("buzon_spool_oldest_age_seconds", spool.oldest_age),
        ]
        queue["ingest"] = depth["new"] + depth["cur"] + depth["bundles"]
    if db is not None:
        queue["transcription"] = db.voicemails["pending"] + db.voicemails["running"]
        queue["outbox"] = db.outbox["pending"] + db.outbox["sending"]
        out += _database_families(db, cfg)
    if queue:
        out.append(_by_label("buzon_stage_queue", "stage", queue))
    return out


def _database_families(db: DatabaseFacts, cfg: Config) -> list[Metric]:
    out = [
        _by_label("buzon_messages", "state", db.messages),
        _by_label("buzon_tickets", "status", db.tickets),
        _by_label("buzon_outbox", "state", db.outbox),
        _by_label(
            "buzon_transcription_backlog", "state", {s: db.voicemails[s] for s in BACKLOG_STATES}
        ),
        _gauge("buzon_sla_breached_open", db.breached_open),
        _by_label(
            "buzon_sla_alarms",
            "kind",
            {k: db.events[("sla_alarm", k)] for k in ALARM_KINDS},
            counter=True,
        ),
        _by_label(
            "buzon_acks_suppressed",
            "reason",
            {code: db.events[("ack_suppressed", code)] for code in ACK_CODES},
            counter=True,
        ),
    ]
    if db.real_time_factor is not None:
        out.append(_gauge("buzon_transcription_real_time_factor", db.real_time_factor))
    lag, fetched, state = (
        GaugeMetricFamily(name, HELP[name], labels=["account", "folder", *extra])
        for name, extra in (
            ("buzon_imap_lag_seconds", ()),
            ("buzon_imap_last_fetch_timestamp_seconds", ()),
            ("buzon_imap_folder_state", ("state",)),
        )
    )
    for account in cfg.imap:
        for folder in account.folders:
            current, lag_s, at = db.imap.get((account.name, folder), ("new", None, None))
            for s in dict.fromkeys((*IMAP_STATES, current)):
                state.add_metric([account.name, folder, s], 1.0 if s == current else 0.0)
            if lag_s is not None:
                lag.add_metric([account.name, folder], lag_s)
            if at is not None:
                fetched.add_metric([account.name, folder], at.timestamp())
    return [*out, lag, fetched, state]
