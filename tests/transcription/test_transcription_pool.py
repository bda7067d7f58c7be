"""The worker pool: real processes killed, crashed, timed out and starved, and it carries on."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from support.audio import VoicemailAudio, wav_bytes
from transcription import (
    DecodeLimits,
    ModelUnavailable,
    PoolClosed,
    Recognizer,
    RecognizerCrashed,
    TranscriberPool,
    Transcript,
    TranscriptionTimeout,
    UndecodableAudio,
    transcribe_audio,
)

SILENCE = wav_bytes(bytes(32000))  # one second: quick to recognise, no words


def wait_idle(pool: TranscriberPool, timeout: float = 60.0) -> None:
    """Wait until no worker is busy (a replacement may still be loading its models)."""
    deadline = time.monotonic() + timeout
    while any(w.busy for w in pool.stats().workers):
        assert time.monotonic() < deadline, "the pool stayed busy"
        time.sleep(0.02)


def busy_pid(pool: TranscriberPool, timeout: float = 30.0) -> int:
    """The pid of a worker that is running a job (waits for one to start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in pool.stats().workers:
            if w.busy and w.pid is not None:
                return w.pid
        time.sleep(0.02)
    raise AssertionError("no worker started the job")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_pool_gives_the_in_process_transcript_from_every_worker(
    pool: TranscriberPool, audio: VoicemailAudio, recognizer: Recognizer
) -> None:
    """Two threads at once on two workers: both get the transcript of the in-process path."""
    expected = transcribe_audio(recognizer, audio.read("wav49"))
    before = {w.pid: w.jobs for w in pool.stats().workers}
    results: list[Transcript] = []

    def call() -> None:
        results.append(pool.transcribe(audio.read("wav49"), pool_model(pool)))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.text for r in results] == [expected.text] * 2
    assert {r.words for r in results} == {expected.words}
    after = {w.pid: w.jobs for w in pool.stats().workers}
    assert all(after[pid] > jobs for pid, jobs in before.items()), "a worker sat idle"


def pool_model(pool: TranscriberPool) -> Path:
    """The model the shared pool preloaded."""
    loaded = {m for w in pool.stats().workers for m in w.model_load_seconds}
    assert len(loaded) == 1
    return Path(loaded.pop())


def test_preload_loads_the_model_once_per_worker(pool: TranscriberPool) -> None:
    """Every worker reports one load of the model, in seconds, and its peak memory."""
    for w in pool.stats().workers:
        assert w.pid is not None and alive(w.pid)
        assert [s > 0 for s in w.model_load_seconds.values()] == [True]
        assert w.peak_rss_bytes is not None and w.peak_rss_bytes > 100 << 20


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["kill-9", "segfault"])
def test_worker_killed_mid_job_fails_that_job_only(
    pool: TranscriberPool, audio: VoicemailAudio, long_speech: bytes, sig: signal.Signals
) -> None:
    """A worker killed while recognising: its job raises RecognizerCrashed (retry later),
    the worker is replaced, and the pool keeps transcribing."""
    model = pool_model(pool)
    wait_idle(pool)  # so that the busy worker below is the one running this job
    restarts = pool.stats().restarts
    job = pool.submit(long_speech, model)
    pid = busy_pid(pool)
    time.sleep(0.3)
    os.kill(pid, sig)
    with pytest.raises(RecognizerCrashed, match=f"killed by signal {int(sig)}") as err:
        job.result(timeout=30)
    assert not err.value.permanent
    assert not alive(pid)
    assert pool.stats().restarts == restarts + 1
    assert pool.transcribe(SILENCE, model).duration == 1.0


def test_missing_model_fails_the_job_not_the_pool(
    pool: TranscriberPool, audio: VoicemailAudio, tmp_path: Path
) -> None:
    """A job naming a model directory that is not there gets ModelUnavailable; no restart."""
    restarts = pool.stats().restarts
    with pytest.raises(ModelUnavailable, match=r"does not exist.*\[transcription\] model"):
        pool.transcribe(audio.read("wav"), tmp_path / "no-such-model")
    assert pool.stats().restarts == restarts
    assert pool.transcribe(SILENCE, pool_model(pool)).duration == 1.0


