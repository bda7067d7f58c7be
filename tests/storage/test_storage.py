"""Storage behaves the same on SQLite and PostgreSQL, and the migration matches the models."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from storage import repository as repo
from storage.engine import Database, current_revision, head_revision
from storage.models import Base, Contact, Message
from storage.types import clean_text
from support.rows import stored_message

HOSTILE = "a\x00b \ud800 c\x1b[31m ñ 文字 \U0001f600"


def test_migration_matches_models(db: Database) -> None:
    """The Alembic head creates exactly the schema the models describe (no drift)."""
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(db: Database) -> None:
    """Running the migration again on a current database changes nothing."""
    db.upgrade()
    assert current_revision(db.engine) == head_revision()


def test_hostile_text_is_stored_on_every_backend(db: Database) -> None:
    """PARSE-06: NUL bytes and lone surrogates never make PostgreSQL refuse a message."""
    raw = b"\x00\xff\xfe binary \r\n kept exactly"
    with db.transaction() as s:
        s.add(
            stored_message(
                "a" * 64,
                raw=raw,
                subject=HOSTILE,
                text=HOSTILE,
                defects=[HOSTILE],
                auto={"k\x00": HOSTILE},
            )
        )
    with db.transaction() as s:
        m = s.scalar(select(Message))
        assert m is not None
        assert m.raw == raw
        assert m.subject == clean_text(HOSTILE) and "\x00" not in m.subject
        assert m.defects == [clean_text(HOSTILE)]
        assert m.auto == {"k": clean_text(HOSTILE)}


def test_json_columns_store_what_plain_json_would_refuse(db: Database) -> None:
    """NaN (PostgreSQL refuses it) is stored as null, an int key as its string, and a
    value JSON cannot hold is refused with the type's name, not stored as something else."""
    with db.transaction() as s:
        s.add(stored_message("e" * 64, auto={"score": float("nan"), 7: "seven", "x": [1.5, None]}))
    with db.transaction() as s:
        m = s.scalar(select(Message))
        assert m is not None and m.auto == {"score": None, "7": "seven", "x": [1.5, None]}
    with pytest.raises(Exception, match="type object is unsupported"), db.transaction() as s:
        s.add(stored_message("f" * 64, auto={"who": object()}))


def test_datetimes_come_back_aware_utc(db: Database) -> None:
    """Times are stored in UTC and read back with their offset on both backends."""
    madrid = timezone(timedelta(hours=1))
    when = datetime(2026, 12, 24, 16, 30, tzinfo=madrid)
    with db.transaction() as s:
        s.add(stored_message("b" * 64, date=when))
    with db.transaction() as s:
        m = s.scalar(select(Message))
        assert m is not None and m.date == when and m.date.tzinfo == UTC


def test_naive_datetime_is_refused(db: Database) -> None:
    """A naive datetime is a bug in the caller; storage refuses to guess its zone."""
    with pytest.raises(Exception, match="naive datetime"), db.transaction() as s:
        s.add(stored_message("c" * 64, date=datetime(2026, 1, 1)))


def test_same_raw_bytes_cannot_be_stored_twice(db: Database) -> None:
    """The raw SHA-256 is unique: a race between two workers cannot create two rows."""
    with db.transaction() as s:
        s.add(stored_message("d" * 64))
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(stored_message("d" * 64))


def test_sqlite_runs_wal_with_full_sync(tmp_path: Path) -> None:
    """A SQLite commit is an acknowledgement: WAL journal, synchronous=FULL, busy timeout."""
    database = Database(f"sqlite:///{tmp_path / 'b.db'}")
    with database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        # 16 MiB of pages: a scheduler batch's tickets stay cached between read and update.
        assert conn.execute(text("PRAGMA cache_size")).scalar() == -16384
    database.dispose()


@pytest.mark.postgres
def test_instances_starting_together_migrate_a_fresh_postgresql_once(pg_url: str) -> None:
    """Three instances (processes: alembic's context is process-global) upgrading one
    empty database at the same moment all succeed, and the schema is made once."""
    go = time.time() + 2.0  # every process waits for the same instant, then migrates
    code = (
        "import sys, time; from storage.engine import Database; "
        f"time.sleep(max(0.0, {go} - time.time())); "
        "db = Database(sys.argv[1]); db.upgrade(); db.dispose()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errs = [p.communicate(timeout=60)[1] for p in procs]
    results = list(zip((p.returncode for p in procs), errs, strict=True))
    assert [rc for rc, _ in results] == [0, 0, 0], [err[-800:] for _, err in results]
    db = Database(pg_url)
    try:
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()


def test_a_new_contact_is_made_once_per_transaction_without_autoflush(db: Database) -> None:
    """Ingest runs without autoflush: a second look-up in the same transaction finds the
    contact the first one added (not yet written), and one row is stored."""
    at = datetime.now(UTC)
    with db.transaction() as s, s.no_autoflush:
        assert repo.customer_of(s, "ana@cliente.es", "Ana", "cliente.es", at) == "cliente.es"
        assert repo.customer_of(s, "ana@cliente.es", "Ana R.", "otro", at) == "cliente.es"
        assert repo.customer_of(s, "luis@cliente.es", "Luis", "luis", at) == "luis"
    with db.transaction() as s:
        rows = s.execute(select(Contact.address, Contact.name).order_by(Contact.address)).all()
        assert [tuple(r) for r in rows] == [("ana@cliente.es", "Ana"), ("luis@cliente.es", "Luis")]
        assert repo.customer_of(s, "ana@cliente.es", "x", "y", at) == "cliente.es"  # stored
        assert not s.new  # nothing made for a contact already stored
