"""`buzon verify`: a healthy installation passes, and each kind of damage fails its named check."""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conftest import corpus_files
from daemon import config as config_mod
from daemon import verify as verify_mod
from daemon.parts import open_parts
from support.daemon import Daemon, free_port, run_cli, wait_until, write_config
from support.ingest import ingest_raw
from support.invariants import assert_invariants
from support.mail import message

SUBJECTS = ("Mi web no carga", "Factura duplicada", "No puedo entrar al correo")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installation whose database holds real mail run through the real pipeline."""
    root = tmp_path_factory.mktemp("verify-template")
    cfg = config_mod.load(str(write_config(root, free_port())))
    with open_parts(cfg, recover=True) as parts:
        for n, subject in enumerate(SUBJECTS):
            ingest_raw(parts, message(subject, sender=f"cliente{n}@cliente.es"))
        first = message("Re: [#B-1] sigue igual", sender="cliente0@cliente.es")
        ingest_raw(parts, first)
        ingest_raw(parts, first, source="imap")  # the same bytes again: a second delivery
    return root


@pytest.fixture
def install(template: Path, tmp_path: Path) -> Path:
    """A private copy of the template installation; its config path."""
    root = tmp_path / "inst"
    cfg = write_config(root, free_port())
    for name in ("buzon.db", "spool", "attachments"):
        src = template / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        elif src.exists():
            shutil.copy2(src, root / name)
    return cfg


def verify(cfg: Path, *args: str) -> tuple[int, str]:
    result = run_cli("--config", str(cfg), "verify", *args, check=False)
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout


def corrupt(cfg: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    """Change the SQLite file behind Buzón's back, foreign keys off as a careless admin would."""
    conn = sqlite3.connect(cfg.parent / "buzon.db")
    try:
        conn.execute("PRAGMA foreign_keys=OFF")
        for sql in statements:
            conn.execute(sql, params if "?" in sql else ())
        conn.commit()
    finally:
        conn.close()


def lines_of(out: str, check: str) -> list[str]:
    return [line for line in out.splitlines() if line[5:].startswith(check + " ")]


def test_a_healthy_installation_passes(install: Path) -> None:
    """Every check says OK, the JSON says ok, exit 0; the helper agrees without warnings."""
    code, out = verify(install)
    assert code == 0, out
    for check in ("integrity", "raw-hashes", "states", "spool", "outbox", "sla-cache"):
        assert [line[:4] for line in lines_of(out, check)] == ["OK  "], out
    assert "4 messages, 5 deliveries" in lines_of(out, "raw-hashes")[0]
    code, out = verify(install, "--json", "--all")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    assert {f["severity"] for f in doc["findings"]} == {"ok"}
    assert_invariants(install, allow_warnings=False)


