"""The triage bench's databases: generated, cached and described.

Generated databases are cached under ``--workdir`` (SQLite files) or in scratch
PostgreSQL databases ``buzon_bench_triage_<N>`` (``--pg-prefix``), keyed by size, schema
revision and generator parameters; ``--fresh`` regenerates. Generation uses bulk inserts
in one transaction (SQLite with ``synchronous=OFF`` for that phase only; PostgreSQL with
COPY, then ``ANALYZE`` as autovacuum would). SQLite is not ANALYZEd: the daemon never
does. What the rows are is ``bench/triage_data.py``'s.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchlib import (  # (repository first on sys.path)
    batches,
    database_bytes,
    migrated_anew,
    stored_setting,
    wal_checkpoint,
)

# isort: split
from sqlalchemy import Engine, create_engine, event, insert, text
from triage_data import END, GENERATOR, Params, Timeline, incident_row

from storage.engine import Database, head_revision
from storage.models import Base

BATCH = 5000  # rows per executemany
MARKER = "bench.triage"
TABLES = Base.metadata.tables


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
        wal_checkpoint(db)
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
        url = f"{args.pg_admin.rsplit('/', 1)[0]}/{args.pg_prefix}_{n}"
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
    size = database_bytes(db)
    return {
        "tickets": n,
        "customers": customers,
        "status": by_status,
        "span_days": round(tl.span_days(n), 1),
        "mib": round(size / 2**20),
    }
