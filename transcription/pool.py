"""Run transcriptions in a fixed set of killable worker processes, with a time limit per job.

Vosk and FFmpeg are C code: a thread cannot interrupt them, and hostile audio can make a
decoder spin or crash. So each job (decode and recognise) runs in a spawned process that we
can kill. Each worker slot is a thread in the caller's process that owns one worker process
and takes jobs from a shared queue; a worker that passes the time limit is killed and
replaced (the job fails with TranscriptionTimeout), one that dies is replaced (the job fails
with RecognizerCrashed, or ModelUnavailable if it died loading a model). Models are loaded
once per worker and kept, so only the first job per model and worker pays for loading.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import multiprocessing.connection
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from transcription.model import (
    DecodeLimits,
    ModelUnavailable,
    PoolClosed,
    RecognizerCrashed,
    Transcript,
    TranscriptionError,
    TranscriptionTimeout,
)
from transcription.recognize import DEFAULT_THRESHOLD
from transcription.worker import worker_main

DEFAULT_LOAD_TIME_LIMIT = 600.0  # large models (1-2 GB) take minutes on slow disks


@dataclass(frozen=True)
class WorkerStats:
    """One worker process as seen by the pool."""

    pid: int | None
    busy: bool
    jobs: int
    model_load_seconds: dict[str, float]  # by model directory, for this process
    peak_rss_bytes: int | None  # VmHWM from /proc (Linux), None when unknown


@dataclass(frozen=True)
class PoolStats:
    workers: tuple[WorkerStats, ...]
    restarts: int  # workers replaced after a timeout or a crash


@dataclass(frozen=True)
class _Job:
    future: concurrent.futures.Future[Transcript | None]
    request: tuple[Any, ...]
    model_dir: str


class _Worker:
    """One worker process and our end of its pipe."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: SpawnProcess = ctx.Process(
            target=worker_main, args=(child, *args), name="buzon-transcriber", daemon=True
        )
        self.proc.start()
        child.close()
        self.loaded: dict[str, float] = {}

    def kill(self) -> None:
        """Kill, reap and hang up; only the slot thread that owns the pipe may call this."""
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def death(self) -> str:
        self.proc.join(2)  # reap it, so the exit code says how it died
        code = self.proc.exitcode
        if code is None:
            return "stopped answering"
        return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


