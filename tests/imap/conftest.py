"""Fixtures for IMAP tests: a real Dovecot on loopback, folder workers in threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.config import ImapAccount
from daemon.imap import FolderWorker, instance_id
from daemon.parts import Parts
from support.dovecot import Dovecot, dovecot_binary, running_dovecot
from support.imaptest import PASSWORD_ENV, WorkerRun


@pytest.fixture
def dovecot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dovecot]:
    """A private Dovecot on loopback; skipped outside CI when not installed, failed in CI."""
    if dovecot_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("dovecot must be installed in CI (Debian package dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    with running_dovecot(tmp_path) as server:
        yield server


@pytest.fixture
def worker_factory(parts: Parts) -> Iterator[Callable[..., WorkerRun]]:
    """Start FolderWorkers on the test's spool and database; stopped at teardown."""
    runs: list[WorkerRun] = []

    def make(
        acct: ImapAccount,
        folder: str = "INBOX",
        *,
        holder: str | None = None,
        max_size: int = 10 * 1024 * 1024,
        start: bool = True,
    ) -> WorkerRun:
        worker = FolderWorker(
            acct,
            folder,
            spool=parts.spool,
            db=parts.db,
            holder=holder or instance_id(),
            max_size=max_size,
            stop=threading.Event(),
        )
        worker.backoff.base = 0.05  # tests reconnect fast; production starts at 1 s
        run = WorkerRun(worker)
        runs.append(run)
        return run.start() if start else run

    yield make
    for run in runs:
        if run.thread.is_alive():
            run.stop()
