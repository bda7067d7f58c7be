"""``buzon db upgrade`` (Alembic to head) and ``buzon backup PATH`` (a consistent online
copy of the spool, the SQLite database and the attachments, with a manifest).

``backup`` may run beside a live daemon: it writes nothing but its destination. ``db
upgrade`` refuses to migrate while this machine's daemon runs: a migration may drop what
the running version writes (0008 dropped ``tickets.triage``). With the schema current it
only says so, daemon or not.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from daemon import instance
from daemon.admin_common import db_kwargs, known_revisions, masked_url
from daemon.config import Config
from daemon.errors import UsageError
from storage.engine import Database, current_revision, head_revision

# -- db upgrade -----------------------------------------------------------------------------


def db_upgrade(cfg: Config, args: argparse.Namespace) -> int:
    """Migrate to this version's head and say from which revision; a no-op when current."""
    if (path := cfg.sqlite_path()) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.storage.database, **db_kwargs(cfg))
    spool = Path(cfg.storage.spool)
    try:
        before, head = current_revision(db.engine), head_revision()
        if before is not None and before not in known_revisions(db):
            print(
                f"buzon: {masked_url(cfg)} is at schema {before}, newer than this Buzón "
                f"(head {head}); run the version that wrote it",
                file=sys.stderr,
            )
            return 1
        if before is not None and before != head and (pid := instance.holder(spool)):
            print(
                f"buzon: the daemon (pid {pid}) is running on {spool}; stop it first "
                f"(systemctl stop buzon), then upgrade {masked_url(cfg)} from schema {before} "
                f"to {head} and start it: a migration may drop what the running version writes",
                file=sys.stderr,
            )
            return 1
        db.upgrade()
        after = current_revision(db.engine)
    finally:
        db.dispose()
    if before == after:
        print(f"{masked_url(cfg)}: schema {after} is current; nothing to do")
    else:
        print(f"{masked_url(cfg)}: schema {before or 'none'} -> {after}")
    return 0


# -- backup ---------------------------------------------------------------------------------

OURS = ("buzon.db", "buzon.db.part", "manifest.json", "spool", "attachments")


def _guard(dest: Path, cfg: Config, force: bool) -> None:
    """Refuse a destination that would copy into itself or overwrite live data, and
    one that holds files unless --force (which replaces only an earlier backup's)."""
    d = dest.resolve()
    sources = [Path(cfg.storage.spool).resolve(), Path(cfg.storage.attachments).resolve()]
    live = [*sources, *([db_file.resolve()] if (db_file := cfg.sqlite_path()) else [])]
    for src in sources:
        if d.is_relative_to(src):
            raise UsageError(f"{dest} is inside the live {src}; back up somewhere else")
    for target, p in ((d / name, p) for name in OURS for p in live):
        if p.is_relative_to(target):
            raise UsageError(f"{target} is the live {p}; back up somewhere else")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is not a directory")
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise UsageError(f"{dest} is not empty; choose a new directory or add --force")
        for name in OURS:  # only what an earlier backup wrote; other files stay
            p = dest / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    dest.mkdir(parents=True, exist_ok=True)


def _pg_dump(url: str, dest: Path) -> str:
    u = make_url(url)
    argv = ["pg_dump", "--format=custom", f"--file={dest / 'buzon.pgdump'}"]
    argv += [f"--host={u.host}"] if u.host else []
    argv += [f"--port={u.port}"] if u.port else []
    argv += [f"--username={u.username}"] if u.username else []
    return shlex.join([*argv, u.database or ""])  # the password: PGPASSWORD or ~/.pgpass


def _copy(src: Path, dst: Path) -> int:
    """Copy one file; its size, or -1 when it vanished first (moved or completed)."""
    try:
        shutil.copyfile(src, dst)  # opened once: an entry replaced meanwhile stays whole
    except FileNotFoundError:
        return -1
    return dst.stat().st_size


