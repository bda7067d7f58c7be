"""What the benches share: CPU accounting and pinning, the base daemon config, scratch
PostgreSQL databases, and reading a database's plans and size.

Benches run as scripts (``python bench/x.py``), so this folder is on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported at the call: this module puts the repository on sys.path
    from sqlalchemy import Engine

    from storage.engine import Database

# This folder is sys.path[0] for a bench, and its triage.py and transcription.py would
# shadow the packages of those names for every later import: the repository goes first.
REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))

T = TypeVar("T")

# The labelled support mail (es, en, bg) the triage model was tuned on: the benches make
# their tickets' and messages' text of it.
TUNE = REPO / "tests" / "data" / "triage" / "tune.jsonl"

# The local PostgreSQL every bench that needs one creates its scratch databases beside.
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# The index a line of a PostgreSQL plan reads. A bitmap scan uses the index too (it only
# loses its order, and the plan's Sort node says so): without it, a query the planner
# answers with a bitmap scan was reported as using no index at all.
PG_INDEX_USED = r"(?:Index(?: Only)? Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)"

BASE_TOML = (
    "[storage]\n"
    'database = "sqlite:///b.db"\n'
    'spool = "spool"\n'
    'attachments = "att"\n'
    "[smtp]\n"
    'hostname = "bench.buzon.invalid"\n'
    "[log]\n"
    'level = "warning"\n'
)


def daemon_config(tmp: Path, database: str = "") -> Any:
    """The daemon's parsed configuration for an in-process bench: ``BASE_TOML`` with its
    files under ``tmp``, on ``database`` (a URL) instead of the SQLite file when given."""
    from daemon import config

    toml = BASE_TOML.replace('"sqlite:///b.db"', f'"{database}"') if database else BASE_TOML
    return config.parse(toml, base=tmp, source="bench")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user+system, reaped children included) of a process tree (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return total / tick


def pin_cpu(cpu: int) -> int:
    """Pin this process to ``cpu`` (below 0: the last one it may use); the CPU pinned to."""
    cpus = sorted(os.sched_getaffinity(0))
    chosen = cpus[-1] if cpu < 0 else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (the system's pick for port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pseudo_words(rnd: random.Random, count: int = 20_000) -> list[str]:
    """``count`` random consonant-vowel words of 2-4 syllables: messages made of them share
    few stems, so duplicate and incident matching compare them (their real cost) but join
    nothing."""
    cons, vow = "bcdfglmnprstvz", "aeiou"
    return [
        "".join(rnd.choice(cons) + rnd.choice(vow) for _ in range(rnd.randint(2, 4)))
        for _ in range(count)
    ]


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg's conninfo (drop the driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new database ``<prefix>_<hex>`` beside ``admin_url``'s: (its URL, its name);
    dropped at the end, its connections closed first, however the block ends."""
    import psycopg  # only the PostgreSQL benches need it

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}", name
    finally:
        with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def migrated_anew(admin: Engine, url: str) -> Database:
    """The cached bench database at ``url`` dropped (only ours: its name is the bench's),
    created again beside ``admin`` and migrated."""
    from storage.engine import Database

    name = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db = Database(url)
    db.upgrade()
    return db


def stored_setting(url: str, key: str) -> str | None:
    """A bench database's ``settings`` value for ``key`` (what the benches that cache a
    generated database mark it with); None when there is no such file, database, table
    or key: a cache to build anew."""
    from sqlalchemy import text

    from storage.engine import Database

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            found = conn.execute(
                text("SELECT value FROM settings WHERE key = :k"), {"k": key}
            ).scalar()
            return None if found is None else str(found)
    except Exception:  # no file, no table, no database: not a usable cache
        return None
    finally:
        db.dispose()


def jsonl(path: Path) -> Iterator[Any]:
    """The JSON documents of a JSON-lines file, blank lines skipped."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def batches(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    """``rows`` in lists of ``size`` (the last one shorter); ``itertools.batched`` from
    Python 3.12, as lists."""
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def explain(db: Database, stmt: str, params: Any) -> list[str]:
    """The plan of ``stmt`` with ``params``, a line a string: ``EXPLAIN QUERY PLAN`` on
    SQLite, ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL (run, then rolled back)."""
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if db.backend == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + stmt, params)
            lines = [str(row[3]) for row in cur.fetchall()]
        else:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt, params)
            lines = [str(row[0]) for row in cur.fetchall()]
        raw.rollback()
        return lines
    finally:
        raw.close()


def database_bytes(db: Database) -> int:
    """The database's size on disk: SQLite's pages, PostgreSQL's ``pg_database_size``."""
    with db.engine.connect() as conn:
        q = conn.exec_driver_sql
        if db.backend == "sqlite":
            return int(q("PRAGMA page_count").scalar() or 0) * int(
                q("PRAGMA page_size").scalar() or 0
            )
        return int(q("SELECT pg_database_size(current_database())").scalar() or 0)


def wal_checkpoint(db: Database) -> None:
    """Move a SQLite database's WAL into its file and empty it (outside a transaction)."""
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        cur.close()
    finally:
        raw.close()
