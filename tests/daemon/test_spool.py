"""The spool keeps every acknowledged message through crashes, and never a half-written one."""

from __future__ import annotations

import json
import os
import subprocess
import threading
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
    unmounted = subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
    if unmounted.returncode != 0:
        # Detach it anyway, or pytest's later clean-up of old temp dirs trips over the
        # mount and fails some unrelated test run with a ResourceWarning.
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        pytest.fail(f"the test left a file open on its tmpfs: {unmounted.stderr.decode().strip()}")


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


# --- bundles: one file per IMAP batch, split by the consumer ---------------------------


def _items(n: int, tag: str = "m") -> list[tuple[bytes, dict[str, object]]]:
    return [(f"{tag}{i}\r\n".encode() * (i + 1), {"source": "imap:a/INBOX"}) for i in range(n)]


def test_bundle_splits_into_the_promised_entries_byte_exact(tmp_path: Path) -> None:
    """A bundle is one file in new/; listing the queue splits it into plain entries with
    the ids put_bundle returned, each byte-exact and with its own size and hash."""
    spool = Spool(tmp_path)
    calls: list[int] = []
    spool.on_new(lambda: calls.append(1))
    items = _items(5)
    promised = spool.put_bundle(items)
    assert len(calls) == 1
    assert [n for n in os.listdir(tmp_path / "new")] == [f"{promised[0].id[:-5]}.bundle"]
    assert spool.depth()["bundles"] == 1 and spool.oldest_age() is not None
    assert spool.pending() == [e.id for e in promised]
    assert os.listdir(tmp_path / "tmp") == [] and spool.depth()["bundles"] == 0
    for entry, (raw, _) in zip(promised, items, strict=True):
        got = spool.get(entry.id)
        assert got is not None and got.read() == raw
        assert got.meta["size"] == len(raw) and len(got.meta["sha256"]) == 64
        assert got.meta["source"] == "imap:a/INBOX"


def test_split_redone_after_a_crash_half_way_gives_each_member_once(tmp_path: Path) -> None:
    """A consumer killed while splitting leaves members in tmp/ and new/ next to the
    bundle; the next split rewrites them under the same ids: each member once."""
    spool = Spool(tmp_path)
    promised = spool.put_bundle(_items(4))
    spool.pending()  # a first, complete split, to borrow its member files
    first, second = (tmp_path / "new" / f"{e.id}.msg" for e in promised[:2])
    crashed = Spool(tmp_path / "crashed")
    again = crashed.put_bundle(_items(4))
    # What a kill -9 between member renames leaves: one member in new/, one half in tmp/.
    (tmp_path / "crashed" / "new" / f"{again[0].id}.msg").write_bytes(first.read_bytes())
    (tmp_path / "crashed" / "tmp" / f"{again[1].id}.msg").write_bytes(second.read_bytes()[:7])
    assert crashed.pending() == [e.id for e in again]
    assert [crashed.get(e.id).read() for e in again] == [r for r, _ in _items(4)]  # type: ignore[union-attr]
    assert crashed.depth() == {"new": 4, "cur": 0, "bad": 0, "bundles": 0}


def test_damaged_bundle_is_quarantined_whole_never_split_wrong(tmp_path: Path) -> None:
    """A bundle whose bytes changed on disk is not split into wrong messages: the whole
    file goes to bad/ with the reason, and nothing is lost."""
    spool = Spool(tmp_path)
    spool.put_bundle(_items(3))
    (bundle,) = (tmp_path / "new").iterdir()
    data = bytearray(bundle.read_bytes())
    data[-3] ^= 0xFF
    bundle.write_bytes(bytes(data))
    assert spool.pending() == []
    (bad,) = spool.quarantined()
    assert "SHA-256 does not match" in bad.meta["quarantine_reason"]
    assert bad.read() == bytes(data)


def test_concurrent_splitters_split_each_bundle_once(tmp_path: Path) -> None:
    """The daemon and a `buzon status` may list the queue at once: a lock per bundle
    lets one of them split it; nobody fails and no entry is written twice."""
    spool = Spool(tmp_path)
    promised = [e.id for _ in range(20) for e in spool.put_bundle(_items(5))]
    errors: list[BaseException] = []

    def split() -> None:
        try:
            Spool(tmp_path).split_bundles()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=split) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert spool.pending() == sorted(promised)
    assert os.listdir(tmp_path / "tmp") == []


def test_dur09_full_disk_fails_a_bundle_whole(tiny_tmpfs: Path) -> None:
    """DUR-09 for bundles: a batch that does not fit raises SpoolFullError and leaves no
    file, so the IMAP checkpoint does not move and the batch is fetched again."""
    spool = Spool(tiny_tmpfs / "spool")
    with pytest.raises(SpoolFullError):
        spool.put_bundle([(b"x" * 300_000, {}) for _ in range(5)])
    for d in ("tmp", "new"):
        assert os.listdir(tiny_tmpfs / "spool" / d) == []
    assert spool.put_bundle([(b"small", {})])  # room again for what fits
