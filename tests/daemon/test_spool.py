"""The spool keeps every acknowledged message through crashes, and never a half-written one."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.errors import SpoolFullError
from daemon.spool import Spool
from support.intake import Intake
from support.mail import data_reply, message


def test_put_makes_one_file_with_metadata_line_then_raw_bytes(tmp_path: Path) -> None:
    """A put leaves exactly one file in new/: a JSON line, then the bytes unchanged."""
    spool = Spool(tmp_path)
    entry = spool.put(b"Subject: x\r\n\r\nbody\r\n", {"source": "smtp"})
    assert spool.pending() == [entry.id]
    assert os.listdir(tmp_path / "new") == [f"{entry.id}.msg"]
    header, raw = (tmp_path / "new" / f"{entry.id}.msg").read_bytes().split(b"\n", 1)
    assert raw == b"Subject: x\r\n\r\nbody\r\n" == entry.read()
    meta = json.loads(header)
    assert meta["source"] == "smtp" and meta["size"] == 20 and len(meta["sha256"]) == 64
    assert os.listdir(tmp_path / "tmp") == []


def test_put_many_keeps_order_and_notifies(tmp_path: Path) -> None:
    """A batch becomes durable together, in order, and wakes listeners once."""
    spool = Spool(tmp_path)
    calls: list[int] = []
    spool.on_new(lambda: calls.append(1))
    results = spool.put_many([(f"m{i}".encode(), {}) for i in range(10)])
    assert [r.read() for r in results if not isinstance(r, BaseException)] == [
        f"m{i}".encode() for i in range(10)
    ]
    assert len(calls) == 1


def test_claim_is_exclusive(tmp_path: Path) -> None:
    """Only one claimer wins an entry; the loser gets None."""
    spool = Spool(tmp_path)
    entry = spool.put(b"x", {})
    assert spool.claim(entry.id) is not None
    assert spool.claim(entry.id) is None


def test_recover_counts_an_interruption_and_requeues(tmp_path: Path) -> None:
    """An entry found in cur/ at start goes back to new/ with one interruption counted,
    not one attempt: the daemon being killed is not the message's fault."""
    spool = Spool(tmp_path)
    entry = spool.put(b"x", {})
    spool.claim(entry.id)
    report = Spool(tmp_path).recover()
    assert report.recovered == (entry.id,)
    again = spool.claim(entry.id)
    assert again is not None and (again.interruptions, again.attempts) == (1, 0)
    assert "stopped while processing" in again.meta["last_error"]


def test_crash_loop_moves_entry_to_bad_with_raw_bytes(tmp_path: Path) -> None:
    """An entry in flight at max_interruptions daemon deaths is quarantined, not lost,
    and an admin's retry puts it back with its counters reset."""
    spool = Spool(tmp_path, max_interruptions=4)
    entry = spool.put(b"poison", {})
    for _ in range(4):
        assert spool.claim(entry.id) is not None
        report = spool.recover()
    assert report.quarantined == (entry.id,)
    assert spool.pending() == []
    bad = list(spool.quarantined())
    assert [b.read() for b in bad] == [b"poison"]
    assert "the daemon died 4 times" in bad[0].meta["quarantine_reason"]
    assert spool.retry(entry.id)
    again = spool.claim(entry.id)
    assert again is not None and (again.interruptions, again.attempts) == (0, 0)


def test_counted_failures_quarantine_at_max_attempts(tmp_path: Path) -> None:
    """Failures attributable to the message quarantine it after max_attempts."""
    spool = Spool(tmp_path, max_attempts=3)
    entry = spool.put(b"poison", {})
    for i in range(3):
        claimed = spool.claim(entry.id)
        assert claimed is not None
        kept = spool.release(claimed, count_attempt=True, reason=f"boom {i}")
    assert kept is False and spool.pending() == []
    (bad,) = spool.quarantined()
    assert "failed 3 times; last error: boom 2" in bad.meta["quarantine_reason"]


