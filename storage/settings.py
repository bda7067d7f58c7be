"""Values every instance on one database must share, created once by whoever needs them first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import Setting

# The name of the setting, not a secret: the value is random per database.
REPLY_TOKEN_KEY = "reply_token_key"  # noqa: S105
_CREATED = "buzon.settings.created"  # session.info: the keys this transaction stored


def get_or_create(session: Session, key: str, make: Callable[[], str], at: datetime) -> str:
    """The stored value of ``key``; the first caller stores ``make()``.

    Instances starting on a fresh database reach for the same key at once (their
    schedulers' first batches, their first acknowledgements). The insert runs in a
    savepoint: the loser of that race rolls back only the savepoint, reads the
    winner's value and carries on, instead of failing its whole transaction.
    """
    row = session.get(Setting, key)
    if row is not None:
        return row.value
    try:
        with session.begin_nested():
            session.add(Setting(key=key, value=make(), created_at=at))
        session.info.setdefault(_CREATED, set()).add(key)
    except IntegrityError:
        pass  # stored by another instance since our read: its value is the one
    row = session.get(Setting, key, populate_existing=True)
    assert row is not None  # ours, or the committed winner's (the insert waited for it)
    return row.value


class Permanent:
    """A setting never changed once stored (the reply-token key), read once per process.

    Kept only once read in a transaction that did not store it itself: a value this
    transaction stored could still be rolled back, and a process that kept it would
    sign with a key no other instance ever sees.
    """

    def __init__(self, key: str, make: Callable[[], str]) -> None:
        self.key, self.make, self._value = key, make, ""

    def get(self, session: Session, at: datetime) -> str:
        if self._value:
            return self._value
        value = get_or_create(session, self.key, self.make, at)
        if self.key not in session.info.get(_CREATED, ()):
            self._value = value
        return value