class _Slot:
    """The thread-side state of one worker: which process, busy or not, jobs done."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None
        self.busy = False
        self.jobs = 0
        self.pending_loads: list[_Job] = []


class TranscriberPool:
    """N worker processes shared by any number of threads; ``submit`` returns a Future.

    ``limits.time_limit`` bounds decoding plus recognition of one job (model loading has its
    own ``load_time_limit``); ``memory_limit_bytes`` caps each worker's address space.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        limits: DecodeLimits | None = None,
        memory_limit_bytes: int | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        load_time_limit: float = DEFAULT_LOAD_TIME_LIMIT,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a transcriber pool needs at least one worker, not {workers}")
        # spawn, not fork: the daemon has threads, and a forked child can inherit a held lock.
        self._ctx = multiprocessing.get_context("spawn")
        self.limits = limits or DecodeLimits()
        self.load_time_limit = load_time_limit
        self._args = (self.limits, threshold, memory_limit_bytes)
        # One condition guards everything below; slot threads wait on it for work.
        self._cv = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._closing = False
        self._models: list[str] = []  # preloaded; reloaded into replacement workers
        self._restarts = 0
        self._slots = [_Slot() for _ in range(workers)]
        for slot in self._slots:
            self._spawn(slot)
        self._threads = [
            threading.Thread(target=self._serve, args=(s,), name=f"transcriber-{i}", daemon=True)
            for i, s in enumerate(self._slots)
        ]
        for t in self._threads:
            t.start()

    def __enter__(self) -> TranscriberPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, audio: bytes, model_dir: Path, format_hint: str = ""
    ) -> concurrent.futures.Future[Transcript]:
        """Queue one recording; the Future raises a TranscriptionError subclass on failure."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        key = str(model_dir)
        job = _Job(future, ("job", key, audio, format_hint), key)
        with self._cv:
            if self._closing:
                _fail(job, PoolClosed("the transcriber pool is closed"))
            else:
                self._jobs.append(job)
                self._cv.notify()
        return future

    def transcribe(self, audio: bytes, model_dir: Path, format_hint: str = "") -> Transcript:
        """Blocking ``submit``: safe to call from many threads at once."""
        return self.submit(audio, model_dir, format_hint).result()

    def preload(self, model_dir: Path, wait: bool = True) -> None:
        """Load a model into every worker now, and into every replacement worker later.

        With ``wait``, returns once every worker has it, and raises ModelUnavailable if one
        could not load it. A worker busy with a job loads it after that job.
        """
        key = str(model_dir)
        futures: list[concurrent.futures.Future[Transcript | None]] = []
        with self._cv:
            if self._closing:
                raise PoolClosed("the transcriber pool is closed")
            if key not in self._models:
                self._models.append(key)
            for slot in self._slots:
                job = _Job(concurrent.futures.Future(), ("load", key), key)
                slot.pending_loads.append(job)
                futures.append(job.future)
            self._cv.notify_all()
        if wait:
            for f in futures:
                f.result()

    def stats(self) -> PoolStats:
        """Worker pids, model load times and peak memory, for logs and benchmarks."""
        with self._cv:
            rows = []
            for slot in self._slots:
                w = slot.worker
                pid = w.proc.pid if w is not None else None
                rows.append(
                    WorkerStats(
                        pid=pid,
                        busy=slot.busy,
                        jobs=slot.jobs,
                        model_load_seconds=dict(w.loaded) if w is not None else {},
                        peak_rss_bytes=_peak_rss(pid),
                    )
                )
            return PoolStats(tuple(rows), self._restarts)

    def close(self) -> None:
        """Stop every worker (a running job fails with PoolClosed) and join the threads."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            pending = list(self._jobs) + [j for s in self._slots for j in s.pending_loads]
            self._jobs.clear()
            for slot in self._slots:
                slot.pending_loads.clear()
            workers = [s.worker for s in self._slots if s.worker is not None]
            self._cv.notify_all()
        for job in pending:
            _fail(job, PoolClosed("the transcriber pool closed before this job ran"))
        # Workers keep no state worth a graceful stop. Only the processes die here: a slot
        # thread may be using the pipe, and sees it break; pipes close after the threads end.
        for w in workers:
            w.proc.kill()
        for t in self._threads:
            t.join(10)
        with self._cv:
            workers += [s.worker for s in self._slots if s.worker is not None]
        for w in workers:
            w.kill()

    # --- the slot threads -----------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        """Start a worker for ``slot`` (the caller holds the lock); it loads preloaded models."""
        slot.worker = _Worker(self._ctx, self._args)
        slot.pending_loads[:0] = [
            _Job(concurrent.futures.Future(), ("load", m), m) for m in self._models
        ]

    def _next(self, slot: _Slot) -> _Job | None:
        with self._cv:
            while not (self._closing or slot.pending_loads or self._jobs):
                self._cv.wait()
            if self._closing:
                return None
            # Loads first: a replacement worker gets its models before its next job.
            return slot.pending_loads.pop(0) if slot.pending_loads else self._jobs.popleft()

    def _serve(self, slot: _Slot) -> None:
        while (job := self._next(slot)) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = self._exchange(slot, job)
            except TranscriptionError as exc:
                if job.request[0] == "load":
                    self._forget(job.model_dir, exc)
                job.future.set_exception(exc)
            except BaseException as exc:  # a bug here must not leave a caller waiting forever
                job.future.set_exception(exc)
                raise
            else:
                job.future.set_result(result)

    def _forget(self, model_dir: str, error: TranscriptionError | None = None) -> None:
        # A model that failed to load (or hung, or crashed its worker) is not reloaded into
        # every replacement worker: that could loop forever. Jobs still load it on demand.
        with self._cv:
            if model_dir in self._models:
                self._models.remove(model_dir)
            dropped = [j for s in self._slots for j in s.pending_loads if j.model_dir == model_dir]
            for slot in self._slots:
                slot.pending_loads = [j for j in slot.pending_loads if j.model_dir != model_dir]
        for job in dropped:  # a waiting preload() learns why
            _fail(job, error or ModelUnavailable(f"loading the model in {model_dir} failed"))

    def _exchange(self, slot: _Slot, job: _Job) -> Transcript | None:
        with self._cv:
            if self._closing:
                raise PoolClosed("the transcriber pool is closed")
            worker = slot.worker
            assert worker is not None
            if not worker.proc.is_alive():  # died while idle (OOM killer, an admin's kill)
                self._replace(slot, worker)
                worker = slot.worker
                assert worker is not None
            slot.busy = True
        try:
            return self._talk(slot, worker, job)
        finally:
            slot.busy = False

    def _talk(self, slot: _Slot, worker: _Worker, job: _Job) -> Transcript | None:
        loading = False
        deadline = time.monotonic() + self.load_time_limit  # until the model is ready
        try:
            worker.conn.send(job.request)
            while True:
                if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    self._replace(slot, worker, job)
                    raise self._timeout(job, loading)
                reply = worker.conn.recv()
                if reply[0] == "loading":
                    loading = True
                elif reply[0] == "ready":
                    loading = False
                    if reply[1] is not None:
                        worker.loaded[job.model_dir] = reply[1]
                    deadline = time.monotonic() + self.limits.time_limit
                elif reply[0] == "done":
                    slot.jobs += reply[1] is not None
                    return reply[1]  # type: ignore[no-any-return]
                else:
                    error: TranscriptionError = reply[1]
                    if isinstance(error, RecognizerCrashed):
                        self._replace(slot, worker, job)  # it exits after reporting these
                    raise error
        except (EOFError, OSError) as exc:
            if self._closing:
                raise PoolClosed("the transcriber pool closed during this job") from exc
            how = worker.death()
            self._replace(slot, worker, job)
            if loading:
                raise ModelUnavailable(
                    f"the transcriber process {how} while loading the model in "
                    f"{job.model_dir}; check that it is a complete Vosk model and that "
                    "[transcription] memory_limit leaves room for it"
                ) from exc
            raise RecognizerCrashed(
                f"the transcriber process {how} during this job; it was replaced"
            ) from exc

    def _timeout(self, job: _Job, loading: bool) -> TranscriptionError:
        if loading:
            return ModelUnavailable(
                f"loading the model in {job.model_dir} took longer than "
                f"{self.load_time_limit:g} s; check the disk, or use a smaller model"
            )
        return TranscriptionTimeout(
            f"decoding and recognition took longer than {self.limits.time_limit:g} s, so the "
            "transcriber process was killed; the recording is kept (raise [transcription] "
            "time_limit if such recordings are legitimate)"
        )

    def _replace(self, slot: _Slot, worker: _Worker, job: _Job | None = None) -> None:
        """Kill ``worker`` and start its successor at once, so it is warm for the next job."""
        worker.kill()
        with self._cv:
            if job is not None and job.request[0] == "load":
                self._forget(job.model_dir)  # before the successor is told to load it
            if slot.worker is worker and not self._closing:
                self._restarts += 1
                self._spawn(slot)


def _fail(job: _Job, error: TranscriptionError) -> None:
    if job.future.set_running_or_notify_cancel():
        job.future.set_exception(error)


def _peak_rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
