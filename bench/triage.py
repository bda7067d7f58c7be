"""Triage per message: classification, duplicate lookup and incident lookup at two database sizes.

Issue 5 asks that the per-message cost at 1,000,000 tickets be at most 1.5x the cost at
10,000 (the baseline, measured in the same run), and that classification reach 1,000
messages/s on one core. What is measured, in one process pinned to one CPU:

* **classification**: ``daemon.triager.Triager.classify`` (the daemon's shipped rules,
  language guesser, no learned model unless ``--model``) over the ``MessageFacts`` of
  ``tests/data/triage/tune.jsonl``, cycled to ``--messages``.
* **duplicate lookup**: ``daemon.similar.collapse_duplicate`` itself, called with a real
  ``daemon.work.Work`` (session, ``[matching]`` defaults, fingerprint, customer, a
  not-yet-flushed ``Message``): ``repo.open_tickets_of_customer`` + ``duplicate_score``
  over the candidates, and ``join`` when one is near-identical. Fingerprinting the
  message (``triage.similarity.fingerprint``, done by the thread step before it) is
  timed on its own.
* **incident lookup**: ``daemon.similar.incident`` itself, for a ticket this message
  just opened (inserted and flushed before the clock starts, with the category the
  classifier gave the message): ``repo.tickets_created_since`` + ``incident_matches``,
  then linking to the open incident or detecting one. It is timed for every probe
  message, including the ones the duplicate step would have collapsed.

Each probe runs in its own session whose transaction is opened before the clock starts
(the daemon's step runs inside the message's open transaction) and rolled back after,
so the databases never change. The databases hold generated tickets with the real
schema (``storage.engine.Database`` + the Alembic migrations, like ``open_parts``):

* one deterministic timeline of a desk taking ``--per-day`` tickets a day now and fewer
  in the past (rate ``per_day / (1 + age / 3000 days)``): the newest ``--small`` tickets
  of it are the small database, the newest ``--large`` the large one. With the defaults
  the 10k database is the desk's last ~15 days and the 1M database its last ~5.5 years.
  The newest 10k rows are the same in both, so every lookup window shorter than the
  small database's span (duplicates: 14 days; incidents: 30 minutes) holds the same
  rows in both, and the ratio measures the size of the database, not the traffic.
  The script checks that both databases give the same candidates and outcomes.
* ``--customers`` distinct customers (default 200,000 = 1M/5), skewed: a few write
  daily, most once or twice; open/closed by age (75 % open under 2 days, 35 % under
  14, 8 % under 60, 1 % older, plus 0.5 % merged); subjects and texts are the
  Spanish/English/Bulgarian ``tune.jsonl`` messages with sentences dropped, swapped
  and random details (names, order numbers, hosts) added; ``match_text`` is
  ``fingerprint`` of that text; category, priority, severity, language from the
  sample's labels (the ``triage`` document lives in ``classified`` events since
  migration 0008, which matching never reads).
* an ongoing outage: the newest ``--burst`` tickets (last 20 minutes) are one e-mail
  failure reported by different customers, linked to an open incident.

Probe messages (``--messages``, the same list at both sizes), all received one minute
after the newest ticket: ~25 % repeat an open ticket of their customer (collapsed),
~35 % come from a customer in the database with a new matter, ~25 % from a customer
never seen, ~15 % report the outage (linked to its incident).

Every phase runs ``--rounds`` times, sizes alternating, after one untimed warm-up pass
per database; the table shows the median over rounds of the per-round mean and p99.
The query plans of the statements the two steps issued are printed (``EXPLAIN QUERY
PLAN`` on SQLite, ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL). The script measures
and does not assert: exit code 0, with GOAL MET / GOAL NOT MET lines, and one JSON line
at the end with every number.

Generated databases are cached under ``--workdir`` (SQLite files) or in scratch
PostgreSQL databases ``buzon_bench_triage_<N>``, keyed by size, schema revision and
generator parameters; ``--fresh`` regenerates. Generation uses bulk inserts in one
transaction (SQLite with ``synchronous=OFF`` for that phase only; PostgreSQL with COPY,
then ``ANALYZE`` as autovacuum would). SQLite is not ANALYZEd: the daemon never does.

Run from the repository root::

    .venv/bin/python bench/triage.py                          # SQLite, 10k and 1M
    .venv/bin/python bench/triage.py --database postgresql
    .venv/bin/python bench/triage.py --small 2000 --large 50000 --rounds 1 --profile 25
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import math
import os
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import BASE_TOML, PG_ADMIN, batches, jsonl, migrated_anew, stored_setting

ROOT = Path(__file__).resolve().parents[1]  # benchlib put it first on sys.path

from sqlalchemy import Engine, create_engine, event, insert, text  # noqa: E402

from daemon import config as config_mod  # noqa: E402
from daemon.similar import collapse_duplicate, incident  # noqa: E402
from daemon.triager import Triager  # noqa: E402
from daemon.work import Work  # noqa: E402
from storage import repository as repo  # noqa: E402
from storage.blobs import BlobStore  # noqa: E402
from storage.engine import Database, head_revision  # noqa: E402
from storage.models import Base, Message, Ticket  # noqa: E402
from triage.classify import MessageFacts  # noqa: E402
from triage.refs import ref_for  # noqa: E402
from triage.similarity import fingerprint  # noqa: E402

GENERATOR = 2  # bump when the generated data changes: cached databases are rebuilt
END = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # the newest ticket; probes arrive 1 min later
ARRIVAL = END + timedelta(minutes=1)
HALF_RATE_DAYS = 3000.0  # the desk took half its current rate this many days ago
BLOCK = 1000  # rows generated per seeded block: row i's data never depends on N
BATCH = 5000  # rows per executemany
MARKER = "bench.triage"
TABLES = Base.metadata.tables
TUNE = ROOT / "tests" / "data" / "triage" / "tune.jsonl"
KINDS = (("repeat", 0.25), ("known", 0.35), ("unknown", 0.25), ("outage", 0.15))
PHASES = ("classification", "fingerprint", "duplicate", "incident")

NAMES = (
    "Marta", "Jorge", "Lucía", "Iván", "Elena", "Carlos", "Sofía", "Laura", "Tom", "Sarah",
    "James", "Emily", "Петър", "Мария", "Георги", "Николай", "Десислава", "Ana", "Pablo", "Irene",
)  # fmt: skip
DETAILS = (
    "pedido {n}", "factura {n}", "ticket interno {n}", "servidor srv{k}", "dominio cliente{k}.es",
    "extensión {k}", "order {n}", "invoice {n}", "host web{k}", "account {n}",
    "поръчка {n}", "фактура {n}", "сървър srv{k}", "IP 10.{a}.{b}.{k}",
)  # fmt: skip
OUTAGE = (
    ("es", "No funciona el correo", "El correo no funciona: Outlook no puede enviar ni recibir, "
     "error de conexión al servidor de correo desde esta mañana."),
    ("en", "Email down", "Our email stopped working: Outlook cannot send or receive, connection "
     "error to the mail server since this morning."),
    ("bg", "Пощата не работи", "Пощата не работи: Outlook не може да изпраща и получава, "
     "грешка при връзка със пощенския сървър от тази сутрин."),
)  # fmt: skip
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Sample:
    """One labelled message of tune.jsonl, the material tickets and probes are made of."""

    subject: str
    body: str
    channel: str
    to: str
    category: str
    priority: str
    severity: int | None
    language: str


@dataclass(frozen=True)
class Params:
    """What the generated data depends on (with N and the schema: the cache key)."""

    per_day: float
    customers: int
    burst: int
    seed: int

    def key(self, n: int, schema: str) -> str:
        blob = json.dumps({**asdict(self), "n": n, "schema": schema, "generator": GENERATOR})
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Probe:
    """One incoming message: what the thread, classify and incident steps would see."""

    kind: str
    subject: str
    text: str
    customer: str
    category: str = ""
    fingerprint: str = ""


@dataclass
class Stats:
    """Per-message samples (ns) of one phase at one size, one list per round."""

    rounds: list[list[int]] = field(default_factory=list)

    def mean_us(self) -> float:
        return statistics.median(statistics.fmean(r) for r in self.rounds) / 1000

    def p99_us(self) -> float:
        return statistics.median(_pct(r, 0.99) for r in self.rounds) / 1000

    def p50_us(self) -> float:
        return statistics.median(_pct(r, 0.50) for r in self.rounds) / 1000


def _pct(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])


# --------------------------------------------------------------------------- generation


def load_samples() -> list[Sample]:
    out = []
    for r in jsonl(TUNE):
        labels = r["labels"]
        out.append(
            Sample(
                r["subject"],
                r["body"],
                r["channel"],
                r["to"],
                labels["category"],
                labels["priority"],
                labels.get("severity"),
                r["language"],
            )
        )
    return out


def _facts(subject: str, body: str, channel: str, to: str) -> MessageFacts:
    return MessageFacts(
        subject=subject,
        text=body,
        channel="voicemail" if channel == "voicemail" else "email",
        recipients=(to,),
    )


def _detail(rng: random.Random) -> str:
    return rng.choice(DETAILS).format(
        n=rng.randrange(10_000, 999_999), k=rng.randrange(1, 500), a=rng.randrange(256),
        b=rng.randrange(256),
    )  # fmt: skip


def vary(rng: random.Random, subject: str, body: str) -> tuple[str, str]:
    """The same kind of matter in other words: sentences dropped or swapped, details added."""
    parts = [s for s in _SENTENCE.split(body) if s.strip()] or [body]
    kept = [s for j, s in enumerate(parts) if j == 0 or rng.random() < 0.75]
    if len(kept) > 2 and rng.random() < 0.3:
        a, b = rng.sample(range(1, len(kept)), 2)
        kept[a], kept[b] = kept[b], kept[a]
    extra = ", ".join(_detail(rng) for _ in range(rng.randint(1, 3)))
    kept.insert(rng.randint(1, len(kept)), f"Ref: {extra}.")
    return subject, " ".join(kept) + f"\n\n{rng.choice(NAMES)}"


class Timeline:
    """The desk's tickets, newest first: row ``i``'s data depends on ``i`` and the seed only."""

    def __init__(self, params: Params, samples: Sequence[Sample]) -> None:
        self.p, self.samples = params, samples
        self.rate = params.per_day
        self.outage = [
            Sample(s, b, "email", "soporte@example.com", "email", "high", 1, lang)
            for lang, s, b in OUTAGE
        ]

    def age_days(self, i: int) -> float:
        """Age of the i-th newest ticket; the burst rows sit apart, in the last 20 minutes."""
        if i < self.p.burst:
            return (i * 20 / max(1, self.p.burst) + 0.1) / 1440
        # rate(a) = R / (1 + a/H)  =>  count younger than a = R*H*ln(1 + a/H)
        return HALF_RATE_DAYS * math.expm1((i - self.p.burst) / (self.rate * HALF_RATE_DAYS))

    def span_days(self, n: int) -> float:
        return self.age_days(n - 1)

    def _customer(self, rng: random.Random, channel: str) -> str:
        c = int(self.p.customers * rng.random() ** 3)  # skewed: low numbers write often
        return f"tel:+34{600_000_000 + c}" if channel == "voicemail" else f"user{c}@cliente{c}.es"

    def row(self, i: int, rng: random.Random) -> dict[str, Any]:
        burst = i < self.p.burst
        sample = self.outage[i % 3] if burst else rng.choice(self.samples)
        subject, body = vary(rng, sample.subject, sample.body)
        age = self.age_days(i)
        created = END - timedelta(days=age)
        roll = rng.random()
        open_share = 1.0 if burst else 0.75 if age < 2 else 0.35 if age < 14 else 0.08
        if age >= 60:
            open_share = 0.01
        status = "open" if roll < open_share else "merged" if roll > 0.995 else "closed"
        customer = self._customer(rng, sample.channel)
        updated = min(END, created + timedelta(hours=rng.uniform(0.1, 72)))
        return {
            "status": status,
            "subject": subject,
            "customer": customer,
            "requester": customer,
            "channel": sample.channel,
            "message_count": 1 + int(rng.random() ** 4 * 6),
            "created_at": created,
            "updated_at": created if status == "open" and rng.random() < 0.5 else updated,
            "assign_by": created + timedelta(minutes=30),
            "respond_by": created + timedelta(hours=4),
            "category": sample.category,
            "priority": sample.priority,
            "severity": sample.severity,
            "language": sample.language,
            "flags": [],
            "match_text": fingerprint(subject, body),
            "incident_id": 1 if burst else None,
            "_body": body,
        }

    def block(self, b: int) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.p.seed}:{b}")
        return [self.row(i, rng) for i in range(b * BLOCK, (b + 1) * BLOCK)]

    def newest(self, n: int) -> list[dict[str, Any]]:
        """Rows 0..n-1, newest first (for building probes)."""
        out: list[dict[str, Any]] = []
        for b in range(math.ceil(n / BLOCK)):
            out.extend(self.block(b))
        return out[:n]

    def oldest_first(self, n: int) -> Iterator[dict[str, Any]]:
        """Rows 0..n-1 as table rows, oldest first, with ids 1..n (id order = time order)."""
        for b in range(math.ceil(n / BLOCK) - 1, -1, -1):
            rows = self.block(b)
            for i in range(min(n, (b + 1) * BLOCK) - 1, b * BLOCK - 1, -1):
                r = rows[i - b * BLOCK]
                row_id = n - i
                r = {k: v for k, v in r.items() if k != "_body"}
                r["id"], r["ref"], r["merged_into_id"] = row_id, ref_for(row_id), None
                if r["status"] == "merged":  # into the ticket before it, already inserted
                    r["status"] = "merged" if row_id > 1 else "closed"
                    r["merged_into_id"] = row_id - 1 if row_id > 1 else None
                yield r


def incident_row() -> dict[str, Any]:
    return {
        "id": 1,
        "ref": "I-1",
        "status": "open",
        "title": OUTAGE[0][1],
        "category": "email",
        "opened_at": END - timedelta(minutes=20),
        "last_at": END,
        "ticket_count": 0,
        "customer_count": 0,
        "detection": {"rule": "generated by bench/triage.py"},
    }


def _marker(params: Params, n: int, schema: str) -> str:
    return json.dumps({**asdict(params), "n": n, "schema": schema, "generator": GENERATOR})


def _finish_rows(conn: Any, params: Params, n: int, schema: str) -> None:
    burst = min(params.burst, n)
    conn.execute(
        text("UPDATE incidents SET ticket_count = :c, customer_count = :c WHERE id = 1"),
        {"c": burst},
    )
    conn.execute(
        insert(TABLES["settings"]),
        [{"key": MARKER, "value": _marker(params, n, schema), "created_at": END}],
    )


def generate_sqlite(path: Path, tl: Timeline, n: int, schema: str) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    db = Database(f"sqlite:///{path}")

    def fast(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")  # generation only; measurement uses FULL
        cur.execute("PRAGMA cache_size=-1000000")  # 1 GB while the indexes are built
        cur.close()

    event.listen(db.engine, "connect", fast)
    try:
        db.upgrade()
        with db.engine.begin() as conn:
            conn.execute(insert(TABLES["incidents"]), [incident_row()])
            for batch in batches(tl.oldest_first(n), BATCH):
                conn.execute(insert(TABLES["tickets"]), batch)
            _finish_rows(conn, tl.p, n, schema)
        raw = db.engine.raw_connection()  # outside a transaction (the engine BEGINs on use)
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
    finally:
        db.dispose()


TICKET_COLUMNS = (
    "id", "ref", "status", "subject", "customer", "requester", "channel", "message_count",
    "created_at", "updated_at", "assign_by", "respond_by", "category", "priority", "severity",
    "language", "flags", "match_text", "merged_into_id", "incident_id",
)  # fmt: skip


def generate_postgresql(admin: Engine, url: str, tl: Timeline, n: int, schema: str) -> None:
    db = migrated_anew(admin, url)
    try:
        with db.engine.begin() as conn:
            conn.execute(insert(TABLES["incidents"]), [incident_row()])
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cols = ", ".join(TICKET_COLUMNS)
            with cur.copy(f"COPY tickets ({cols}) FROM STDIN") as copy:
                for r in tl.oldest_first(n):
                    r["flags"] = json.dumps(r["flags"])
                    copy.write_row([r[c] for c in TICKET_COLUMNS])
            # Ids were given explicitly: move the sequences past them for the probes' inserts.
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('tickets', 'id'), "
                "(SELECT max(id) FROM tickets))"
            )
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('incidents', 'id'), 1)")
            _finish_rows(conn, tl.p, n, schema)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")  # what autovacuum does after a bulk load
    finally:
        db.dispose()


def ensure_database(args: argparse.Namespace, tl: Timeline, n: int) -> tuple[str, float | None]:
    """The URL of a database holding the first ``n`` rows of the timeline; generation seconds."""
    schema = head_revision() or "none"
    key = tl.p.key(n, schema)
    if args.database == "sqlite":
        path = Path(args.workdir) / f"tickets-{n}-s{schema}-{key}.db"
        url = f"sqlite:///{path}"
    else:
        url = f"{args.pg_admin.rsplit('/', 1)[0]}/buzon_bench_triage_{n}"
    if not args.fresh and stored_setting(url, MARKER) == _marker(tl.p, n, schema):
        return url, None
    print(f"  generating {n:,} tickets into {url} ...", flush=True)
    started = time.perf_counter()
    if args.database == "sqlite":
        generate_sqlite(path, tl, n, schema)
    else:
        admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")
        try:
            generate_postgresql(admin, url, tl, n, schema)
        finally:
            admin.dispose()
    return url, time.perf_counter() - started


def describe(db: Database, tl: Timeline, n: int) -> dict[str, Any]:
    with db.engine.connect() as conn:
        q = conn.exec_driver_sql
        customers = q("SELECT count(DISTINCT customer) FROM tickets").scalar()
        by_status = {
            str(k): int(v) for k, v in q("SELECT status, count(*) FROM tickets GROUP BY status")
        }
        if db.backend == "sqlite":
            pages = q("PRAGMA page_count").scalar() or 0
            size = pages * (q("PRAGMA page_size").scalar() or 0)
        else:
            size = q("SELECT pg_database_size(current_database())").scalar() or 0
    return {
        "tickets": n,
        "customers": customers,
        "status": by_status,
        "span_days": round(tl.span_days(n), 1),
        "mib": round(size / 2**20),
    }


# --------------------------------------------------------------------------- probes


def make_probes(tl: Timeline, n_small: int, count: int, seed: int, triager: Triager) -> list[Probe]:
    """The messages looked up at both sizes; their customers and matters are in both DBs."""
    rng = random.Random(f"{seed}:probes")
    newest = tl.newest(n_small)
    cut = (ARRIVAL - END).total_seconds() / 86400 + 13.5
    repeatable = [
        r
        for i, r in enumerate(newest)
        if i >= tl.p.burst and r["status"] == "open" and r["channel"] == "email"
        and tl.age_days(i) < cut and r["match_text"].count(" ") >= 2
    ]  # fmt: skip
    probes = []
    for k in range(count):
        roll, acc, kind = rng.random(), 0.0, KINDS[-1][0]
        for name, share in KINDS:
            acc += share
            if roll < acc:
                kind = name
                break
        if kind == "repeat" and repeatable:
            r = rng.choice(repeatable)
            probe = Probe(kind, r["subject"], "Hola de nuevo,\n" + r["_body"], r["customer"])
        elif kind == "outage":
            _lang, subject, body = OUTAGE[k % 3]
            s, b = vary(rng, subject, body)
            probe = Probe(kind, s, b, f"nuevo{k}@afectado{k}.es")
        else:
            sample = rng.choice(tl.samples)
            s, b = vary(rng, sample.subject, sample.body)
            who = rng.choice(newest)["customer"] if kind == "known" else f"nunca{k}@visto{k}.es"
            probe = Probe(kind, s, b, who)
        probe.fingerprint = fingerprint(probe.subject, probe.text)
        facts = _facts(probe.subject, probe.text, "email", "soporte@example.com")
        probe.category = triager.classify(facts).category.value
        probes.append(probe)
    return probes


# --------------------------------------------------------------------------- measuring


class Desk:
    """One database opened the daemon's way, and how one probe runs through the two steps."""

    def __init__(self, label: str, url: str, workdir: Path) -> None:
        self.label, self.url = label, url
        self.db = Database(url)  # the daemon's engine settings (WAL, synchronous=FULL, ...)
        self.blobs = BlobStore(workdir / "blobs")
        from daemon.logging import get_logger

        self.log = get_logger(component="bench")

    def work(self, session: Any, p: Probe) -> Work:
        msg = Message(
            message_id=f"probe-{id(p)}@bench.invalid",
            raw=b"",
            raw_sha256="0" * 64,
            size=0,
            state="done",
            source="bench",
            received_at=ARRIVAL,
            stored_at=ARRIVAL,
            subject=p.subject,
            from_addr=p.customer,
            text=p.text,
        )
        return Work(
            spool_id="bench",
            raw=b"",
            sha256="0" * 64,
            source="bench",
            envelope={},
            received_at=ARRIVAL,
            parsed=None,
            quarantine_reason="",
            session=session,
            blobs=self.blobs,
            now=ARRIVAL,
            log=self.log,
            message=msg,
            fingerprint=p.fingerprint,
        )

    def run_duplicate(self, p: Probe) -> tuple[int, tuple[Any, ...]]:
        with self.db.session() as s:
            s.connection()  # the message's transaction is open before the step runs
            work = self.work(s, p)
            t0 = time.perf_counter_ns()
            hit = collapse_duplicate(work, p.customer)
            ns = time.perf_counter_ns() - t0
            outcome = (hit, work.ticket.created_at if work.ticket is not None else None)
            s.rollback()
        return ns, outcome

    def run_incident(self, p: Probe) -> tuple[int, tuple[Any, ...]]:
        with self.db.session() as s:
            ticket = Ticket(
                status="open",
                subject=p.subject,
                customer=p.customer,
                requester=p.customer,
                channel="email",
                message_count=1,
                created_at=ARRIVAL,
                updated_at=ARRIVAL,
                category=p.category,
                match_text=p.fingerprint,
                flags=[],
            )
            s.add(ticket)
            s.flush()  # open_ticket flushed it in the thread step, before incident runs
            work = self.work(s, p)
            work.ticket, work.opened = ticket, True
            t0 = time.perf_counter_ns()
            incident(work)
            ns = time.perf_counter_ns() - t0
            outcome = tuple(name for name, _ in work.events)
            s.rollback()
        return ns, outcome

    def lookups(self, probes: Sequence[Probe]) -> tuple[list[int], list[int], list[Any]]:
        dup, inc, outcomes = [], [], []
        for p in probes:
            d_ns, d_out = self.run_duplicate(p)
            i_ns, i_out = self.run_incident(p)
            dup.append(d_ns)
            inc.append(i_ns)
            outcomes.append((d_out, i_out))
        return dup, inc, outcomes

    def candidates(self, probes: Sequence[Probe]) -> tuple[list[int], list[int], list[Any]]:
        """What the two queries return per probe (untimed): counts, and the candidates'
        fingerprints (ids differ by size)."""
        m = config_mod.MatchingConfig()
        dup, inc, seen = [], [], []
        with self.db.session() as s:
            for p in probes:
                a = repo.open_tickets_of_customer(
                    s,
                    p.customer,
                    since=ARRIVAL - timedelta(days=m.duplicate_window_days),
                    limit=m.duplicate_candidates,
                )
                b = repo.tickets_created_since(
                    s,
                    ARRIVAL - timedelta(minutes=m.incident_window_minutes),
                    limit=m.incident_candidates,
                    category=p.category or None,
                )
                dup.append(len(a))
                inc.append(len(b))
                seen.append(([t.match_text for t in a], [t.match_text for t in b]))
            s.rollback()
        return dup, inc, seen

    def plans(self, probes: Sequence[Probe]) -> list[tuple[str, str, list[str]]]:
        """(step, statement, plan lines) for every SELECT the two steps issue for these probes."""
        captured: list[tuple[str, str, Any]] = []
        step = [""]

        def grab(_c: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, _many: bool) -> None:
            if stmt.lstrip().upper().startswith("SELECT") and step[0]:
                captured.append((step[0], stmt, params))

        event.listen(self.db.engine, "before_cursor_execute", grab)
        try:
            for p in probes:
                step[0] = "duplicate"
                self.run_duplicate(p)
                # The setup flush before the clock is an INSERT: every SELECT is incident()'s.
                step[0] = "incident"
                self.run_incident(p)
                step[0] = ""
        finally:
            event.remove(self.db.engine, "before_cursor_execute", grab)
        out, done = [], set()
        for name, stmt, params in captured:
            if (name, stmt) in done:
                continue
            done.add((name, stmt))
            out.append((name, stmt, self._explain(stmt, params)))
        return out

    def _explain(self, stmt: str, params: Any) -> list[str]:
        raw = self.db.engine.raw_connection()
        try:
            cur = raw.cursor()
            if self.db.backend == "sqlite":
                cur.execute("EXPLAIN QUERY PLAN " + stmt, params)
                lines = [str(row[3]) for row in cur.fetchall()]
            else:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt, params)
                lines = [str(row[0]) for row in cur.fetchall()]
            raw.rollback()
            return lines
        finally:
            raw.close()