def test_recover_removes_half_written_files(tmp_path: Path) -> None:
    """Half-written files were never acknowledged, so start-up removes them."""
    spool = Spool(tmp_path)
    (tmp_path / "tmp" / "half.msg").write_bytes(b"partial")
    report = spool.recover()
    assert report.removed_tmp == 1
    assert os.listdir(tmp_path / "tmp") == [] and os.listdir(tmp_path / "new") == []


def test_damaged_metadata_never_costs_the_message(tmp_path: Path) -> None:
    """A garbled metadata line is reported, and the message bytes are still served."""
    spool = Spool(tmp_path)
    entry = spool.put(b"keep me", {})
    (tmp_path / "new" / f"{entry.id}.msg").write_bytes(b"{not json\nkeep me")
    got = spool.get(entry.id)
    assert got is not None and got.read() == b"keep me" and got.meta["metadata_lost"]


def test_counter_rewrite_keeps_bytes_exact(tmp_path: Path) -> None:
    """Rewriting an entry's counters leaves its message bytes untouched, even binary ones."""
    spool = Spool(tmp_path)
    raw = bytes(range(256)) * 10 + b"\n\r\n"
    entry = spool.put(raw, {"source": "smtp"})
    claimed = spool.claim(entry.id)
    assert claimed is not None
    spool.release(claimed, count_attempt=True, reason="boom")
    again = spool.get(entry.id)
    assert again is not None and again.read() == raw and again.attempts == 1


def test_release_without_counting_keeps_attempts(tmp_path: Path) -> None:
    """A transient failure puts the entry back without spending one of its attempts."""
    spool = Spool(tmp_path)
    entry = spool.put(b"x", {})
    claimed = spool.claim(entry.id)
    assert claimed is not None
    assert spool.release(claimed, count_attempt=False)
    again = spool.claim(entry.id)
    assert again is not None and again.attempts == 0


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("DUR-09 needs to mount a tmpfs (root) in CI")
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_dur09_full_disk_refuses_and_leaves_no_partial_file(tiny_tmpfs: Path) -> None:
    """DUR-09: on a full filesystem a put fails cleanly and leaves no truncated entry."""
    spool = Spool(tiny_tmpfs / "spool")
    assert spool.has_room_for(100_000)
    assert not spool.has_room_for(1_000_000)  # 1.5 x 1 MB exceeds the 1 MiB tmpfs
    stored = 0
    with pytest.raises(SpoolFullError):
        for _ in range(100):
            spool.put(os.urandom(100_000), {})
            stored += 1
    assert stored >= 5
    for d in ("tmp", "new"):
        for name in os.listdir(tiny_tmpfs / "spool" / d):
            assert d == "new", f"leftover {name} in {d}/"
    for entry_id in spool.pending():
        entry = spool.get(entry_id)
        assert entry is not None and len(entry.read()) == 100_000


def test_dur09_smtp_answers_452_before_the_disk_is_full(tiny_tmpfs: Path) -> None:
    """DUR-09 over SMTP: mail into a spool on a 1 MiB tmpfs is accepted while there is room,
    then refused with 452 4.3.1; every message that got 250 is complete on disk."""
    accepted: list[bytes] = []
    codes: list[int] = []
    with Intake(tiny_tmpfs, max_message_size=100_000) as server:
        for i in range(30):
            raw = message(f"relleno {i}", body=("x" * 75 + "\n") * 800)
            code, _ = data_reply(server.port, raw)
            codes.append(code)
            if code == 250:
                accepted.append(raw)
        stored = server.stored()
    assert len(accepted) >= 3
    assert 452 in codes and set(codes) <= {250, 452}
    assert codes.index(452) == len(accepted)  # once full, it stays refused
    assert sorted(stored) == sorted(accepted)
    assert os.listdir(tiny_tmpfs / "spool" / "tmp") == []
