"""Open a database from a URL, with the settings that make a commit an acknowledgement.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed row survives a
power cut, not only a crash) and a busy timeout so the CLI and the daemon can
share a file. PostgreSQL keeps its server defaults; we never turn off
``synchronous_commit`` on this path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from storage import eventlog
from storage.types import json_dumps, json_loads

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration's revision. A database already at it is opened without importing
# Alembic and reading its scripts: ~0.2 s of every process (the daemon, its ingest
# process, each command). tests/storage/test_migrations.py holds it to Alembic's head.
HEAD_REVISION = "0009"
BUSY_TIMEOUT_MS = 30_000
# libpq waits forever by default: for a connect to a server that does not answer (a
# partition, a firewall dropping packets) and for a reply on a connection whose peer
# vanished. An ingest worker then hung silently for the whole outage (DUR-10) instead
# of failing, saying so, and retrying. Fail the connect after 5 s; find a dead peer
# within about a minute by keepalives (idle) and tcp_user_timeout (unacknowledged
# sends). A URL that sets any of these keeps its own value.
PG_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
# A pooled PostgreSQL connection is pinged before use only after it sat this long in the
# pool. SQLAlchemy's pool_pre_ping pings at every checkout: a round trip and a statement a
# transaction, for connections a busy daemon used a moment ago. One
# that dies in use (a server restart, pg_terminate_backend) fails its transaction, which
# every caller retries as transient, and the pool is invalidated as on a failed ping.
IDLE_PING_S = 10.0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Python's sqlite3 opens implicit transactions; issue pragmas outside one.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    # 16 MiB of page cache per connection (default 2 MiB), filled only as pages are read:
    # a scheduler batch reads 500 ticket rows of ~3 KB, a page each, then updates them
    # with their indexes and events in one transaction. A 1M-ticket pass went from 1.75
    # to 1.66 s; 64 MiB did no better (docs/BENCHMARKS.md).
    cur.execute("PRAGMA cache_size=-16384")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that upgrades to a
    # writer later fails with "database is locked" instead of waiting.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """Return an engine for ``url`` configured for durability on its backend."""
    parsed = make_url(url)
    # JSON columns are sanitised by their serializer (``storage.models.SafeJSON``).
    kwargs.setdefault("json_serializer", json_dumps)
    kwargs.setdefault("json_deserializer", json_loads)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in {"", "psycopg2"}:
        # psycopg 3 is the driver we ship; plain postgresql:// would pick psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_driver_name() == "psycopg":  # libpq's parameter names
        defaults = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
        kwargs["connect_args"] = {**defaults, **kwargs.get("connect_args", {})}
    engine = create_engine(parsed, **kwargs)
    _ping_when_idle(engine, IDLE_PING_S)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a connection on checkout when it was checked in more than ``idle_s`` ago."""
    dialect = engine.dialect

    def checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return  # new, or used a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                # The pool reconnects and drops its other connections, older than now.
                raise InvalidatePoolError(f"idle connection is dead: {exc}") from exc
            raise

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Migrate the schema to the newest revision (a no-op when it is current)."""
    if stored_revisions(engine) == [HEAD_REVISION]:
        return
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def stored_revisions(engine: Engine) -> list[str]:
    """The revisions the database says it is at; none when it has no schema yet."""
    with engine.connect() as conn:
        try:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        except DBAPIError:  # no such table: Alembic creates it and the schema
            return []


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


class Database:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = create_db_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        eventlog.install(self._sessions)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in a transaction, committed on success and rolled back on any
        exception: for a Core statement on its own, where a session's setup and commit
        cost more than the statement (the outbox settles each sent mail so)."""
        with self.engine.begin() as conn:
            yield conn

    def session(self) -> Session:
        return self._sessions()

    def upgrade(self) -> None:
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