def classify_pass(triager: Triager, facts: Sequence[MessageFacts]) -> tuple[list[int], float]:
    out = []
    cpu0 = time.process_time()
    for f in facts:
        t0 = time.perf_counter_ns()
        triager.classify(f)
        out.append(time.perf_counter_ns() - t0)
    return out, time.process_time() - cpu0


def fingerprint_pass(probes: Sequence[Probe]) -> list[int]:
    out = []
    for p in probes:
        t0 = time.perf_counter_ns()
        fingerprint(p.subject, p.text)
        out.append(time.perf_counter_ns() - t0)
    return out


def plan_verdict(backend: str, lines: Sequence[str]) -> str:
    joined = " ".join(lines)
    if backend == "sqlite":
        used = re.findall(r"USING (?:COVERING )?INDEX (\w+)|USING INTEGER PRIMARY KEY", joined)
        scan = re.search(r"\bSCAN tickets\b(?! USING)", joined)
        sort = "TEMP B-TREE" in joined
    else:
        used = re.findall(r"Index(?: Only)? Scan(?: Backward)? using (\w+)", joined)
        scan = re.search(r"Seq Scan on tickets", joined)
        sort = bool(re.search(r"\bSort\b", joined))
    names = ", ".join(u or "rowid" for u in used) or "none"
    return (
        f"index: {names}; full scan: {'YES' if scan else 'no'}; "
        f"separate sort: {'YES' if sort else 'no'}"
    )