def flip_byte(cfg: Path) -> None:
    with sqlite3.connect(cfg.parent / "buzon.db") as conn:
        (raw,) = conn.execute("SELECT raw FROM messages WHERE id = 2").fetchone()
    damaged = bytearray(raw)
    damaged[len(damaged) // 2] ^= 0x01
    corrupt(cfg, "UPDATE messages SET raw = ? WHERE id = 2", params=(bytes(damaged),))


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "flipped byte": ("raw-hashes", flip_byte, "message 2"),
    "unknown message state": (
        "states",
        lambda c: corrupt(c, "UPDATE messages SET state = 'limbo' WHERE id = 1"),
        "message 1: 'limbo'",
    ),
    "message of a missing ticket": (
        "states",
        lambda c: corrupt(c, "UPDATE messages SET ticket_id = 999 WHERE id = 3"),
        "ticket 999 does not exist",
    ),
    "merge chain loop": (
        "states",
        lambda c: corrupt(
            c,
            "UPDATE tickets SET status = 'merged', merged_into_id = 2 WHERE id = 1",
            "UPDATE tickets SET status = 'merged', merged_into_id = 1 WHERE id = 2",
        ),
        "loops back",
    ),
    "sent without sent_at": (
        "outbox",
        lambda c: corrupt(
            c,
            "UPDATE outbox SET state = 'sent', sent_at = NULL"
            " WHERE id = (SELECT min(id) FROM outbox)",
        ),
        "sent without sent_at",
    ),
    "two pending acks": (
        "outbox",
        lambda c: corrupt(
            c,
            "INSERT INTO outbox (ticket_id, kind, recipient, envelope_from, message_id, subject,"
            " raw, state, attempts, created_at, due_at, claimed_by, last_error)"
            " SELECT ticket_id, kind, recipient, envelope_from, message_id || '.2', subject, raw,"
            " 'pending', 0, created_at, due_at, '', '' FROM outbox WHERE kind = 'ack' LIMIT 1",
        ),
        "2 acknowledgements waiting",
    ),
    "assign_by edited": (
        "sla-cache",
        lambda c: corrupt(
            c, "UPDATE tickets SET assign_by = datetime(assign_by, '+7 minutes') WHERE id = 2"
        ),
        "B-2: assign_by",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_fails_its_check(install: Path, damage: str) -> None:
    """One corruption at a time: its check prints FAIL with an example and a fix, exit 1."""
    check, apply, example = DAMAGE[damage]
    apply(install)
    code, out = verify(install)
    assert code == 1, out
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failing and all(line[5:].startswith(check + " ") for line in failing), out
    assert example in out and "fix: " in out
    with pytest.raises(AssertionError, match=check):
        assert_invariants(install)


def leave_committed_entry(cfg_path: Path, *, other_bytes: bool = False) -> str:
    """Ingest one message as the runner does, then put its spool file back in new/.

    That is what a crash between the commit and the unlink leaves (recovery moves the
    file from cur/ to new/). With ``other_bytes`` the file's body is changed afterwards.
    """
    cfg = config_mod.load(str(cfg_path))
    with open_parts(cfg, recover=False) as parts:
        entry = parts.spool.put(
            message("Otra consulta", sender="cliente9@cliente.es"),
            {"source": "smtp", "received_at": datetime.now(UTC).isoformat(), "envelope": {}},
        )
        kept = entry.path.read_bytes()
        claimed = parts.spool.claim(entry.id)
        assert claimed is not None
        assert parts.processor.process(claimed).outcome == "stored"
    assert not entry.path.exists()
    entry.path.write_bytes(kept + b"tail" if other_bytes else kept)
    return entry.id


def test_committed_spool_entry_is_a_warning(install: Path) -> None:
    """A committed entry left in new/ is named with its fix, yet verify exits 0 (a warning)."""
    entry_id = leave_committed_entry(install)
    code, out = verify(install)
    assert code == 0, out
    (line,) = lines_of(out, "spool")
    assert line.startswith("WARN") and "committed but not removed from the spool: 1" in line
    assert f"e.g. new/{entry_id}.msg" in out and "fix: start the daemon" in out
    assert_invariants(install)
    with pytest.raises(AssertionError, match="committed but not removed"):
        assert_invariants(install, allow_warnings=False)
    # The fix works: the daemon's runner finds the entry already stored and removes it.
    d = Daemon(install, config_mod.load(str(install)).smtp.port)
    try:
        d.start()
        wait_until(lambda: not list((install.parent / "spool" / "new").iterdir()), 30)
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
    assert_invariants(install, allow_warnings=False)


def test_spool_entry_clashing_with_a_delivery_fails(install: Path) -> None:
    """A spool file named like a stored delivery but holding other bytes is an error."""
    entry_id = leave_committed_entry(install, other_bytes=True)
    code, out = verify(install, "--json")
    assert code == 1
    errors = [f for f in json.loads(out)["findings"] if f["severity"] == "error"]
    assert [f["check"] for f in errors] == ["spool"]
    assert errors[0]["examples"][0].startswith(f"new/{entry_id}.msg")


def test_stale_tmp_and_bad_entries_are_warnings(install: Path) -> None:
    """An old tmp/ file and a quarantined spool entry are listed; nothing fails."""
    spool = install.parent / "spool"
    stale = spool / "tmp" / "0-1-dead.msg"
    stale.write_bytes(b"{}\nhalf")
    old = datetime.now(UTC).timestamp() - 7200
    os.utime(stale, (old, old))
    (spool / "bad" / "0-2-beef.msg").write_bytes(b'{"quarantine_reason":"x"}\nraw')
    code, out = verify(install)
    assert code == 0, out
    assert "tmp/ files older than an hour: 1" in out
    assert "entries quarantined in spool/bad: 1" in out and "buzon quarantine retry" in out


def test_small_batches_cover_every_row(install: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are read in id ranges and size-bounded groups: with tiny ones every row still counts."""
    monkeypatch.setattr(verify_mod, "BATCH", 2)
    monkeypatch.setattr(verify_mod, "RAW_BYTES", 1)  # every row its own group
    findings = {f.check: f for f in assert_invariants(install, allow_warnings=False)}
    assert findings["raw-hashes"].summary == "4 messages, 5 deliveries"
    assert findings["sla-cache"].summary == "3 tickets replayed (every open ticket)"
    flip_byte(install)
    with pytest.raises(AssertionError, match="message 2: raw bytes"):
        assert_invariants(install)


def test_missing_database_is_a_usage_error(tmp_path: Path) -> None:
    """verify never creates the database: without one it says so and exits 2."""
    cfg = write_config(tmp_path / "none", free_port())
    result = run_cli("--config", str(cfg), "verify", check=False)
    assert result.returncode == 2 and "nothing to verify" in result.stderr
    assert not (tmp_path / "none" / "buzon.db").exists()


def test_invariants_after_corpus_sample_ingest(corpus: Path, tmp_path: Path) -> None:
    """Twenty corpus messages through `buzon ingest` leave every invariant intact."""
    files = corpus_files(corpus)
    sample = files[:: max(1, len(files) // 20)][:20]
    cfg = write_config(tmp_path / "c", free_port())
    summary = json.loads(
        run_cli("--config", str(cfg), "ingest", "--json", *map(str, sample)).stdout
    )
    assert summary["failed"] == 0
    findings = assert_invariants(cfg)
    assert any(f.check == "raw-hashes" and f.severity == "ok" for f in findings)


def test_invariants_after_smtp_through_the_daemon(daemon_factory: Callable[..., Daemon]) -> None:
    """Mail accepted over SMTP by the real daemon passes the check once processed."""
    d = daemon_factory("smtp")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as smtp:
        for n in range(5):
            smtp.sendmail(
                f"c{n}@cliente.es", ["support@example.com"], message(sender=f"c{n}@cliente.es")
            )
    wait_until(lambda: d.processed() >= 5, 60, what="five messages processed")
    assert d.stop() == 0
    assert_invariants(d.config, allow_warnings=False)


def test_verify_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """On PostgreSQL every check runs but integrity, which says what to use instead."""
    cfg_path = write_config(tmp_path / "pg", free_port(), database=pg_url)
    with open_parts(config_mod.load(str(cfg_path)), recover=True) as parts:
        for n in range(2):
            ingest_raw(parts, message(sender=f"pg{n}@cliente.es"))
    code, out = verify(cfg_path)
    assert code == 0, out
    assert lines_of(out, "integrity")[0].startswith("INFO") and "pg_amcheck" in out
    assert "2 messages, 2 deliveries" in out
    corrupt_pg = "UPDATE tickets SET assign_by = assign_by + interval '5 minutes' WHERE id = 1"
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(corrupt_pg))
    engine.dispose()
    with pytest.raises(AssertionError, match="B-1: assign_by"):
        assert_invariants(cfg_path)
