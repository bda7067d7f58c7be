"""An SMTP listener with a real spool, running on its own event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

from daemon.config import SmtpConfig
from daemon.smtp import IntakeHandler, SmtpServer
from daemon.spool import Spool
from daemon.spool_writer import GroupCommitWriter


class Intake:
    def __init__(self, root: Path, **smtp: object) -> None:
        self.cfg = replace(
            SmtpConfig(),
            listen="127.0.0.1:0",
            hostname="test.local",
            domains=("example.com",),
            addresses=("help@desk.example.org",),
            **smtp,
        )  # type: ignore[arg-type]
        self.spool = Spool(root / "spool")
        self.writer = GroupCommitWriter(self.spool)
        self.handler = IntakeHandler(self.cfg, self.spool, self.writer)
        self.server = SmtpServer(self.cfg, self.handler)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> Intake:
        self.thread.start()
        self.writer.start(self.loop)
        _, self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(10)
        self.writer.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def stored(self) -> list[bytes]:
        return [self.spool.get(i).read() for i in self.spool.pending()]  # type: ignore[union-attr]
