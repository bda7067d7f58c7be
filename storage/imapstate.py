"""IMAP folder checkpoints and leases: which UIDs are safely spooled, and who may fetch.

A lease is a row lock with an expiry: an instance fetches a folder only while it
holds the lease, renews it while working, and another instance takes over once
it expires (the holder died). Every checkpoint write is fenced by the holder, so
an instance that lost its lease can never move the checkpoint.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import ImapFolderState

MAX_SKIPPED = 100


def _row(session: Session, account: str, folder: str) -> ImapFolderState:
    query = select(ImapFolderState).where(
        ImapFolderState.account == account, ImapFolderState.folder == folder
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        row = ImapFolderState(
            account=account,
            folder=folder,
            last_uid=0,
            holder="",
            state="new",
            last_error="",
            last_fetched=0,
            skipped=[],
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # another instance created it first
            row = session.scalar(query)
            assert row is not None
    return row


def acquire(
    session: Session, account: str, folder: str, *, holder: str, now: datetime, ttl: timedelta
) -> ImapFolderState | None:
    """Take or renew the lease; the folder's state when we hold it, None when another does."""
    row = _row(session, account, folder)
    free = not row.holder or row.lease_until is None or row.lease_until <= now
    if row.holder != holder and not free:
        return None
    row.holder = holder
    row.lease_until = now + ttl
    return row


def release(session: Session, account: str, folder: str, holder: str) -> None:
    session.execute(
        update(ImapFolderState)
        .where(
            ImapFolderState.account == account,
            ImapFolderState.folder == folder,
            ImapFolderState.holder == holder,
        )
        .values(holder="", lease_until=None)
    )


def checkpoint(
    session: Session,
    account: str,
    folder: str,
    holder: str,
    *,
    uidvalidity: int,
    last_uid: int,
    fetched: int,
    lag: float | None,
    now: datetime,
    ttl: timedelta,
) -> bool:
    """Record that every UID up to ``last_uid`` is spooled; False when the lease was lost."""
    result = session.execute(
        update(ImapFolderState)
        .where(
            ImapFolderState.account == account,
            ImapFolderState.folder == folder,
            ImapFolderState.holder == holder,
        )
        .values(
            uidvalidity=uidvalidity,
            last_uid=last_uid,
            last_fetch_at=now,
            last_fetched=fetched,
            lag_seconds=lag,
            lease_until=now + ttl,
            state="ok",
            last_error="",
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_skipped(
    session: Session, account: str, folder: str, entries: list[dict[str, Any]]
) -> None:
    """Remember messages stepped over (too large), so `buzon status` can show them."""
    row = _row(session, account, folder)
    row.skipped = [*(row.skipped or []), *entries][-MAX_SKIPPED:]


def set_status(session: Session, account: str, folder: str, state: str, error: str = "") -> None:
    row = _row(session, account, folder)
    row.state = state
    row.last_error = error[:2000]


def folders(session: Session) -> list[ImapFolderState]:
    return list(
        session.scalars(
            select(ImapFolderState).order_by(ImapFolderState.account, ImapFolderState.folder)
        )
    )
