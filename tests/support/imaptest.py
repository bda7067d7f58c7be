"""Helpers for IMAP tests: accounts pointing at a test Dovecot, threaded folder workers."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

from daemon.config import ImapAccount
from daemon.imap import FolderWorker
from daemon.parts import Parts

PASSWORD_ENV = "BUZON_TEST_IMAP_PASSWORD"  # noqa: S105 — a variable name, not a secret
NONCE = re.compile(rb"X-Nonce: ([0-9a-f]{32})")


def account(port: int, **overrides: Any) -> ImapAccount:
    base = ImapAccount(
        name="support",
        host="127.0.0.1",
        port=port,
        security="none",
        username="support",
        password_env=PASSWORD_ENV,
        timeout=3.0,
        poll_interval=0.2,
        batch_size=10,
    )
    return replace(base, **overrides)


class WorkerRun:
    """A FolderWorker running in a thread, stopped at teardown."""

    def __init__(self, worker: FolderWorker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)

    def start(self) -> WorkerRun:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.worker.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the worker did not stop within 15 s"


def spooled_nonces(parts: Parts) -> Counter[str]:
    """How many waiting spool entries hold each nonce."""
    counts: Counter[str] = Counter()
    for entry_id in parts.spool.pending():
        entry = parts.spool.get(entry_id)
        if entry is not None:
            counts.update(n.decode() for n in NONCE.findall(entry.read()))
    return counts
