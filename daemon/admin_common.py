"""Helpers that two or more admin commands share: terminal-safe text, the database URL
as shown to an admin, and the schema's state against this version's head.

``status`` reads the schema (``read_schema``) to show it, ``doctor`` to judge it, and
``db upgrade`` tells a newer schema from an older one with ``known_revisions``.
"""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from daemon.config import Config
from storage.engine import Database, alembic_config, current_revision, head_revision

NET_TIMEOUT = 5.0  # doctor's relay EHLO and IMAP login; any PostgreSQL connect
_CTRL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}  # C0, DEL, C1


def clean(text: str, width: int = 120) -> str:
    """One terminal-safe line: a relay's reply or a subject can hold escape sequences."""
    text = " ".join(text.split()).translate(_CTRL)
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper adds only a link to its docs
    if isinstance(orig, BaseException):
        exc = orig
    return clean(f"{type(exc).__name__}: {exc}", 200)


def masked_url(cfg: Config) -> str:
    return str(cfg.redacted()["storage"]["database"])


def db_kwargs(cfg: Config) -> dict[str, Any]:
    # SQLite sets its own connect arguments; PostgreSQL must not hang on a dead host.
    return {} if cfg.sqlite_path() else {"connect_args": {"connect_timeout": int(NET_TIMEOUT)}}


def known_revisions(db: Database) -> set[str]:
    return {
        s.revision for s in ScriptDirectory.from_config(alembic_config(db.engine)).walk_revisions()
    }


def read_schema(cfg: Config) -> tuple[dict[str, Any], Database | None]:
    """The schema's revision against this version's head; the open database when usable."""
    url = cfg.storage.database
    out: dict[str, Any] = {
        "backend": make_url(url).get_backend_name(),
        "database": masked_url(cfg),
        "revision": None,
        "head": head_revision(),
        "state": "missing",
        "error": "",
    }
    path = cfg.sqlite_path()
    if path is not None and not path.exists():
        return out, None  # status never creates the file; `buzon run` or `db upgrade` does
    db = Database(url, **db_kwargs(cfg))
    try:
        out["revision"] = rev = current_revision(db.engine)
        if rev == out["head"]:
            out["state"] = "current"
        elif rev is None:
            out["state"] = "empty"
        else:
            out["state"] = "behind" if rev in known_revisions(db) else "newer"
    except Exception as exc:  # unreachable or not a database: say so, show the rest
        db.dispose()
        out.update(state="unreachable", error=describe_error(exc))
        return out, None
    return out, db