# --------------------------------------------------------------------------- report


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--small", type=int, default=10_000, help="tickets in the baseline database")
    p.add_argument("--large", type=int, default=1_000_000, help="tickets in the large database")
    p.add_argument("--messages", type=int, default=2000, help="probe messages per pass")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--pg-admin", default=PG_ADMIN, help="URL of a database to CREATE from")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "buzon-bench-triage"))
    p.add_argument("--fresh", action="store_true", help="regenerate the databases")
    p.add_argument("--per-day", type=float, default=650.0, help="tickets a day, now")
    p.add_argument("--customers", type=int, default=200_000)
    p.add_argument("--burst", type=int, default=40, help="outage tickets in the last 20 min")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--model", help="a learned triage model (.npz) to classify with, as [triage]")
    p.add_argument("--cpu", type=int, default=-1, help="CPU to pin to (default: the last one)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N, large DB")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1000 <= args.small < args.large <= 5_000_000:
        p.error("need 1000 <= --small < --large <= 5000000")
    if not 10 <= args.messages <= 100_000 or not 1 <= args.rounds <= 10:
        p.error("--messages must be 10..100000 and --rounds 1..10")
    if not 0 <= args.burst < args.small or args.customers < 1 or args.per_day <= 0:
        p.error("--burst must be under --small; --customers and --per-day positive")


