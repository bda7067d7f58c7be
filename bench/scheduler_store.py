"""The scheduler bench's databases: generated, cached, opened, checked and restored.

Generated databases are cached under ``--workdir`` (SQLite) or in scratch PostgreSQL
databases ``buzon_bench_scheduler_<N>_<due>`` (``--pg-prefix``), keyed by size, due
count, schema revision, generator (``scheduler_data.GENERATOR``) and ``--shapes``;
``--fresh`` regenerates.
Generation: bulk inserts in one transaction (SQLite ``executemany`` through the
columns' own bind processors, with ``synchronous=OFF`` and no journal for that phase
only; PostgreSQL ``COPY``, then ``VACUUM ANALYZE`` as autovacuum would). What the rows
are is ``bench/scheduler_data.py``'s.

Each round must start from the same state, and the scheduler commits per batch, so
after every pass the bench undoes it (``restore``, untimed): deletes the outbox rows and
the events the pass added and rewrites the due tickets' rows from a copy read when the
database was opened; PostgreSQL then gets ``VACUUM`` so dead rows do not pile up, SQLite
a WAL checkpoint. A file or ``TEMPLATE`` copy per round was not used: the 1M databases
are several GB, and copying them 8 times per run takes longer than the measurement
and floods the disk while SQLite waits on fsync. The bench checks the restored state
(due count, event count, empty outbox) and refuses a cached database left mid-round.
Opened (``open_desk``), a database is checked by replaying a sample of its tickets
(``verify``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (  # (repository first on sys.path)
    batches,
    migrated_anew,
    stored_setting,
    wal_checkpoint,
)

# isort: split
from scheduler_data import (
    CUTOFF,
    GENERATOR,
    NOW,
    TABLES,
    Case,
    D,
    Shape,
    build_shapes,
    kind_of,
    layout,
    load_samples,
    rows_of,
)
from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)

from daemon import sla
from daemon.config_desk import SlaConfig
from storage import settings as settings_repo
from storage.engine import Database, head_revision
from storage.models import Ticket

CHUNK = 5000  # tickets per executemany
MARKER = "bench.scheduler"
REPLY_KEY = hashlib.sha256(b"bench.scheduler reply key").hexdigest()


# --------------------------------------------------------------------------- generation


class Inserter:
    """Rows as the database takes them, each column through ``procs`` (None: as is).

    A row with a ``key`` is converted once per key; later rows with the same key only
    convert their ``fresh`` columns (the copies of one shape differ only in those).
    """

    def __init__(
        self,
        name: str,
        procs: Callable[[Any], Callable[[Any], Any] | None],
        skip: tuple[str, ...] = (),
        fresh: tuple[str, ...] = (),
    ) -> None:
        table = TABLES[name]
        self.name = name
        self.cols = [c.name for c in table.columns if c.name not in skip]
        self.procs = [procs(table.c[c]) for c in self.cols]
        self.fresh = [i for i, c in enumerate(self.cols) if c in fresh]
        marks = ", ".join("?" for _ in self.cols)
        names = ", ".join(f'"{c}"' for c in self.cols)  # "references" is a keyword
        self.sql = f"INSERT INTO {name} ({names}) VALUES ({marks})"  # noqa: S608 - our table names
        self.copy = f"COPY {name} ({names}) FROM STDIN"
        self.cache: dict[Any, list[Any]] = {}

    def _one(self, i: int, row: dict[str, Any]) -> Any:
        proc, value = self.procs[i], row[self.cols[i]]
        return proc(value) if proc is not None and value is not None else value

    def values(self, row: dict[str, Any], key: Any = None) -> tuple[Any, ...]:
        if key is None:
            return tuple(self._one(i, row) for i in range(len(self.cols)))
        base = self.cache.get(key)
        if base is None:
            base = self.cache[key] = [self._one(i, row) for i in range(len(self.cols))]
            return tuple(base)
        out = list(base)
        for i in self.fresh:
            out[i] = self._one(i, row)
        return tuple(out)


def inserters(dialect: Any) -> dict[str, Inserter]:
    """SQLite: the columns' own bind processors; PostgreSQL COPY: JSON as text, else as is."""
    if dialect.name == "sqlite":

        def procs(col: Any) -> Callable[[Any], Any] | None:
            proc: Callable[[Any], Any] | None = col.type.dialect_impl(dialect).bind_processor(
                dialect
            )
            return proc
    else:

        def procs(col: Any) -> Callable[[Any], Any] | None:
            return json.dumps if col.type.__class__.__name__ == "SafeJSON" else None

    return {
        "tickets": Inserter("tickets", procs, fresh=("id", "ref", "customer", "requester")),
        "messages": Inserter("messages", procs),
        "ticket_events": Inserter(
            "ticket_events", procs, skip=("id",), fresh=("ticket_id", "message_pk")
        ),
    }


