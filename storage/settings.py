"""Values every instance on one database must share, created once by whoever needs them first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from storage.models import Setting

# The name of the setting, not a secret: the value is random per database.
REPLY_TOKEN_KEY = "reply_token_key"  # noqa: S105


def get_or_create(session: Session, key: str, make: Callable[[], str], at: datetime) -> str:
    """The stored value of ``key``; the first caller stores ``make()``.

    Two instances racing to create it collide on the primary key; the loser's
    transaction fails with an IntegrityError, which the ingest runner retries,
    and the retry reads the winner's value.
    """
    row = session.get(Setting, key)
    if row is None:
        row = Setting(key=key, value=make(), created_at=at)
        session.add(row)
        session.flush()
    return row.value
