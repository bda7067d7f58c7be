"""Push raw messages through the real spool and pipeline, in this process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from daemon.ingest import Outcome
from daemon.parts import Parts


def ingest_raw(
    parts: Parts,
    raw: bytes,
    *,
    source: str = "smtp",
    envelope: dict[str, Any] | None = None,
    received_at: datetime | None = None,
) -> Outcome:
    entry = parts.spool.put(
        raw,
        {
            "source": source,
            "received_at": (received_at or datetime.now(UTC)).isoformat(),
            "envelope": envelope
            or {"mail_from": "ana@cliente.es", "rcpt_tos": ["support@example.com"]},
        },
    )
    claimed = parts.spool.claim(entry.id)
    assert claimed is not None
    return parts.processor.process(claimed)