def test_undecodable_audio_fails_the_job_not_the_pool(pool: TranscriberPool) -> None:
    """Junk through the pool raises UndecodableAudio from the worker; nothing restarts."""
    restarts = pool.stats().restarts
    with pytest.raises(UndecodableAudio):
        pool.transcribe(b"\x00junk" * 100, pool_model(pool))
    assert pool.stats().restarts == restarts


@pytest.fixture(scope="module")
def strict_pool(model_dir: Path) -> Iterator[TranscriberPool]:
    """One worker, a 3 s time limit, and a threshold no transcript reaches."""
    with TranscriberPool(1, limits=DecodeLimits(time_limit=3.0), threshold=1.01) as p:
        p.preload(model_dir)
        yield p


def test_job_over_the_time_limit_is_killed_and_the_worker_replaced(
    strict_pool: TranscriberPool, long_speech: bytes, model_dir: Path
) -> None:
    """Past time_limit the worker is killed: TranscriptionTimeout (permanent), and the
    replacement worker reloads the model and serves the next job."""
    pid = strict_pool.stats().workers[0].pid
    started = time.monotonic()
    with pytest.raises(TranscriptionTimeout, match="longer than 3 s") as err:
        strict_pool.transcribe(long_speech, model_dir)
    assert 3.0 <= time.monotonic() - started < 20
    assert err.value.permanent
    assert pid is not None and not alive(pid)
    t = strict_pool.transcribe(SILENCE, model_dir)
    assert t.needs_listening  # the pool's threshold of 1.01 reached the worker
    worker = strict_pool.stats().workers[0]
    assert worker.pid != pid
    assert str(model_dir) in worker.model_load_seconds  # reloaded by the replacement


def test_worker_that_died_while_idle_is_replaced_silently(
    strict_pool: TranscriberPool, model_dir: Path
) -> None:
    """A worker killed between jobs (OOM killer, an admin) costs the next job nothing."""
    strict_pool.transcribe(SILENCE, model_dir)
    pid = strict_pool.stats().workers[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Dead as its parent sees it: /proc shows the killed leader a zombie while the
    # worker's other threads still exit, and until then waitpid (the pool's is_alive)
    # reports it running; under load the next job was sent to it and hit a closed pipe.
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        time.sleep(0.01)
    assert strict_pool.transcribe(SILENCE, model_dir).duration == 1.0


def test_close_fails_running_and_queued_jobs_and_leaves_no_process(
    model_dir: Path, long_speech: bytes
) -> None:
    """close() kills the workers: the running and queued jobs raise PoolClosed (retry
    later), later submits too, and no worker process is left behind."""
    pool = TranscriberPool(1)
    running = pool.submit(long_speech, model_dir)
    queued = pool.submit(long_speech, model_dir)
    pid = busy_pid(pool)
    pool.close()
    for job in (running, queued):
        with pytest.raises(PoolClosed):
            job.result(timeout=10)
    with pytest.raises(PoolClosed):
        pool.submit(SILENCE, model_dir).result(timeout=1)
    assert not alive(pid)


def test_memory_limit_applies_to_workers(tmp_path: Path) -> None:
    """memory_limit_bytes becomes the worker's address-space limit (RLIMIT_AS)."""
    limit = 6 << 30
    with TranscriberPool(1, memory_limit_bytes=limit) as pool:
        with pytest.raises(ModelUnavailable):  # a quick job: the worker is up and limited
            pool.transcribe(SILENCE, tmp_path / "absent")
        pid = pool.stats().workers[0].pid
        with open(f"/proc/{pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max address space"))
        assert line.split()[3:5] == [str(limit), str(limit)]


def test_model_that_cannot_load_in_time_is_unavailable(model_dir: Path) -> None:
    """Under an address-space limit too small for it, Vosk spins instead of failing (here;
    elsewhere it may fail at once); either way ModelUnavailable, and a model that failed to
    preload is not reloaded into every replacement worker forever."""
    with TranscriberPool(1, memory_limit_bytes=900 << 20, load_time_limit=1.5) as pool:
        future: Future[Transcript] = pool.submit(SILENCE, model_dir)
        with pytest.raises(ModelUnavailable, match=r"longer than 1.5 s|could not load"):
            future.result(timeout=30)
        with pytest.raises(ModelUnavailable):
            pool.preload(model_dir)
        time.sleep(0.5)
        worker = pool.stats().workers[0]
        assert not worker.busy, "the replacement worker is loading the failed model again"
        assert worker.model_load_seconds == {}
