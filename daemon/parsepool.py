"""Parse messages in worker processes, with a wall-clock limit per message.

A Python thread cannot be interrupted, and a pathological message can make
the email package spin or a C extension crash. Each worker is a process we can
kill: a timeout kills and replaces it (the message is quarantined as
permanent), a crash replaces it (the message counts one attempt and is retried).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from typing import Any

from daemon.errors import ParseTimeoutError, TransientError, WorkerCrashedError
from parsers import ParsedMessage, ParseLimits

ParseFn = Callable[[bytes, ParseLimits], ParsedMessage]


def default_parse(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    from parsers import parse_message  # type: ignore[attr-defined,unused-ignore]

    return parse_message(raw, limits=limits)


def _worker_main(conn: multiprocessing.connection.Connection, parse: ParseFn) -> None:
    # mail-parser warns on most multipart mail; in a spawned child nothing has
    # configured logging, so those lines would reach journald as unstructured text.
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    limits = ParseLimits()
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send(parse(raw, limits))


class _Worker:
    def __init__(self, ctx: Any, parse: ParseFn) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.proc: SpawnProcess = ctx.Process(
            target=_worker_main, args=(child, parse), name="buzon-parser", daemon=True
        )
        self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class ParserPool:
    """A fixed set of parser processes shared by the ingest threads."""

    def __init__(self, workers: int, timeout: float, parse: ParseFn = default_parse) -> None:
        # spawn, not fork: the daemon has threads, and forking a threaded process
        # can copy a held lock into the child.
        self._ctx = multiprocessing.get_context("spawn")
        self._parse = parse
        self.timeout = timeout
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._workers = workers
        self._started = False
        self._closing = False

    def start(self) -> None:
        """Start the worker processes now (otherwise on first use)."""
        self._start()

    def _start(self) -> None:
        # Workers start on first use: one-shot commands that never parse pay nothing.
        with self._lock:
            if self._started:
                return
            self._started = True
        for _ in range(self._workers):
            self._add()

    def follow_priority(self) -> None:
        """Give the running workers this process's priority (replacements inherit it)."""
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        with self._lock:
            pids = [w.proc.pid for w in self._all if w.proc.pid is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # died: its replacement inherits
                os.setpriority(os.PRIO_PROCESS, pid, nice)

    def _add(self) -> None:
        worker = _Worker(self._ctx, self._parse)
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.remove(worker)
        self._add()

    def parse(self, raw: bytes) -> ParsedMessage:
        """Parse ``raw`` in a worker; raises ParseTimeoutError or WorkerCrashedError."""
        self._start()
        worker = self._idle.get()
        try:
            worker.conn.send_bytes(raw)
            if not worker.conn.poll(self.timeout):
                self._replace(worker)
                raise ParseTimeoutError(
                    f"parsing took longer than {self.timeout:g} s; the message is kept raw "
                    "(raise [pipeline] parse_timeout if this mail is legitimate)"
                )
            result: ParsedMessage = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            if self._closing:
                # We killed it ourselves while stopping: not the message's fault.
                raise TransientError("parser pool closed during shutdown") from exc
            worker.proc.join(2)  # reap it, so the exit code names how it died
            code = worker.proc.exitcode
            self._replace(worker)
            raise WorkerCrashedError(
                f"parser process died (exit code {code}) while parsing this message"
            ) from exc
        self._idle.put(worker)
        return result

    def close(self) -> None:
        self._closing = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()
