"""Run the real ``buzon`` daemon as a subprocess and talk to it.

The process is started with the same command an admin uses; its JSON log
lines are collected by a reader thread so tests can wait for events.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(handler: Any) -> Iterator[int]:
    """An aiosmtpd server with ``handler`` on a free loopback port (the relay a test's
    daemons deliver to); stopped however the block ends."""
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def write_config(
    directory: Path, port: int, *, database: str | None = None, extra: str = ""
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    db = database or f"sqlite:///{directory / 'buzon.db'}"
    text = f'''
[storage]
database = "{db}"
spool = "{directory / "spool"}"
attachments = "{directory / "attachments"}"

[smtp]
listen = "127.0.0.1:{port}"
domains = ["example.com"]
addresses = ["help@desk.example.org"]
max_message_size = 10485760

[pipeline]
poll_interval = 0.2

[log]
level = "info"
format = "json"
{extra}
'''
    path = directory / "buzon.toml"
    path.write_text(text)
    return path


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class Daemon:
    config: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    raw_lines: list[bytes] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start(self, wait_ready: bool = True, env: dict[str, str] | None = None) -> Daemon:
        if self.proc is not None:
            # The last run's pipe, left open by kill() while an orphan of it still held the
            # write end (a slow machine): closed now, or its file is collected unclosed.
            self._close_pipe()
        self.events.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(self.config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_event("daemon.ready", timeout=60)
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us by _close_pipe
            self._read_lines(proc.stdout)

    def _read_lines(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            self.raw_lines.append(line)
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "<unparsed>", "line": line.decode("utf-8", "replace")})

    def wait_event(
        self,
        name: str,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for e in list(self.events):
                if e.get("event") == name and where(e):
                    return e
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before {name}:\n"
                    + b"".join(self.raw_lines[-30:]).decode("utf-8", "replace")
                )
            return None

        try:
            return wait_until(find, timeout, what=f"log event {name}")
        except AssertionError as exc:
            if not str(exc).startswith("timed out"):
                raise  # the daemon exited: find() named its last lines already
            # A timeout in CI must say what the daemon was doing, or it cannot be diagnosed.
            tail = b"".join(self.raw_lines[-30:]).decode("utf-8", "replace")
            raise AssertionError(f"{exc}; the daemon's last log lines:\n{tail}") from None

    def count(self, name: str) -> int:
        return sum(1 for e in list(self.events) if e.get("event") == name)

    def processed(self) -> int:
        """Messages the ingest finished with: stored, recognised as duplicates, quarantined."""
        return sum(map(self.count, ("message.stored", "message.duplicate", "message.quarantined")))

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close_pipe()
        return code

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the daemon to exit by itself; its exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            if self._reader.is_alive():
                # A process the daemon left behind still holds the pipe's write end:
                # closing the file under the blocked reader would hang this test too.
                return
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._close_pipe()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a one-shot ``buzon`` command against this daemon's config."""
        return run_cli("--config", str(self.config), *args, check=check)


def run_cli(
    *args: str, check: bool = True, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"buzon {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result
