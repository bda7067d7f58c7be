"""Run the ingest runner in a process of its own, beside the SMTP process.

It hosts the roles ``pipeline`` (the spool runner) and ``transcription`` (the
recognisers, which claim voicemails from the database); ``[roles]`` says which of
the two run here, and the supervisor starts this process only when one does.

Parsing results, ORM work and SQLite commits are CPU-heavy Python: run as
threads of the SMTP process they hold the GIL the event loop needs to answer
clients, and intake slowed to half its speed under load. In its own process
ingest shares only the spool with intake, and a crash of one is not a crash of
the other. The parent decides when it stops; signals sent to the whole group
(Ctrl-C, systemd's SIGTERM to the cgroup) are left to the parent.

The parent talks to it through one pipe: a byte means "new spool entries", the
end of the pipe means "stop". The kernel closes the pipe when the parent dies
however it dies, so a kill -9 of the parent stops this process too. Nothing they
share has a lock: a lock held by a parent killed mid-call leaves the child waiting
forever. "Ready" is a byte on a second pipe, the other way (a multiprocessing Event
left a child killed during its start blocked in ``set``, an orphan holding the
database and the log pipe), and the heartbeat is a bare shared double.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from ctypes import c_double
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess

from daemon import logging as logmod
from daemon.config import Config
from daemon.imap import instance_id
from daemon.ingest import IngestRunner
from daemon.parts import Parts, open_parts
from daemon.voice import TranscriptionRunner

STOP_TIMEOUT = 4.0


def ingest_main(
    cfg: Config, name: str, wake: Connection, ready: Connection, heartbeat: c_double
) -> None:
    """Entry point of the ingest process: process the spool until the parent's pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logmod.configure(cfg.log.level, cfg.log.format, components=dict(cfg.log.components))
    log = logmod.get_logger(component="ingest")
    try:
        _serve(cfg, name, wake, ready, heartbeat)
    except Exception as exc:
        log.error("ingest.crashed", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc
    # Everything is closed and logged by now. Skip the interpreter's final garbage
    # collection: at nice 19 on a busy machine it took 10-20 s, during which an
    # orphaned process (its parent killed) still held the log pipe and the database.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _parent_says_stop(wake: Connection, timeout: float) -> bool | None:
    """True at the end of the pipe (stop, or the parent died); None on a timeout;
    False when woken by new spool entries."""
    if not wake.poll(timeout):
        return None
    try:
        data = os.read(wake.fileno(), 4096)  # drain: many wake-ups are one
    except BlockingIOError:
        return False
    return not data


def _say_ready(ready: Connection) -> bool:
    """Tell the parent this process is up; False when the parent died during the start."""
    try:
        os.write(ready.fileno(), b"r")
    except BrokenPipeError:
        return False
    finally:
        ready.close()
    return True


def _serve(
    cfg: Config, name: str, wake: Connection, ready: Connection, heartbeat: c_double
) -> None:
    log = logmod.get_logger(component="ingest")
    with open_parts(cfg, recover=False) as parts:
        if cfg.roles.pipeline:
            # Spawned first: a parser process boots (~0.9 s of imports) on the other core
            # while this one builds the triager, so the first message does not wait for it.
            parts.parsers.start()
        # Rules and the language models classify mail and transcripts alike: a bad rule
        # fails the start of either role. Built before nice: at nice 19 on a busy host,
        # loading every language model took minutes (now only the trigram models load
        # here, ~0.05 s; the rest with the first short text, triage.language).
        parts.triager()
        heartbeat.value = time.time()
        if not _say_ready(ready):
            return  # the parent died during the start
        runner, voice = _start_workers(cfg, name, parts)
        log.info(
            "ingest.started",
            pid=os.getpid(),
            workers=cfg.pipeline.parse_workers if runner is not None else 0,
            pipeline=runner is not None,
            transcription=voice is not None,
        )
        # Acknowledging mail comes first: under a burst the spool absorbs the backlog and
        # ingest catches up when the CPU is free (SLA clocks start at the spooled
        # received_at). Only from here: started at nice 19 on a busy host, loading the
        # triager took minutes, past systemd's TimeoutStartSec, while no SMTP listener
        # was up yet to be put first.
        os.nice(cfg.pipeline.nice)
        parts.parsers.follow_priority()  # none running without the pipeline role
        # As the parent does at READY (daemon/app.py): what is loaded now (the triager's
        # models, rules, SQLAlchemy's metadata) lives as long as the process, and every
        # full collection walked it again: ~1 % of this process's CPU at steady load.
        gc.collect()
        gc.freeze()
        _beat_until_stopped(cfg, wake, heartbeat, runner, voice)
        if voice is not None:
            voice.stop()
        if runner is not None:
            runner.stop(STOP_TIMEOUT - 1)
        log.info("ingest.stopped", processed=runner.processed if runner is not None else 0)


def _start_workers(
    cfg: Config, name: str, parts: Parts
) -> tuple[IngestRunner | None, TranscriptionRunner | None]:
    """The spool runner and the recognisers, each where its role runs here."""
    runner: IngestRunner | None = None
    if cfg.roles.pipeline:
        runner = IngestRunner(parts.processor, cfg.pipeline)
        runner.start()
    voice: TranscriptionRunner | None = None
    if cfg.roles.transcription:
        voice = TranscriptionRunner(
            cfg.transcription,
            parts.db,
            parts.blobs,
            holder=name or instance_id(),
            triager=parts.triager,
            sla=cfg.desk.sla,
            # The instance's name, the same after a restart: what it held then is taken
            # back. An earlier run of this process still finishing (its parent was
            # killed) may record nothing for a recording taken back: each outcome is
            # written only under the claim it was made for.
            take_back=bool(name),
        )
        voice.start()
    return runner, voice


def _beat_until_stopped(
    cfg: Config,
    wake: Connection,
    heartbeat: c_double,
    runner: IngestRunner | None,
    voice: TranscriptionRunner | None,
) -> None:
    """Beat while the workers make progress and pass on wake-ups, until the pipe ends."""
    log = logmod.get_logger(component="ingest")
    stuck_said = ""
    while runner is None or runner.alive():
        # The parent pings systemd's watchdog only while this beats: a worker stuck on
        # one message (or this process hung) stops the beat, and systemd restarts the
        # service instead of letting mail pile up unseen.
        stuck = runner.stuck(cfg.pipeline.stuck_after) if runner is not None else ""
        if not stuck:
            heartbeat.value = time.time()
        elif stuck != stuck_said:
            log.error("ingest.stuck", detail=stuck, limit_s=cfg.pipeline.stuck_after)
        stuck_said = stuck
        said = _parent_says_stop(wake, 0.5)
        if said:
            return
        if said is False:
            if runner is not None:
                runner.wakeup.set()
            if voice is not None:
                voice.wakeup.set()  # a new voicemail may be waiting


class IngestProcess:
    """The parent's handle: start, wake on new spool entries, watch, stop."""

    def __init__(self, cfg: Config, *, name: str = "") -> None:
        """``name``: the instance's, which survives restarts (``daemon.instance``); its
        transcription claims are then taken back at start. "" = a name per process."""
        ctx = multiprocessing.get_context("spawn")
        reader, self._writer = ctx.Pipe(duplex=False)
        # A notify must never block the event loop or an IMAP thread: when the pipe is
        # full, the child has wake-ups pending anyway.
        os.set_blocking(self._writer.fileno(), False)
        self._reader = reader
        self._lock = threading.Lock()
        self._ready, self._says_ready = ctx.Pipe(duplex=False)
        self.heartbeat: c_double = ctx.RawValue(c_double, 0.0)  # one writer, torn reads harmless
        # Not a daemonic process: it has parser processes of its own. It exits by
        # itself when the parent goes away (the end of the pipe, _parent_says_stop).
        self.proc: SpawnProcess = ctx.Process(
            target=ingest_main,
            args=(cfg, name, reader, self._says_ready, self.heartbeat),
            name="buzon-ingest",
        )

    def start(self, timeout: float = 120.0) -> bool:
        """Start it and wait until it is processing; False if it died or hung first."""
        self.proc.start()
        self._reader.close()  # only the child reads; our copy would hide the end of the pipe
        self._says_ready.close()  # only the child writes: its death ends the pipe
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._ready.poll(0.1):
                    return os.read(self._ready.fileno(), 1) == b"r"  # b"": died first
                if not self.proc.is_alive():
                    return False
            return False
        finally:
            self._ready.close()

    def notify(self) -> None:
        # The lock keeps a late notify from writing to a reused descriptor after stop().
        with self._lock, contextlib.suppress(BlockingIOError, BrokenPipeError):
            if not self._writer.closed:
                os.write(self._writer.fileno(), b"\0")  # full: wake-ups are pending

    def alive(self) -> bool:
        return self.proc.is_alive()

    def beat_age(self) -> float:
        """Seconds since the process last said its workers make progress."""
        return max(0.0, time.time() - self.heartbeat.value)

    @property
    def exitcode(self) -> int | None:
        return self.proc.exitcode

    def stop(self) -> None:
        """Let the current message finish; kill only past the timeout (the spool keeps it)."""
        with self._lock:
            self._writer.close()
        self.proc.join(STOP_TIMEOUT)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
