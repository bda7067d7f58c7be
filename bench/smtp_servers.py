"""The SMTP bench's servers as processes: the bare aiosmtpd + fsync baseline and the
daemon without its ingest process (``--intake-only``), both run by re-executing
``bench/smtp_intake.py``; waiting for a server to listen, stopping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from smtp_load import HELO_NAME, HOST

STOP_TIMEOUT = 30.0


class FsyncFileHandler:
    """aiosmtpd handler: one file per message, fsynced off the event loop, then 250."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ids = itertools.count()
        self.accepted = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or b""
        await asyncio.to_thread(self._write, raw)
        self.accepted += 1
        return "250 2.0.0 OK"

    def _write(self, raw: bytes) -> None:
        path = self.root / f"{next(self._ids):08d}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


async def _serve_baseline(root: Path, port: int) -> int:
    from aiosmtpd.smtp import SMTP

    handler = FsyncFileHandler(root)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=HELO_NAME, decode_data=False, enable_SMTPUTF8=True),
        host=HOST,
        port=port,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()
    print(json.dumps({"accepted": handler.accepted}), flush=True)
    return 0


def _serve_intake_only(argv: list[str]) -> int:
    """``buzon run`` with the ingest process never started (--intake-only)."""
    from daemon import app, cli
    from daemon.ingest_process import IngestProcess

    # A subclass, not a look-alike: it takes whatever the real constructor takes and has
    # every method the daemon calls (a stand-alone stub broke when ``name=`` and
    # ``beat_age`` were added). The process object is made but never started.
    class NoIngest(IngestProcess):
        def start(self, timeout: float = 0) -> bool:
            return True

        def notify(self) -> None:
            return None

        def alive(self) -> bool:
            return True

        def beat_age(self) -> float:
            return 0.0

        def stop(self) -> None:
            return None

    app.IngestProcess = NoIngest  # type: ignore[attr-defined,unused-ignore]
    return cli.main(argv)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {HOST}:{port} within {timeout:g} s")


def stop_process(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM, wait; SIGKILL only if it overstays. Returns the seconds the stop took."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - started