def copy_spool(src: Path, dst: Path) -> dict[str, int]:
    """Copy new/, cur/ and bad/; entries move between them, so list again until calm.

    An entry that moved after its directory was listed is found on the next pass; one
    that vanished was completed, so it is in the database, which is copied after.
    """
    counts = {"new": 0, "cur": 0, "bad": 0, "bundles": 0, "bytes": 0}
    for d in ("tmp", "new", "cur", "bad"):
        (dst / d).mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for _ in range(5):  # more passes only chase mail arriving now, which may wait
        found = 0
        for state in ("new", "cur", "bad"):
            with contextlib.suppress(FileNotFoundError):
                for name in sorted(os.listdir(src / state)):
                    if name in seen or not name.endswith((".msg", ".bundle")):
                        continue
                    size = _copy(src / state / name, dst / state / name)
                    if size < 0:
                        continue
                    seen.add(name)
                    found += 1
                    counts["bundles" if name.endswith(".bundle") else state] += 1
                    counts["bytes"] += size
        if not found:
            break
    return counts


def copy_sqlite(src: Path, dst: Path) -> dict[str, Any]:
    """One online-backup step of the whole file (a consistent snapshot), checked."""
    part = dst.with_name(dst.name + ".part")
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(part)
    try:
        source.backup(target)  # pages=-1: one step, one read transaction, one snapshot
        target.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        revision = target.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = [
            r[0]
            for r in target.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        rows = {
            t: target.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]  # noqa: S608 — names from sqlite_master
            for t in sorted(tables)
            if t != "alembic_version"
        }
    finally:
        source.close()
        target.close()
    if check != "ok":
        raise RuntimeError(f"the copy fails PRAGMA integrity_check: {check}; kept as {part}")
    with open(part, "rb") as f:
        os.fsync(f.fileno())
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    os.replace(part, dst)
    return {
        "file": dst.name,
        "schema_revision": revision[0] if revision else None,
        "integrity_check": check,
        "sha256": digest,
        "size": dst.stat().st_size,
        "rows": rows,
    }


def copy_tree(src: Path, dst: Path) -> dict[str, int]:
    """Copy a blob store; dot files are its half-written temporaries."""
    files = size = 0
    dst.mkdir(parents=True, exist_ok=True)
    for root, dirs, names in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out = dst / Path(root).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not name.startswith(".") and (n := _copy(Path(root) / name, out / name)) >= 0:
                files, size = files + 1, size + n
    return {"files": files, "bytes": size}


def backup(cfg: Config, args: argparse.Namespace) -> int:
    dest = Path(args.path)
    db_file = cfg.sqlite_path()
    if db_file is None and not args.files_only:
        raise UsageError(
            "the database is PostgreSQL, which `buzon backup` does not copy: run "
            f"`buzon backup {shlex.quote(str(dest))} --files-only` for the spool and "
            f"attachments, then `{_pg_dump(cfg.storage.database, dest)}`"
        )
    if db_file is not None and not db_file.exists():
        raise UsageError(f"no database at {db_file} yet: nothing to back up")
    _guard(dest, cfg, args.force)
    started = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": 1,
        "started_at": started.isoformat(),
        "config": cfg.source,
    }
    manifest["spool"] = copy_spool(Path(cfg.storage.spool), dest / "spool")
    if db_file is not None and not args.files_only:
        manifest["database"] = {"backend": "sqlite", **copy_sqlite(db_file, dest / "buzon.db")}
    else:
        manifest["database"] = {
            "backend": make_url(cfg.storage.database).get_backend_name(),
            "copied": False,
            "pg_dump": _pg_dump(cfg.storage.database, dest) if db_file is None else None,
        }
    manifest["attachments"] = copy_tree(Path(cfg.storage.attachments), dest / "attachments")
    manifest["finished_at"] = datetime.now(UTC).isoformat()
    tmp = dest / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, dest / "manifest.json")
    os.sync()  # the copies are on disk before we say so
    if args.json:
        print(json.dumps(manifest, ensure_ascii=False))
        return 0
    sp, at, dbm = manifest["spool"], manifest["attachments"], manifest["database"]
    print(
        f"backup in {dest}: spool {sp['new']} new, {sp['cur']} in progress, {sp['bad']} bad; "
        f"{at['files']} attachments"
    )
    if "sha256" in dbm:
        print(
            f"database: buzon.db, schema {dbm['schema_revision']}, integrity ok, "
            f"sha256 {dbm['sha256']}"
        )
    elif dbm["pg_dump"]:
        print(f"database not copied: now run {dbm['pg_dump']}")
    return 0
