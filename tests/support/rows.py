"""Row objects for storage tests: a ticket or a message with the fewest columns it needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from storage.models import Message, Ticket


def open_ticket(customer: str = "ana@a.es", at: datetime | None = None, **kw: Any) -> Ticket:
    """An open email ticket of ``customer``, who is also its requester, made at ``at``."""
    at = at or datetime.now(UTC)
    return Ticket(
        status="open",
        customer=customer,
        requester=customer,
        channel="email",
        created_at=at,
        updated_at=at,
        **kw,
    )


def stored_message(sha: str, at: datetime | None = None, **kw: Any) -> Message:
    """A stored SMTP message whose raw bytes hash to ``sha`` (not checked), received at ``at``."""
    at = at or datetime.now(UTC)
    values: dict[str, Any] = {"message_id": "m@x", "raw": b"raw", **kw}
    return Message(
        raw_sha256=sha,
        size=3,
        state="done",
        source="smtp",
        received_at=at,
        stored_at=at,
        **values,
    )