def _pin(cpu: int) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    chosen = cpus[-1] if cpu < 0 else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


def _print_plans(desk: Desk, probes: Sequence[Probe]) -> list[dict[str, Any]]:
    print(f"\nquery plans at {desk.label} ({desk.db.backend}):")
    out = []
    for step, stmt, lines in desk.plans(probes):
        flat = " ".join(stmt.split())
        where = flat[flat.find(" FROM ") :] if " FROM " in flat else flat
        verdict = plan_verdict(desk.db.backend, lines)
        print(f"  [{step}] SELECT ...{where[:150]}")
        for line in lines:
            print(f"      {line}")
        print(f"      -> {verdict}")
        out.append(
            {"size": desk.label, "step": step, "sql": flat, "plan": lines, "verdict": verdict}
        )
    return out


def _measure(
    desks: Sequence[Desk],
    probes: Sequence[Probe],
    facts: Sequence[MessageFacts],
    triager: Triager,
    rounds: int,
) -> tuple[dict[str, dict[str, Stats]], dict[str, list[float]], list[list[Any]]]:
    stats = {d.label: {ph: Stats() for ph in PHASES} for d in desks}
    cpu: dict[str, list[float]] = {d.label: [] for d in desks}
    outcomes: list[list[Any]] = [[] for _ in desks]
    for d in desks:  # warm-up: caches, lazy imports, statement caches
        classify_pass(triager, facts[:200])
        d.lookups(probes)
    for r in range(rounds):
        order = list(enumerate(desks))
        if r % 2:
            order.reverse()
        for idx, d in order:
            c_ns, c_cpu = classify_pass(triager, facts)
            s = stats[d.label]
            s["classification"].rounds.append(c_ns)
            cpu[d.label].append(c_cpu)
            s["fingerprint"].rounds.append(fingerprint_pass(probes))
            dup, inc, out = d.lookups(probes)
            s["duplicate"].rounds.append(dup)
            s["incident"].rounds.append(inc)
            outcomes[idx] = out
            print(
                f"  round {r + 1} {d.label:>9}: classify {statistics.fmean(c_ns) / 1000:7.1f} us, "
                f"duplicate {statistics.fmean(dup) / 1000:7.1f} us, "
                f"incident {statistics.fmean(inc) / 1000:7.1f} us",
                flush=True,
            )
    return stats, cpu, outcomes


