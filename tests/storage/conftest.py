"""What the storage tests share: a database on each backend, migrated or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.engine import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database, once on a SQLite file and once on a scratch PostgreSQL one."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'b.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def db(blank: Database) -> Database:
    """The same, migrated to the newest revision."""
    blank.upgrade()
    return blank
