"""The IMAP bench's throughput sides: one backlog fetched by imapclient alone and by
``daemon.imap.FolderWorker`` into a spool, with where the worker's wall time goes.

What each side does, and what makes a round invalid, is in ``bench/imap_fetch.py``'s
docstring; this module runs one round of either side and returns what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient

from benchlib import BASE_TOML, tree_cpu

# isort: split
from imap_mailbox import PASSWORD, PASSWORD_ENV, USER

if TYPE_CHECKING:  # imap_fetch.py puts tests/ on sys.path for the running bench
    from support.dovecot import Dovecot


@dataclass
class Round:
    side: str
    messages: int
    seconds: float
    cpu_s: float
    dovecot_cpu_s: float
    valid: bool = True
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def measured(server: Dovecot) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    assert server.proc is not None
    d0, c0, t0 = tree_cpu(server.proc.pid), time.process_time(), time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0
    time.sleep(0.1)  # let the master reap the finished imap process (its CPU is in cutime)
    out["dovecot_cpu_s"] = tree_cpu(server.proc.pid) - d0


PHASES = (
    "FETCH RFC822.SIZE",
    "FETCH BODY.PEEK[]",
    "FETCH INTERNALDATE (oldest of batch)",
    "UID SEARCH",
    "Spool.put_bundle (writer thread)",
    "database transactions",
)
FETCH_THREAD = PHASES[:4]


def _timed(phases: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] += time.perf_counter() - t

    return wrapper


def _time_calls(phases: dict[str, float], spool: Any, db: Any) -> None:
    """Wall time of the worker's spool writes and database transactions (instance attributes)."""
    put = _timed(phases, "Spool.put_bundle (writer thread)", spool.put_bundle)
    setattr(spool, "put_bundle", put)  # noqa: B010
    transaction = db.transaction

    @contextlib.contextmanager
    def timed_transaction() -> Iterator[Any]:
        t = time.perf_counter()
        try:
            with transaction() as s:
                yield s
        finally:
            phases["database transactions"] += time.perf_counter() - t

    setattr(db, "transaction", timed_transaction)  # noqa: B010


def _time_fetches(phases: dict[str, float], client: IMAPClient) -> None:
    fetch, search = client.fetch, client.search

    def timed_fetch(messages: Any, data: Any, modifiers: Any = None) -> Any:
        text = " ".join(str(d) for d in data)
        name = next(p for p in PHASES if p.split()[1] in text)
        return _timed(phases, name, fetch)(messages, data, modifiers)

    setattr(client, "fetch", timed_fetch)  # noqa: B010
    setattr(client, "search", _timed(phases, "UID SEARCH", search))  # noqa: B010


class Bench:
    def __init__(self, args: argparse.Namespace, server: Dovecot, uids: list[int]) -> None:
        self.args = args
        self.server = server
        self.uids = uids
        self.tmp = Path(tempfile.mkdtemp(prefix="buzon-bench-imap-", dir=args.tmpdir))

    def config(self, name: str) -> Any:
        from daemon import config

        base = self.tmp / name
        base.mkdir()
        toml = (
            BASE_TOML + "[[imap]]\n"
            'name = "support"\n'
            'host = "127.0.0.1"\n'
            f"port = {self.server.port}\n"
            'security = "none"\n'
            f'username = "{USER}"\n'
            f'password_env = "{PASSWORD_ENV}"\n'
            f"batch_size = {self.args.batch}\n"
            "timeout = 60\n"
        )
        return config.parse(toml, base=base, source=f"bench:{name}")

    def baseline(self) -> Round:
        n = nbytes = 0
        with measured(self.server) as m:
            client = IMAPClient(self.server.host, self.server.port, ssl=False, timeout=60)
            client.login(USER, PASSWORD)
            client.select_folder("INBOX", readonly=True)
            uids = sorted(client.search("ALL"))
            for start in range(0, len(uids), self.args.batch):
                data = client.fetch(uids[start : start + self.args.batch], ["BODY.PEEK[]"])
                for item in data.values():
                    n += 1
                    nbytes += len(item[b"BODY[]"])
            client.logout()
        valid = n == len(self.uids)
        return Round(
            "baseline",
            n,
            m["seconds"],
            m["cpu_s"],
            m["dovecot_cpu_s"],
            valid,
            "" if valid else f"fetched {n} of {len(self.uids)}",
            {"bytes": nbytes},
        )

    def buzon(self, name: str, profile: cProfile.Profile | None = None) -> Round:
        from daemon.imap import FolderWorker, instance_id
        from daemon.parts import open_parts
        from storage import imapstate

        cfg = self.config(name)
        with open_parts(cfg, recover=False) as parts:
            worker = FolderWorker(
                cfg.imap[0],
                "INBOX",
                spool=parts.spool,
                db=parts.db,
                holder=instance_id(),
                max_size=cfg.smtp.max_message_size,
                stop=threading.Event(),
            )
            phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
            _time_calls(phases, parts.spool, parts.db)
            with measured(self.server) as m:
                if profile is not None:
                    profile.enable()
                with worker.connect() as client:
                    _time_fetches(phases, client)
                    report = worker.session(client, idle=False)
                if profile is not None:
                    profile.disable()
            worker.release()
            # The writer thread overlaps the fetches: "other" is what the fetching
            # thread spent outside its own calls (waiting for the writer included).
            phases["other"] = m["seconds"] - sum(phases[k] for k in FETCH_THREAD)
            with parts.db.transaction() as s:
                rows = [r for r in imapstate.folders(s) if r.folder == "INBOX"]
                last_uid = rows[0].last_uid if rows else 0
            spooled_uids = []
            for entry_id in parts.spool.pending():
                path = parts.spool.root / "new" / f"{entry_id}.msg"
                with open(path, "rb") as f:
                    meta = json.loads(f.readline())
                spooled_uids.append(int(meta["envelope"]["imap"]["uid"]))
            depth = parts.spool.depth()
        problems = []
        if sorted(spooled_uids) != self.uids:
            dupes = len(spooled_uids) - len(set(spooled_uids))
            problems.append(
                f"spool holds {len(spooled_uids)} entries ({dupes} duplicate UIDs) "
                f"for {len(self.uids)} messages"
            )
        if last_uid != self.uids[-1]:
            problems.append(f"checkpoint {last_uid}, highest UID {self.uids[-1]}")
        if report.uids != len(self.uids):
            problems.append(f"session reported {report.uids} UIDs")
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp / name, ignore_errors=True)
        return Round(
            "buzon",
            len(spooled_uids),
            m["seconds"],
            m["cpu_s"],
            m["dovecot_cpu_s"],
            not problems,
            "; ".join(problems),
            {
                "bytes": report.bytes,
                "checkpoint": last_uid,
                "spool_depth": depth,
                "phases_s": {k: round(v, 3) for k, v in phases.items()},
            },
        )

    def close(self) -> None:
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
