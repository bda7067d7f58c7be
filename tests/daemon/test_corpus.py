"""PARSE-01: every message of the shared corpus is stored, byte-exact, by file and by SMTP."""

from __future__ import annotations

import hashlib
import json
import smtplib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from conftest import corpus_files
from support.daemon import Daemon, free_port, run_cli, wait_until, write_config
from support.mail import crlf


def stored_hashes(db: Path) -> set[str]:
    """SHA-256 of every byte sequence kept: message rows, and deliveries that differed."""
    with sqlite3.connect(db) as conn:
        kept = {sha for (sha,) in conn.execute("SELECT raw_sha256 FROM messages")}
        kept |= {
            hashlib.sha256(raw).hexdigest()
            for (raw,) in conn.execute("SELECT raw FROM deliveries WHERE raw IS NOT NULL")
        }
    return kept


def is_mbox(path: Path) -> bool:
    return path.read_bytes()[:5] == b"From "


def test_parse01_corpus_through_buzon_ingest(corpus: Path, tmp_path: Path) -> None:
    """`buzon ingest` keeps every corpus file: the bytes of each single-message file are a
    stored message or a delivery of one, none fails, and quarantines carry a reason."""
    cfg = write_config(tmp_path / "c", free_port())
    files = corpus_files(corpus)
    assert len(files) >= 240
    result = run_cli("--config", str(cfg), "ingest", "--json", *map(str, files))
    summary = json.loads(result.stdout)
    assert summary["failed"] == 0
    hashes = stored_hashes(tmp_path / "c" / "buzon.db")
    for f in files:
        if not is_mbox(f):
            assert hashlib.sha256(f.read_bytes()).hexdigest() in hashes, f
    assert sum(summary.values()) >= len(files)
    quarantined = json.loads(run_cli("--config", str(cfg), "quarantine", "list", "--json").stdout)
    assert all(q["reason"] for q in quarantined)
    assert len(quarantined) == summary["quarantined"]


def test_parse01_corpus_through_smtp(corpus: Path, daemon_factory: Callable[..., Daemon]) -> None:
    """Every corpus file sent over SMTP gets 250 and is stored byte-exact (in its CRLF
    wire form), and the daemon never logs an unhandled error."""
    d = daemon_factory("smtp-corpus")
    files = corpus_files(corpus)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as smtp:
        for f in files:
            smtp.sendmail("corpus@tests.example", ["support@example.com"], crlf(f.read_bytes()))
    db = d.config.parent / "buzon.db"
    wait_until(
        lambda: d.processed() >= len(files),
        240,
        interval=0.5,
        what="every corpus message processed",
    )
    hashes = stored_hashes(db)
    missing = [f for f in files if hashlib.sha256(crlf(f.read_bytes())).hexdigest() not in hashes]
    assert missing == []
    errors = [e for e in d.events if e.get("level") == "error"]
    assert errors == []
    assert d.stop() == 0
