"""Run the ingest runner in a process of its own, beside the SMTP process.

Parsing results, ORM work and SQLite commits are CPU-heavy Python: run as
threads of the SMTP process they hold the GIL the event loop needs to answer
clients, and intake slowed to half its speed under load. In its own process
ingest shares only the spool with intake, and a crash of one is not a crash of
the other. The parent decides when it stops; signals sent to the whole group
(Ctrl-C, systemd's SIGTERM to the cgroup) are left to the parent.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event

from daemon import logging as logmod
from daemon.config import Config
from daemon.ingest import IngestRunner
from daemon.parts import open_parts

STOP_TIMEOUT = 4.0


def ingest_main(cfg: Config, wake: Event, stop: Event, ready: Event) -> None:
    """Entry point of the ingest process: process the spool until ``stop`` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Acknowledging mail comes first: under a burst the spool absorbs the backlog and
    # ingest catches up when the CPU is free. SLA clocks start at the spooled
    # received_at, so a late ingest does not move any deadline.
    os.nice(cfg.pipeline.nice)
    logmod.configure(cfg.log.level, cfg.log.format)
    log = logmod.get_logger(component="ingest")
    try:
        _serve(cfg, wake, stop, ready)
    except Exception as exc:
        log.error("ingest.crashed", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc


def _serve(cfg: Config, wake: Event, stop: Event, ready: Event) -> None:
    log = logmod.get_logger(component="ingest")
    parent = os.getppid()
    with open_parts(cfg, recover=False) as parts:
        parts.parsers.start()
        runner = IngestRunner(parts.processor, cfg.pipeline)
        runner.start()
        log.info("ingest.started", pid=os.getpid(), workers=cfg.pipeline.parse_workers)
        ready.set()
        while not stop.is_set() and os.getppid() == parent and runner.alive():
            if wake.wait(0.5):
                wake.clear()
                runner.wakeup.set()
        runner.stop(STOP_TIMEOUT - 1)
        log.info("ingest.stopped", processed=runner.processed)


class IngestProcess:
    """The parent's handle: start, wake on new spool entries, watch, stop."""

    def __init__(self, cfg: Config) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.wake = ctx.Event()
        self.stop_event = ctx.Event()
        self.ready = ctx.Event()
        # Not a daemonic process: it has parser processes of its own. It exits by
        # itself when the parent goes away (see the getppid check in _serve).
        self.proc: SpawnProcess = ctx.Process(
            target=ingest_main,
            args=(cfg, self.wake, self.stop_event, self.ready),
            name="buzon-ingest",
        )

    def start(self, timeout: float = 120.0) -> bool:
        """Start it and wait until it is processing; False if it died or hung first."""
        self.proc.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return True
            if not self.proc.is_alive():
                return False
        return False

    def notify(self) -> None:
        self.wake.set()

    def alive(self) -> bool:
        return self.proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self.proc.exitcode

    def stop(self) -> None:
        """Let the current message finish; kill only past the timeout (the spool keeps it)."""
        self.stop_event.set()
        self.proc.join(STOP_TIMEOUT)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
