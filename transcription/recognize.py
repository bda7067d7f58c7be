"""Recognise 16 kHz PCM with one Vosk model loaded once: deterministic text, words, confidence.

Vosk itself is not deterministic across calls: Kaldi's feature extraction adds dither noise
drawn from the C library's ``rand()``, whose state carries over from call to call (and
model loading draws from it too), so the same audio transcribed twice in one process can
give different words. We reseed ``rand()`` before every recording and feed Vosk fixed-size
chunks (the noise also depends on how the audio is split), which makes a transcript a
function of the audio and the model alone. That reseeding is process-wide, hence the lock.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vosk

from transcription.model import (
    PCM_BYTES_PER_SECOND,
    PCM_RATE,
    ModelUnavailable,
    Transcript,
    Word,
)

CHUNK_BYTES = 8000  # 0.25 s per AcceptWaveform, as in Vosk's own examples
RAND_SEED = 1  # glibc's documented initial seed
DEFAULT_THRESHOLD = 0.6
GENERIC_DIR_NAMES = frozenset({"model", "models", "current", "latest"})


def check_model_dir(model_dir: Path) -> None:
    """Raise ModelUnavailable unless ``model_dir`` has the files of a Vosk model.

    Checked before Vosk sees the path: Kaldi can abort the whole process on some bad paths.
    """
    am = ("am/final.mdl", "final.mdl")  # current layout, and the old flat one
    graph = ("graph/HCLG.fst", "graph/HCLr.fst", "HCLG.fst", "HCLr.fst")
    if not model_dir.is_dir():
        problem = "does not exist" if not model_dir.exists() else "is not a directory"
    elif not any((model_dir / p).is_file() for p in am):
        problem = "has no acoustic model (am/final.mdl)"
    elif not any((model_dir / p).is_file() for p in graph):
        problem = "has no decoding graph (graph/HCLG.fst or graph/HCLr.fst)"
    elif not (model_dir / "conf" / "mfcc.conf").is_file():
        problem = "has no conf/mfcc.conf"
    else:
        return
    raise ModelUnavailable(
        f"Vosk model directory {model_dir} {problem}; set [transcription] model to an "
        "unpacked Vosk model directory (https://alphacephei.com/vosk/models)"
    )


def model_name(model_dir: Path) -> str:
    """A readable name for a model: its directory, with the parent when the name is generic."""
    if model_dir.name.lower() in GENERIC_DIR_NAMES and model_dir.parent.name:
        return f"{model_dir.parent.name}/{model_dir.name}"
    return model_dir.name


def _libc_srand() -> Callable[[int], Any] | None:
    try:
        srand: Callable[[int], Any] = ctypes.CDLL(None).srand
        return srand
    except (OSError, AttributeError):  # not a POSIX libc: transcripts may then vary
        return None


class Recognizer:
    """One loaded Vosk model; ``transcribe`` may be called any number of times."""

    def __init__(self, model_dir: Path, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.model_dir = model_dir
        self.name = model_name(model_dir)
        self.threshold = threshold
        check_model_dir(model_dir)
        vosk.SetLogLevel(-1)  # Kaldi's INFO lines would reach journald as unstructured text
        started = time.perf_counter()
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelUnavailable(
                f"Vosk could not load the model in {model_dir} ({exc}); check that the "
                "directory is a complete, unpacked Vosk model and that [transcription] model "
                "points at it"
            ) from exc
        self.load_seconds = time.perf_counter() - started
        self._srand = _libc_srand()
        self._lock = threading.Lock()

    def transcribe(self, pcm: bytes) -> Transcript:
        """Recognise s16le mono 16 kHz ``pcm``; the same bytes always give the same result."""
        started = time.perf_counter()
        with self._lock:
            if self._srand is not None:
                self._srand(RAND_SEED)
            rec = vosk.KaldiRecognizer(self._model, PCM_RATE)
            rec.SetWords(True)
            segments: list[dict[str, Any]] = []
            for offset in range(0, len(pcm), CHUNK_BYTES):
                if rec.AcceptWaveform(pcm[offset : offset + CHUNK_BYTES]):
                    segments.append(json.loads(rec.Result()))
            segments.append(json.loads(rec.FinalResult()))
        return self._transcript(segments, len(pcm), time.perf_counter() - started)

    def _transcript(
        self, segments: list[dict[str, Any]], nbytes: int, elapsed: float
    ) -> Transcript:
        words = tuple(
            Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w["conf"]))
            for seg in segments
            for w in seg.get("result", ())
        )
        confidence = sum(w.conf for w in words) / len(words) if words else 0.0
        return Transcript(
            text=" ".join(t for seg in segments if (t := str(seg.get("text", "")).strip())),
            words=words,
            confidence=confidence,
            model=self.name,
            duration=nbytes / PCM_BYTES_PER_SECOND,
            elapsed=elapsed,
            needs_listening=not words or confidence < self.threshold,
        )
