"""The IMAP bench's latency phase: steady APPENDs into an empty folder watched with IDLE,
by a bare imapclient loop and by ``FolderWorker.run()``; t1 - t0 per message.

When t0 and t1 are taken, and what makes the phase invalid, is in
``bench/imap_fetch.py``'s docstring.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imap_mailbox import USER, make_message

if TYPE_CHECKING:
    from imap_throughput import Bench

SEQ = re.compile(rb"^X-Bench-Seq: (-?\d+)\r?$", re.M)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Arrivals:
    """When each message (by X-Bench-Seq) was sent and when it reached the watcher."""

    sent: dict[int, float] = field(default_factory=dict)
    append_s: list[float] = field(default_factory=list)
    got: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    wakeups: int = 0

    def record(self, raw: bytes, t1: float) -> None:
        match = SEQ.search(raw)
        if match is None:
            return
        seq = int(match.group(1))
        if seq in self.got:
            self.duplicates += 1
        self.got.setdefault(seq, t1)

    def summary(self, **extra: Any) -> dict[str, Any]:
        lat = [self.got[s] - t0 for s, t0 in self.sent.items() if s in self.got]
        late = sorted(s for s in self.sent if s not in self.got)
        out: dict[str, Any] = {
            "sent": len(self.sent),
            "arrived": len(lat),
            "late": len(late),
            "late_seqs": late[:20],
            "duplicates": self.duplicates,
            "wakeups": self.wakeups,
            "append_ms_median": round(1000 * statistics.median(self.append_s), 2)
            if self.append_s
            else 0.0,
            **extra,
        }
        if lat:
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
                out[f"{name}_ms"] = round(1000 * percentile(lat, q), 1)
            out["max_ms"] = round(1000 * max(lat), 1)
        return out


class LatencyBench:
    """Steady APPENDs into an empty folder watched with IDLE; t1 - t0 per message."""

    def __init__(self, bench: Bench) -> None:
        self.bench, self.args, self.server = bench, bench.args, bench.server
        self.rng = random.Random(bench.args.seed + 1)

    def message(self, seq: int) -> bytes:
        size = self.rng.randint(2 * 1024, 20 * 1024)
        raw = make_message(self.rng, seq, size, f"X-Bench-Sent: {time.time_ns()}\n")
        return raw.replace(b"\n", b"\r\n")

    def send(self, folder: str, arrivals: Arrivals) -> None:
        """Prime the watcher, then APPEND one message every --interval s; wait for the tail."""
        a = self.args
        with self.server.session(timeout=30) as appender:
            appender.append(folder, self.message(-1))
            _wait(lambda: -1 in arrivals.got, a.latency_wait)
            if -1 not in arrivals.got:
                return  # the watcher never saw the priming message: nothing to measure
            time.sleep(0.3)  # back in IDLE
            arrivals.wakeups = 0
            next_at = time.monotonic()
            for seq in range(a.latency_messages):
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                raw = self.message(seq)
                t0 = time.monotonic()
                appender.append(folder, raw)
                arrivals.append_s.append(time.monotonic() - t0)
                arrivals.sent[seq] = t0
                next_at += a.interval
        _wait(lambda: all(s in arrivals.got for s in arrivals.sent), a.latency_wait)

    def baseline(self) -> dict[str, Any]:
        """A bare imapclient IDLE loop: on EXISTS, UID SEARCH + FETCH BODY.PEEK[]; no spool."""
        folder = "LatencyBase"
        self.server.create_folder(USER, folder)
        arrivals = Arrivals()
        stop = threading.Event()
        client = self.server.client(timeout=30)
        client.select_folder(folder, readonly=True)
        imap: Any = client._imap  # imaplib keeps untagged responses of ordinary commands here
        imap.untagged_responses.pop("EXISTS", None)

        def watch() -> None:
            last = 0
            while not stop.is_set():
                uids = [u for u in client.search(["UID", f"{last + 1}:*"]) if u > last]
                if uids:
                    data = client.fetch(uids, ["BODY.PEEK[]"])
                    t1 = time.monotonic()
                    for item in data.values():
                        arrivals.record(item[b"BODY[]"], t1)
                    last = max(uids)
                # An EXISTS that came with the SEARCH or FETCH answer is not repeated in IDLE.
                if imap.untagged_responses.pop("EXISTS", None):
                    continue
                client.idle()
                try:
                    while not stop.is_set():
                        if any(len(r) > 1 and r[1] == b"EXISTS" for r in client.idle_check(0.2)):
                            arrivals.wakeups += 1
                            break
                finally:
                    client.idle_done()

        thread = threading.Thread(target=watch, name="bench-raw-idle", daemon=True)
        thread.start()
        try:
            self.send(folder, arrivals)
        finally:
            stop.set()
            thread.join(10)
            with contextlib.suppress(Exception):
                client.logout()
        return arrivals.summary(watcher_stopped=not thread.is_alive())

    def buzon(self) -> dict[str, Any]:
        """FolderWorker.run() (IDLE); t1 from a Spool.on_new hook, after new/ is fsynced."""
        from daemon.imap import FolderWorker, instance_id
        from daemon.parts import open_parts

        folder = "Latency"
        self.server.create_folder(USER, folder)
        cfg = self.bench.config("latency")
        arrivals = Arrivals()
        seen: set[str] = set()
        with open_parts(cfg, recover=False) as parts:
            new_dir = parts.spool.root / "new"

            def on_new() -> None:  # in the writer thread, right after the fsync of new/
                t1 = time.monotonic()
                arrivals.wakeups += 1
                for name in os.listdir(new_dir):
                    if name not in seen:
                        seen.add(name)
                        # A bundle holds a batch: every member arrived at t1.
                        for raw in _members(new_dir / name):
                            arrivals.record(raw[:4096], t1)

            parts.spool.on_new(on_new)
            worker = FolderWorker(
                cfg.imap[0],
                folder,
                spool=parts.spool,
                db=parts.db,
                holder=instance_id(),
                max_size=cfg.smtp.max_message_size,
                stop=threading.Event(),
            )
            thread = threading.Thread(target=worker.run, name="bench-imap-idle", daemon=True)
            thread.start()
            try:
                self.send(folder, arrivals)
            finally:
                worker.stop.set()
                thread.join(30)
        return arrivals.summary(worker_stopped=not thread.is_alive())


def _members(path: Path) -> list[bytes]:
    """The raw messages in a spool file: one for an entry, a batch for a bundle."""
    header, _, body = path.read_bytes().partition(b"\n")
    if not path.name.endswith(".bundle"):
        return [body]
    out, offset = [], 0
    for member in json.loads(header)["members"]:
        out.append(body[offset : offset + member["length"]])
        offset += member["length"]
    return out


def latency_valid(lat: dict[str, Any]) -> bool:
    stopped = lat.get("worker_stopped", lat.get("watcher_stopped", False))
    return bool(lat["sent"] and not lat["late"] and not lat["duplicates"] and stopped)


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
