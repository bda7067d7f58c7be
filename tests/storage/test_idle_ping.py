"""A pooled PostgreSQL connection is pinged only after it sat idle (storage.engine)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from storage import engine as engine_mod
from storage.engine import Database

IDLE = 0.3


def _pid(db: Database) -> int:
    with db.transaction() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(admin_url: str, pid: int) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    admin.dispose()


@pytest.fixture
def db(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """One pooled connection, pinged after ``IDLE`` seconds in the pool."""
    monkeypatch.setattr(engine_mod, "IDLE_PING_S", IDLE)
    database = Database(pg_url, pool_size=1, max_overflow=0)
    yield database
    database.dispose()


@pytest.fixture
def pings(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per ping the pool sends (a ping bypasses the engine's cursor events)."""
    seen: list[int] = []
    dialect = db.engine.dialect
    real = dialect.do_ping

    def counted(conn: Any) -> bool:
        seen.append(1)
        return real(conn)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


def test_a_connection_used_a_moment_ago_is_not_pinged(
    db: Database, pings: list[int], pg_url: str
) -> None:
    first = _pid(db)
    for _ in range(5):
        assert _pid(db) == first
    assert pings == []  # pool_pre_ping would have sent five
    # The price: killed in the pool and reused at once, it fails this transaction (every
    # caller retries it as transient), and the pool's next connection is a new one.
    _kill(pg_url, first)
    with pytest.raises(OperationalError):
        _pid(db)
    assert _pid(db) != first


def test_an_idle_connection_found_dead_is_replaced_before_use(
    db: Database, pings: list[int], pg_url: str
) -> None:
    first = _pid(db)
    _kill(pg_url, first)  # a server restart while the daemon was quiet
    time.sleep(IDLE + 0.2)
    second = _pid(db)  # no error: the checkout's ping found it dead and reconnected
    assert second != first
    time.sleep(IDLE + 0.2)
    assert _pid(db) == second  # a live idle connection passes its ping and is kept
    assert len(pings) == 2