def _profile(desk: Desk, probes: Sequence[Probe], top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    desk.lookups(probes)
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _table(stats: dict[str, dict[str, Stats]], small: str, large: str) -> dict[str, Any]:
    print()
    head = f"{'per message':<22} {small + ' mean':>14} {'p99':>9} {large + ' mean':>16} {'p99':>9}"
    print(f"{head} {'ratio mean':>11} {'ratio p99':>10}")
    rows: dict[str, Any] = {}
    total = {k: 0.0 for k in (small, large)}
    for ph in PHASES:
        a, b = stats[small][ph], stats[large][ph]
        ratio, ratio99 = b.mean_us() / a.mean_us(), b.p99_us() / a.p99_us()
        total[small] += a.mean_us()
        total[large] += b.mean_us()
        print(
            f"{ph:<22} {a.mean_us():>11.1f} us {a.p99_us():>9.1f} {b.mean_us():>13.1f} us "
            f"{b.p99_us():>9.1f} {ratio:>11.2f} {ratio99:>10.2f}"
        )
        rows[ph] = {
            "small_mean_us": round(a.mean_us(), 1),
            "small_p50_us": round(a.p50_us(), 1),
            "small_p99_us": round(a.p99_us(), 1),
            "large_mean_us": round(b.mean_us(), 1),
            "large_p50_us": round(b.p50_us(), 1),
            "large_p99_us": round(b.p99_us(), 1),
            "ratio_mean": round(ratio, 3),
            "ratio_p99": round(ratio99, 3),
        }
    ratio_total = total[large] / total[small]
    print(
        f"{'all four (sum)':<22} {total[small]:>11.1f} us {'':>9} {total[large]:>13.1f} us "
        f"{'':>9} {ratio_total:>11.2f}"
    )
    rows["total"] = {
        "small_mean_us": round(total[small], 1),
        "large_mean_us": round(total[large], 1),
        "ratio_mean": round(ratio_total, 3),
    }
    return rows


def _goals(rows: dict[str, Any], cls_rate: float) -> dict[str, bool]:
    goals = {
        "classification >= 1000 msg/s on one core": cls_rate >= 1000,
        "duplicate lookup 1M/10k <= 1.5": rows["duplicate"]["ratio_mean"] <= 1.5,
        "incident lookup 1M/10k <= 1.5": rows["incident"]["ratio_mean"] <= 1.5,
        "whole per-message cost 1M/10k <= 1.5": rows["total"]["ratio_mean"] <= 1.5,
    }
    print()
    for name, ok in goals.items():
        print(f"{'GOAL MET' if ok else 'GOAL NOT MET'}: {name}")
    return goals


def _open_desks(
    args: argparse.Namespace, tl: Timeline, scratch: Path, report: dict[str, Any]
) -> list[Desk]:
    """Generate (or reuse) both databases and open them the daemon's way."""
    desks = []
    report["generated_seconds"], report["databases"] = {}, {}
    for n in (args.small, args.large):
        url, secs = ensure_database(args, tl, n)
        done = f"generated in {secs:.1f} s" if secs is not None else "cached"
        print(f"  {n:,} tickets: {done} ({url})", flush=True)
        desk = Desk(f"{n:,}", url, scratch)
        info = describe(desk.db, tl, n)
        print(f"  {desk.label}: {info}")
        report["generated_seconds"][str(n)] = None if secs is None else round(secs, 1)
        report["databases"][str(n)] = info
        desks.append(desk)
    if tl.span_days(args.small) < 14.1:
        print("  NOTE: the small database spans under the 14-day duplicate window")
    return desks


def _compare_candidates(desks: Sequence[Desk], probes: Sequence[Probe]) -> bool:
    cands = [d.candidates(probes) for d in desks]
    print()
    for d, (dup_c, inc_c, _) in zip(desks, cands, strict=True):
        print(
            f"candidates at {d.label}: duplicate mean {statistics.fmean(dup_c):.2f} "
            f"max {max(dup_c)}; incident mean {statistics.fmean(inc_c):.2f} max {max(inc_c)}"
        )
    same = bool(cands[0][2] == cands[1][2])
    print(f"both databases return the same candidate rows: {'yes' if same else 'NO'}")
    return same


def _outcomes(outcomes: list[list[Any]], report: dict[str, Any]) -> None:
    first = outcomes[0]
    report["same_outcomes"] = outcomes[0] == outcomes[1]
    report["collapsed"] = sum(1 for (d_out, _) in first if d_out[0])
    report["incident_linked"] = sum(1 for (_, i_out) in first if "incident.updated" in i_out)
    report["incident_detected"] = sum(1 for (_, i_out) in first if "incident.detected" in i_out)
    print(
        f"outcomes: {report['collapsed']} collapsed as duplicates, "
        f"{report['incident_linked']} linked to the open incident, "
        f"{report['incident_detected']} detected a new one; "
        f"same at both sizes: {'yes' if report['same_outcomes'] else 'NO'}"
    )


def _classification_rate(
    rows: dict[str, Any], cpu_s: dict[str, list[float]], n: int, cpu: int
) -> float:
    means: tuple[float, float] = (
        rows["classification"]["small_mean_us"],
        rows["classification"]["large_mean_us"],
    )
    rate = 1e6 / max(means)
    cpu_rate = n / statistics.median([x for v in cpu_s.values() for x in v])
    print(
        f"\nclassification: {rate:,.0f} msg/s wall (slower size; faster {1e6 / min(means):,.0f}),"
        f" {cpu_rate:,.0f} msg/s per CPU second, one thread pinned to CPU {cpu}"
    )
    rows["classification"]["msgs_per_cpu_s"] = round(cpu_rate, 1)
    return rate


def main(argv: list[str] | None = None) -> int:
    p = _arg_parser()
    args = p.parse_args(argv)
    _check(p, args)
    from daemon import logging as logmod

    logmod.configure("warning", "json", stream=sys.stderr)
    cpu = _pin(args.cpu)
    scratch = Path(args.workdir) / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cfg_text = BASE_TOML + (f'[triage]\nmodel = "{args.model}"\n' if args.model else "")
    triager = Triager.from_config(config_mod.parse(cfg_text, base=scratch, source="bench"))
    params = Params(args.per_day, args.customers, args.burst, args.seed)
    samples = load_samples()
    tl = Timeline(params, samples)
    report: dict[str, Any] = {
        "bench": "triage",
        "database": args.database,
        "sizes": [args.small, args.large],
        "messages": args.messages,
        "rounds": args.rounds,
        "params": asdict(params),
        "cpu": cpu,
    }
    print(
        f"{args.database}, pinned to CPU {cpu}; {len(samples)} samples from {TUNE.name}; "
        f"learned model: {'yes' if triager.model else 'none (rules only)'}"
    )
    desks = _open_desks(args, tl, scratch, report)

    probes = make_probes(tl, args.small, args.messages, args.seed, triager)
    report["probes"] = {k: sum(1 for pr in probes if pr.kind == k) for k, _ in KINDS}
    print(f"probes: {report['probes']}")
    one_of_each = list({pr.kind: pr for pr in probes}.values())
    report["plans"] = [plan for d in desks for plan in _print_plans(d, one_of_each)]
    report["same_candidates"] = _compare_candidates(desks, probes)

    facts = [_facts(s.subject, s.body, s.channel, s.to) for s in samples]
    facts = [facts[i % len(facts)] for i in range(args.messages)]
    print(f"\n{args.rounds} round(s) x {args.messages} messages per size, sizes alternating:")
    stats, cpu_s, outcomes = _measure(desks, probes, facts, triager, args.rounds)
    _outcomes(outcomes, report)
    rows = _table(stats, desks[0].label, desks[1].label)
    rate = _classification_rate(rows, cpu_s, args.messages, cpu)
    report["per_message"] = rows
    report["classification_msgs_per_s"] = round(rate, 1)
    report["goals"] = _goals(rows, rate)
    if args.profile:
        print(f"\ncProfile of one lookup pass at {desks[1].label} (top {args.profile}):")
        print(_profile(desks[1], probes, args.profile))
    for d in desks:
        d.db.dispose()
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
