"""A worker stuck on one message is reported, so the daemon stops pinging systemd's watchdog.

The processor here blocks on purpose (a hang cannot be produced on demand with real
mail); the spool, the runner and its threads are the real ones.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from daemon.config import PipelineConfig
from daemon.ingest import IngestRunner, Outcome
from daemon.ordering import Turn
from daemon.spool import Spool, SpoolEntry
from support.daemon import wait_until
from support.mail import message


class Hanging:
    """Takes the spool's entries like IngestProcessor, and hangs on the first one."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.release = threading.Event()
        self.started = threading.Event()

    def process(self, entry: SpoolEntry, turn: Turn | None = None) -> Outcome:
        self.started.set()
        self.release.wait(30)
        self.spool.complete(entry)
        return Outcome(entry.id, "stored", None, None, "")


def test_a_worker_on_one_message_too_long_is_stuck_until_it_moves(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"))
    processor: Any = Hanging(spool)
    runner = IngestRunner(processor, PipelineConfig(parse_workers=1, poll_interval=0.05))
    entry = spool.put(message("Se queda colgado"), {"source": "test", "envelope": {}})
    runner.start()
    try:
        assert processor.started.wait(10)
        assert runner.stuck(5.0) == ""  # busy, but not for long
        time.sleep(0.3)
        said = runner.stuck(0.2)
        assert entry.id in said and "ingest-0" in said
        processor.release.set()
        wait_until(lambda: runner.processed == 1, 10, what="the message to finish")
        assert runner.stuck(0.2) == ""
    finally:
        processor.release.set()
        runner.stop(5)