def _rows(ins: dict[str, Inserter], chunk: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The chunk's rows per table, converted, in insertion order (tickets first)."""
    tickets = [ins["tickets"].values(r["ticket"], id(r["shape"])) for r in chunk]
    messages = [ins["messages"].values(r["message"]) for r in chunk if r["message"]]
    events = [
        ins["ticket_events"].values(e, (id(r["shape"]), i))
        for r in chunk
        for i, e in enumerate(r["events"])
    ]
    return {"tickets": tickets, "messages": messages, "ticket_events": events}


def _marker(case: Case, schema: str, seed: int, shapes: int = 0) -> str:
    doc: dict[str, Any] = {
        "n": case.n,
        "due": case.due,
        "schema": schema,
        "generator": GENERATOR,
        "seed": seed,
    }
    if shapes:  # other data than the full set of shapes: another database
        doc["shapes"] = shapes
    return json.dumps(doc)


def _settings_rows(
    case: Case, schema: str, seed: int, events: int, shapes: int = 0
) -> list[dict[str, Any]]:
    return [
        {"key": settings_repo.REPLY_TOKEN_KEY, "value": REPLY_KEY, "created_at": CUTOFF - 900 * D},
        {"key": MARKER, "value": _marker(case, schema, seed, shapes), "created_at": NOW},
        {"key": MARKER + ".events", "value": str(events), "created_at": NOW},
    ]


def generate_sqlite(
    path: Path, case: Case, plan: list[Any], *, schema: str, seed: int, shapes: int = 0
) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    db = Database(f"sqlite:///{path}")

    def fast(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")  # generation only; the passes use FULL
        cur.execute("PRAGMA journal_mode=OFF").fetchall()  # not 7 GB of WAL; WAL again on open
        cur.execute("PRAGMA cache_size=-1000000")  # 1 GB while the indexes are built
        cur.close()

    event.listen(db.engine, "connect", fast)
    try:
        db.upgrade()
        ins = inserters(db.engine.dialect)
        events = 0
        raw = db.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN")
            for chunk in batches(rows_of(plan), CHUNK):
                for table, rows in _rows(ins, chunk).items():
                    cur.executemany(ins[table].sql, rows)
                    events += len(rows) if table == "ticket_events" else 0
            cur.execute("COMMIT")
            cur.close()
        finally:
            raw.close()
        with db.engine.begin() as conn:
            rows = _settings_rows(case, schema, seed, events, shapes)
            conn.execute(TABLES["settings"].insert(), rows)
        wal_checkpoint(db)
    finally:
        db.dispose()


def generate_postgresql(
    admin: Engine,
    url: str,
    case: Case,
    plan: list[Any],
    *,
    schema: str,
    seed: int,
    shapes: int = 0,
) -> None:
    db = migrated_anew(admin, url)
    try:
        ins = inserters(db.engine.dialect)
        events = 0
        with db.engine.begin() as conn:
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            for chunk in batches(rows_of(plan), CHUNK):
                for table, rows in _rows(ins, chunk).items():
                    with cur.copy(ins[table].copy) as copy:
                        for row in rows:
                            copy.write_row(row)
                    events += len(rows) if table == "ticket_events" else 0
            for table in ("tickets", "messages"):  # ids were given: move the sequences on
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - ours
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
            rows = _settings_rows(case, schema, seed, events, shapes)
            conn.execute(TABLES["settings"].insert(), rows)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does after a bulk load
    finally:
        db.dispose()


# --------------------------------------------------------------------------- a desk


@dataclass
class Desk:
    """One case's database opened the daemon's way, with what undoing a pass needs."""

    case: Case
    url: str
    db: Database
    events: int = 0  # the last ticket event id of the generated database
    pristine: list[dict[str, Any]] = field(default_factory=list)  # the due tickets' rows
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def label(self) -> str:
        return self.case.label


def _state(db: Database, events: int) -> tuple[int, int, int]:
    """(tickets due at NOW, events after the first ``events`` ids, outbox rows)."""
    t, e, o = TABLES["tickets"], TABLES["ticket_events"], TABLES["outbox"]
    with db.engine.connect() as conn:
        due = conn.execute(select(func.count()).where(t.c.next_due_at <= NOW)).scalar_one()
        added = conn.execute(select(func.count()).where(e.c.id > events)).scalar_one()
        outbox = conn.execute(select(func.count()).select_from(o)).scalar_one()
    return int(due), int(added), int(outbox)


def _pristine(url: str, case: Case) -> int | None:
    """The event count of a cached database in its generated state; None if unusable."""
    stored = stored_setting(url, MARKER + ".events")
    if stored is None:
        return None
    db = Database(url)
    try:
        due, added, outbox = _state(db, int(stored))
        with db.engine.connect() as conn:
            last = conn.execute(select(func.max(TABLES["ticket_events"].c.id))).scalar()
    finally:
        db.dispose()
    if (due, added, outbox, last) != (case.due, 0, 0, int(stored)):
        print(f"  {url}: left mid-round (due {due}, outbox {outbox}); regenerating")
        return None
    return int(stored)


class Generator:
    """Builds the shapes once per run (only if a database must be generated)."""

    def __init__(self, args: argparse.Namespace, cfg: SlaConfig) -> None:
        self.args, self.cfg = args, cfg
        self._pools: dict[str, list[Shape]] | None = None

    def pools(self) -> dict[str, list[Shape]]:
        if self._pools is None:
            started = time.perf_counter()
            samples = load_samples()
            self._pools = build_shapes(samples, self.cfg, self.args.seed, self.args.shapes)
            print(
                f"  built {sum(len(p) for p in self._pools.values())} shapes through daemon.sla "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        return self._pools

    def ensure(self, case: Case) -> tuple[str, float | None]:
        """The URL of the case's database in its generated state; generation seconds."""
        schema = head_revision() or "none"
        args = self.args
        wanted = _marker(case, schema, args.seed, args.shapes)
        key = hashlib.sha256(wanted.encode()).hexdigest()[:12]
        if args.database == "sqlite":
            path = Path(args.workdir) / f"tickets-{case.n}-due{case.due}-s{schema}-{key}.db"
            url = f"sqlite:///{path}"
        else:
            url = f"{args.pg_admin.rsplit('/', 1)[0]}/{args.pg_prefix}_{case.n}_{case.due}"
        marker = stored_setting(url, MARKER)
        fresh = args.fresh or marker != wanted
        if not fresh and _pristine(url, case) is not None:
            return url, None
        pools = self.pools()
        print(f"  generating {case.n:,} tickets ({case.due:,} due) into {url} ...", flush=True)
        started = time.perf_counter()
        plan = layout(case, pools, args.seed)
        if args.database == "sqlite":
            generate_sqlite(path, case, plan, schema=schema, seed=args.seed, shapes=args.shapes)
        else:
            admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")
            try:
                generate_postgresql(
                    admin, url, case, plan, schema=schema, seed=args.seed, shapes=args.shapes
                )
            finally:
                admin.dispose()
        return url, time.perf_counter() - started


def open_desk(url: str, case: Case) -> Desk:
    """Open the database, keep the due tickets' rows for the undo, count what is due."""
    db = Database(url)  # the daemon's engine settings (WAL, synchronous=FULL, ...)
    desk = Desk(case, url, db)
    t = TABLES["tickets"]
    with db.engine.connect() as conn:
        rows = conn.execute(select(t).where(t.c.next_due_at <= NOW).order_by(t.c.id))
        desk.pristine = [dict(r._mapping) for r in rows]
    with db.engine.connect() as conn:
        desk.events = int(
            conn.execute(select(func.max(TABLES["ticket_events"].c.id))).scalar() or 0
        )
    desk.kinds = Counter(kind_of(r) for r in desk.pristine)
    return desk


def restore(desk: Desk) -> bool:
    """Undo a pass: its outbox rows and events go, the due tickets get their rows back."""
    t, e, o = TABLES["tickets"], TABLES["ticket_events"], TABLES["outbox"]
    cols = [c.name for c in t.columns if c.name != "id"]
    stmt = (
        update(t).where(t.c.id == bindparam("b_id")).values({c: bindparam(f"b_{c}") for c in cols})
    )
    params = [{f"b_{k}": v for k, v in r.items()} for r in desk.pristine]
    with desk.db.engine.begin() as conn:
        conn.execute(delete(o))
        conn.execute(delete(e).where(e.c.id > desk.events))
        for i in range(0, len(params), CHUNK):
            conn.execute(stmt, params[i : i + CHUNK])
    if desk.db.backend == "sqlite":
        wal_checkpoint(desk.db)
    else:
        with desk.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM tickets, ticket_events, outbox")
    return _state(desk.db, desk.events) == (desk.case.due, 0, 0)


def verify(desk: Desk, cfg: SlaConfig, sample: int, seed: int) -> tuple[int, int]:
    """Replay a sample of tickets (every due one up to ``sample``): (agree, checked)."""
    rng = random.Random(f"{seed}:verify")
    due = [r["id"] for r in desk.pristine]
    ids = rng.sample(due, min(sample, len(due)))
    ids += rng.sample(range(1, desk.case.n + 1), min(sample, desk.case.n))
    agree = 0
    with desk.db.session() as s:
        for tid in ids:
            t = s.get_one(Ticket, tid)
            history = sla.history_of(sla.clock_rows(s, t))
            clocks, policy, calendar = sla.replay(history, cfg)
            replayed = sla.columns(clocks, calendar, t.alarms_sent, cfg.at_risk)
            names = (t.sla_policy, t.sla_calendar) == (policy.name, calendar.name)
            agree += int(replayed == sla.stored_columns(t) and names)
        s.rollback()
    return agree, len(ids)
