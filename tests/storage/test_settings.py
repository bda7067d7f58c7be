"""Shared settings: created once by whoever needs them first, kept only once committed."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count

import pytest

from storage import settings
from storage.engine import Database
from storage.models import Setting

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_a_permanent_value_is_kept_only_once_read_from_a_committed_row(db: Database) -> None:
    """The first process to need the key creates it; if that transaction rolls back, the
    process must not go on signing with a key that was never stored."""
    made = count(1)
    key = settings.Permanent("k", lambda: f"value-{next(made)}")
    with pytest.raises(RuntimeError), db.transaction() as s:
        assert key.get(s, NOW) == "value-1"
        raise RuntimeError("the message's transaction failed")
    with db.transaction() as s:
        assert key.get(s, NOW) == "value-2"  # created again: value-1 was never committed
    with db.transaction() as s:
        assert key.get(s, NOW) == "value-2"  # read from the committed row, and now kept
    with db.transaction() as s:
        s.query(Setting).delete()
    with db.transaction() as s:
        assert key.get(s, NOW) == "value-2"  # kept: the database is not read again
