"""The durable spool: where a message lives from the moment it is acknowledged until its
database row is committed.

Layout under the spool root (one filesystem)::

    tmp/   half-written files; never acknowledged, removed at start
    new/   durable entries waiting for the ingest runner
    cur/   entries being processed (renamed from new/, Mailman's ``.bak``); moved back to
           new/ at start with one more *interruption* counted
    bad/   entries that failed ``max_attempts`` times (their parser died, or processing
           raised), or were in flight when the daemon died ``max_interruptions`` times;
           the reason is in their metadata; ``buzon quarantine retry`` moves them back

One entry is one file, ``ID.msg``: a single line of JSON metadata (source,
received time, envelope, counters), then the raw message bytes exactly as
received (``tail -n +2 ID.msg`` shows the message). One file, not a message
plus a sidecar, because the second create and rename cost a quarter of intake
throughput (docs/BENCHMARKS.md); metadata changes (counters, quarantine reason)
are rare and rewrite the file atomically.

A receiver that takes many messages at once (an IMAP batch) may write them as
one *bundle*, ``new/ID.bundle``: a JSON line listing each member's metadata and
length, then the members' bytes back to back. Creating a file costs more than
fetching a message over IMAP (docs/BENCHMARKS.md), so a batch pays for one file,
not fifty. The consumer splits a bundle into ordinary entries (``ID.NNNN.msg``)
before it lists the queue; everything after that (claims, counters, quarantine)
sees plain entries. A split that dies half-way is redone from the bundle, which
is only removed once every member is durable on its own.

A write is durable before it is visible: files are written in tmp/, flushed to
disk, renamed into new/, and new/ itself is fsynced. Concurrent writers are
batched so many messages share one flush (group commit).

Failures and interruptions are counted apart: a kill -9, an OOM kill or a power
cut is not the message's fault, so it takes many of them in a row to condemn an
entry (that still breaks a crash loop in the main process), while a parser that
dies on the message itself condemns it after ``max_attempts``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import durable

DIRS = ("tmp", "new", "cur", "bad")
SUFFIX = ".msg"
BUNDLE = ".bundle"
MIN_FREE_INODES = 1000


def new_entry_id() -> str:
    """A unique, roughly time-ordered id; safe across processes sharing one spool."""
    return f"{time.time_ns():019d}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(slots=True)
class SpoolEntry:
    """One spooled message: its id, metadata and where it currently lives."""

    id: str
    meta: dict[str, Any]
    state: str  # new | cur | bad
    root: Path = field(repr=False)

    @property
    def path(self) -> Path:
        return self.root / self.state / f"{self.id}{SUFFIX}"

    @property
    def attempts(self) -> int:
        return int(self.meta.get("attempts", 0))

    @property
    def interruptions(self) -> int:
        return int(self.meta.get("interruptions", 0))

    def read(self) -> bytes:
        """The raw message bytes, exactly as received."""
        data = self.path.read_bytes()
        return data[data.index(b"\n") + 1 :]


def _encode(meta: dict[str, Any], raw: bytes) -> bytes:
    # json.dumps never emits a raw newline, so the first line is the whole header.
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + raw


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    recovered: tuple[str, ...]  # cur/ -> new/ (attempt counted)
    quarantined: tuple[str, ...]  # cur/ -> bad/ (too many attempts)
    removed_tmp: int


class Spool:
    """Durable directory queue. Blocking: call from threads, never the event loop."""

    def __init__(
        self, root: str | Path, *, max_attempts: int = 3, max_interruptions: int = 10
    ) -> None:
        self.root = Path(root)
        self.max_attempts = max_attempts
        self.max_interruptions = max_interruptions
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool-io")
        self._listeners: list[Callable[[], None]] = []
        for d in DIRS:
            (self.root / d).mkdir(parents=True, exist_ok=True)

    # --- writing -----------------------------------------------------------------

    def on_new(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the writing thread) whenever entries become durable."""
        self._listeners.append(callback)

    def free_space(self) -> tuple[int, int]:
        """(free bytes, free inodes) available to this user on the spool filesystem."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize, st.f_favail

    def has_room_for(self, size: int) -> bool:
        """Postfix's rule: keep 1.5 x the largest message free, and some inodes."""
        free, inodes = self.free_space()
        return free >= size * 1.5 and inodes >= MIN_FREE_INODES

    def put(self, raw: bytes, meta: dict[str, Any]) -> SpoolEntry:
        """Make one message durable; see :meth:`put_many`."""
        result = self.put_many([(raw, meta)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def put_many(
        self, items: Sequence[tuple[bytes, dict[str, Any]]]
    ) -> list[SpoolEntry | BaseException]:
        """Make every item durable with one flush; per-item results, in order.

        An item that could not be written (disk full, I/O error) gets its
        exception in its slot and leaves no file behind; the others still succeed.
        """
        tmp = self.root / "tmp"
        prepared = [self._prepare(raw, meta) for raw, meta in items]
        # File creation dominates the cost of a batch on a busy disk; the syscalls
        # release the GIL, so a few threads create a batch's files side by side.
        if len(prepared) > 1:
            outcomes = list(self._io.map(self._write_one, prepared))
        else:
            outcomes = [self._write_one(p) for p in prepared]
        written: list[tuple[int, SpoolEntry]] = []
        results: list[SpoolEntry | BaseException] = []
        for (entry, _), error in zip(prepared, outcomes, strict=True):
            if error is not None:
                results.append(error)
            else:
                written.append((len(results), entry))
                results.append(entry)
        if not written:
            return results
        try:
            self._barrier([e for _, e in written])
            for _, entry in written:
                os.rename(tmp / f"{entry.id}{SUFFIX}", entry.path)
            durable.fsync_dir(self.root / "new")
        except OSError as exc:
            err = durable.full_disk_error(exc)
            for idx, entry in written:
                durable.unlink_quietly(tmp / f"{entry.id}{SUFFIX}", entry.path)
                results[idx] = err
            return results
        for callback in self._listeners:
            callback()
        return results

    def put_bundle(self, items: Sequence[tuple[bytes, dict[str, Any]]]) -> list[SpoolEntry]:
        """Make every item durable as one file; all or nothing.

        Returns the entries the items will be once the consumer splits the bundle
        (their ids are final). Raises :class:`SpoolFullError` or ``OSError`` and
        leaves no file behind when the bundle could not be written.

        One hash and one write for the whole batch, not one per message: the IMAP
        worker calls this from a thread while another parses the next FETCH, and
        every call that releases the GIL may wait a switch interval to get it back.
        Members get their own size and hash when the bundle is split.
        """
        if not items:
            return []
        bundle_id = new_entry_id()
        entries: list[SpoolEntry] = []
        members: list[dict[str, Any]] = []
        for k, (raw, meta) in enumerate(items):
            full = {**meta, "id": f"{bundle_id}.{k:04d}", "attempts": 0}
            entries.append(SpoolEntry(full["id"], full, "new", self.root))
            members.append({"meta": full, "length": len(raw)})
        body = b"".join(raw for raw, _ in items)
        header: dict[str, Any] = {
            "bundle": bundle_id,
            "sha256": hashlib.sha256(body).hexdigest(),
            "members": members,
        }
        tmp = self.root / "tmp" / f"{bundle_id}{BUNDLE}"
        target = self.root / "new" / f"{bundle_id}{BUNDLE}"
        try:
            durable.write_new(tmp, _encode(header, body), sync=True)
            os.rename(tmp, target)
            durable.fsync_dir(self.root / "new")
        except OSError as exc:
            durable.unlink_quietly(tmp, target)
            raise durable.full_disk_error(exc) from exc
        for entry, (raw, _) in zip(entries, items, strict=True):
            entry.meta["size"] = len(raw)
        for callback in self._listeners:
            callback()
        return entries

    def split_bundles(self) -> int:
        """Turn every bundle in new/ into plain entries; returns how many entries appeared.

        Members are written, flushed and renamed exactly like :meth:`put_many`'s
        entries, under the ids :meth:`put_bundle` promised; the bundle goes last.
        Re-running after a crash rewrites the same ids, and a member that was
        already processed is recognised downstream by its id (one delivery per id).
        """
        split = 0
        for name in sorted(os.listdir(self.root / "new")):
            if name.endswith(BUNDLE):
                split += self._split(self.root / "new" / name)
        return split

    def _split(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0  # another process split it meanwhile
        try:
            try:
                # A `buzon status` or `buzon ingest` may list the queue while the daemon
                # splits: one splitter per bundle, the other moves on.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            if os.fstat(fd).st_nlink == 0:
                return 0  # split and removed between our listdir and open
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            return self._split_locked(path, data)
        finally:
            os.close(fd)

    def _split_locked(self, path: Path, data: bytes) -> int:
        try:
            header, _, body = data.partition(b"\n")
            doc = json.loads(header)
            members = doc["members"]
            lengths = [int(m["length"]) for m in members]
            if sum(lengths) != len(body):
                raise ValueError(f"members hold {sum(lengths)} bytes, the file {len(body)}")
            if hashlib.sha256(body).hexdigest() != doc["sha256"]:
                raise ValueError("its SHA-256 does not match: the file changed on disk")
        except (ValueError, KeyError, TypeError) as exc:
            # Never lose what was acknowledged: keep the whole file where an admin looks.
            damaged = path.with_suffix("").name
            meta = {"id": damaged, "source": "unknown", "attempts": 0, "metadata_lost": True}
            meta["quarantine_reason"] = f"damaged spool bundle ({exc}); raw file kept as is"
            bad = self.root / "bad" / f"{damaged}{SUFFIX}"
            durable.unlink_quietly(bad)  # left by an earlier try that died before the unlink
            durable.write_new(bad, _encode(meta, data), sync=True)
            path.unlink()
            durable.fsync_dir(self.root / "bad")
            return 0
        tmp = self.root / "tmp"
        offset = 0
        written: list[SpoolEntry] = []
        for member, length in zip(members, lengths, strict=True):
            raw = body[offset : offset + length]
            offset += length
            meta = {**member["meta"], "size": length, "sha256": hashlib.sha256(raw).hexdigest()}
            entry = SpoolEntry(str(meta["id"]), meta, "new", self.root)
            part = tmp / f"{entry.id}{SUFFIX}"
            durable.unlink_quietly(part)  # left by a split that died half-way
            durable.write_new(part, _encode(meta, raw), sync=False)
            written.append(entry)
        self._barrier(written)
        for entry in written:
            os.rename(tmp / f"{entry.id}{SUFFIX}", entry.path)
        durable.fsync_dir(self.root / "new")
        path.unlink()
        durable.fsync_dir(self.root / "new")
        return len(written)

    def _prepare(self, raw: bytes, meta: dict[str, Any]) -> tuple[SpoolEntry, bytes]:
        entry_id = new_entry_id()
        full = {
            **meta,
            "id": entry_id,
            "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "attempts": 0,
        }
        return SpoolEntry(entry_id, full, "new", self.root), _encode(full, raw)

    def _write_one(self, item: tuple[SpoolEntry, bytes]) -> BaseException | None:
        """Write one entry into tmp/; the error instead of raising."""
        entry, data = item
        path = self.root / "tmp" / f"{entry.id}{SUFFIX}"
        try:
            durable.write_new(path, data, sync=False)
        except OSError as exc:
            durable.unlink_quietly(path)
            return durable.full_disk_error(exc)
        return None

    def _barrier(self, entries: Sequence[SpoolEntry]) -> None:
        durable.flush_files(self.root / "tmp", (f"{e.id}{SUFFIX}" for e in entries))

    def _rewrite(self, entry: SpoolEntry) -> None:
        """Replace the entry's file with new metadata and the same bytes, atomically."""
        raw = entry.read()
        tmp = self.root / "tmp" / f"{entry.id}.{secrets.token_hex(4)}{SUFFIX}"
        durable.write_new(tmp, _encode(entry.meta, raw), sync=True)
        os.replace(tmp, entry.path)
        durable.fsync_dir(entry.path.parent)

    # --- reading and processing --------------------------------------------------

    def pending(self) -> list[str]:
        """Ids waiting in new/, oldest first (bundles are split first)."""
        self.split_bundles()
        return sorted(
            n[: -len(SUFFIX)] for n in os.listdir(self.root / "new") if n.endswith(SUFFIX)
        )

    def depth(self) -> dict[str, int]:
        """Entries per state; ``bundles`` counts batches in new/ not yet split."""
        counts = {
            d: sum(1 for n in os.listdir(self.root / d) if n.endswith(SUFFIX))
            for d in ("new", "cur", "bad")
        }
        counts["bundles"] = sum(1 for n in os.listdir(self.root / "new") if n.endswith(BUNDLE))
        return counts

    def claim(self, entry_id: str) -> SpoolEntry | None:
        """Move an entry to cur/; None when another worker (or process) got it first."""
        name = f"{entry_id}{SUFFIX}"
        try:
            os.rename(self.root / "new" / name, self.root / "cur" / name)
        except FileNotFoundError:
            return None
        return self._load(entry_id, "cur")

    def _load(self, entry_id: str, state: str) -> SpoolEntry:
        path = self.root / state / f"{entry_id}{SUFFIX}"
        with open(path, "rb") as f:
            header = f.readline()
        try:
            meta = json.loads(header)
            if not isinstance(meta, dict):
                raise ValueError("metadata is not an object")
        except ValueError:
            # Never lose a message over damaged metadata: keep the bytes, say so.
            meta = {"id": entry_id, "source": "unknown", "attempts": 0, "metadata_lost": True}
        return SpoolEntry(entry_id, meta, state, self.root)

    def complete(self, entry: SpoolEntry) -> None:
        """Forget an entry whose database row is committed."""
        durable.unlink_quietly(entry.path)

    def release(self, entry: SpoolEntry, *, count_attempt: bool, reason: str = "") -> bool:
        """Put a claimed entry back in new/; False when it went to bad/ instead."""
        if count_attempt:
            entry.meta["attempts"] = entry.attempts + 1
            entry.meta["last_error"] = reason
            if entry.attempts >= self.max_attempts:
                self.quarantine(entry, f"failed {entry.attempts} times; last error: {reason}")
                return False
            self._rewrite(entry)
        self._move(entry, "new")
        return True

    def _interrupted(self, entry: SpoolEntry) -> bool:
        """Count that the daemon died with ``entry`` in flight; False when it went to bad/."""
        entry.meta["interruptions"] = entry.interruptions + 1
        entry.meta["last_error"] = "the daemon stopped while processing it (crash or kill)"
        if entry.interruptions >= self.max_interruptions:
            self.quarantine(
                entry,
                f"the daemon died {entry.interruptions} times while processing it "
                "(a crash loop this message may cause)",
            )
            return False
        self._rewrite(entry)
        self._move(entry, "new")
        return True

    def quarantine(self, entry: SpoolEntry, reason: str) -> None:
        """Move an entry to bad/ with ``reason``; an admin can retry it later."""
        entry.meta["quarantine_reason"] = reason
        entry.meta["quarantined_at"] = time.time()
        self._rewrite(entry)
        self._move(entry, "bad")

    def _move(self, entry: SpoolEntry, state: str) -> None:
        target = self.root / state
        os.rename(entry.path, target / entry.path.name)
        entry.state = state
        durable.fsync_dir(target)

    def quarantined(self) -> Iterator[SpoolEntry]:
        for n in sorted(os.listdir(self.root / "bad")):
            if n.endswith(SUFFIX):
                yield self._load(n[: -len(SUFFIX)], "bad")

    def get(self, entry_id: str) -> SpoolEntry | None:
        for state in ("new", "cur", "bad"):
            if (self.root / state / f"{entry_id}{SUFFIX}").exists():
                return self._load(entry_id, state)
        return None

    def retry(self, entry_id: str) -> bool:
        """Move a quarantined entry back to new/ with its attempts reset."""
        if not (self.root / "bad" / f"{entry_id}{SUFFIX}").exists():
            return False
        entry = self._load(entry_id, "bad")
        entry.meta["attempts"] = 0
        entry.meta["interruptions"] = 0
        entry.meta.pop("quarantine_reason", None)
        self._rewrite(entry)
        self._move(entry, "new")
        for callback in self._listeners:
            callback()
        return True

    def recover(self) -> RecoveryReport:
        """Start-up recovery; run before any worker starts and before READY."""
        removed_tmp = 0
        for n in os.listdir(self.root / "tmp"):
            # Nothing in tmp/ was ever acknowledged: the 250 comes after the rename.
            durable.unlink_quietly(self.root / "tmp" / n)
            removed_tmp += 1
        recovered: list[str] = []
        quarantined: list[str] = []
        for n in sorted(os.listdir(self.root / "cur")):
            if not n.endswith(SUFFIX):
                continue
            entry = self._load(n[: -len(SUFFIX)], "cur")
            (recovered if self._interrupted(entry) else quarantined).append(entry.id)
        return RecoveryReport(tuple(recovered), tuple(quarantined), removed_tmp)

    def oldest_age(self) -> float | None:
        """Seconds since the oldest pending entry was spooled, or None when empty."""
        ids = sorted(
            n.rsplit(".", 1)[0]
            for n in os.listdir(self.root / "new")
            if n.endswith((SUFFIX, BUNDLE))
        )
        if not ids:
            return None
        return max(0.0, time.time() - int(ids[0].split("-", 1)[0]) / 1e9)
