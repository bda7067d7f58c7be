"""Where the SMTP bench finds what the daemon accepted: entries in its spool, rows in its
SQLite database (read-only, while it runs too), and the warnings its log holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any


def _entry_count(path: Path) -> int:
    try:
        return sum(1 for n in os.listdir(path) if n.endswith(".msg"))
    except FileNotFoundError:
        return 0


def _spool_ids(path: Path) -> set[str]:
    try:
        return {n[:-4] for n in os.listdir(path) if n.endswith(".msg")}
    except FileNotFoundError:
        return set()


def _db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # schema not created yet
    finally:
        conn.close()


def _count_deliveries(db: Path) -> int:
    rows = _db_rows(db, "SELECT count(*) FROM deliveries")
    return int(rows[0][0]) if rows else 0


def _account(tmp: Path) -> dict[str, int]:
    """Distinct accepted messages found in the spool or the database (a spool id counts once)."""
    spool = tmp / "spool"
    new, cur, bad = (_spool_ids(spool / d) for d in ("new", "cur", "bad"))
    delivered = {r[0] for r in _db_rows(tmp / "b.db", "SELECT spool_id FROM deliveries")}
    messages = _db_rows(tmp / "b.db", "SELECT count(*) FROM messages")
    return {
        "new": len(new),
        "cur": len(cur),
        "bad": len(bad),
        "deliveries": len(delivered),
        "messages": int(messages[0][0]) if messages else 0,
        "total": len(new | cur | bad | delivered),
    }


def _log_summary(path: Path) -> dict[str, int]:
    """Counts of the daemon's warning/error events by name (its log level is warning)."""
    counts: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
            name = f"{event.get('level', '?')}:{event.get('event', '?')}"
        except (json.JSONDecodeError, AttributeError):
            name = "non-json-line"
        counts[name] = counts.get(name, 0) + 1
    return counts
