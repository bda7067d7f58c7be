"""The main loop of one transcriber process: keep models loaded, run one job at a time.

The parent (``transcription.pool``) sends requests over a pipe; the worker answers each with
a few replies, in order, so the parent can tell what a dying worker was doing:

* ``("load", model_dir)`` -> ``("loading",)`` only if not yet loaded, ``("ready", seconds)``
  (seconds spent loading, None when it was already loaded), ``("done", None)``
* ``("job", model_dir, audio, format_hint)`` -> the same, then ``("done", Transcript)``
* any failure -> ``("error", TranscriptionError)`` instead of the rest
* ``None`` or a closed pipe -> the worker exits.
"""

from __future__ import annotations

import multiprocessing.connection
import resource
from pathlib import Path
from typing import Any

from transcription.job import transcribe_audio
from transcription.model import DecodeLimits, RecognizerCrashed, TranscriptionError
from transcription.recognize import Recognizer


def worker_main(
    conn: multiprocessing.connection.Connection,
    limits: DecodeLimits,
    threshold: float,
    memory_limit_bytes: int | None,
) -> None:
    """Serve requests until told to stop; each model directory is loaded once and kept."""
    if memory_limit_bytes is not None:
        # Address space, not RSS: the only limit the kernel enforces per process without
        # cgroups. A hostile file that makes a decoder allocate wildly fails here, not the host.
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    recognizers: dict[str, Recognizer] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if request is None:
            return
        try:
            conn.send(("done", _serve(conn, recognizers, request, limits, threshold)))
        except TranscriptionError as exc:
            conn.send(("error", exc))
        except MemoryError:
            conn.send(("error", RecognizerCrashed(_oom_message(memory_limit_bytes))))
            return  # a process that ran out of memory may be in any state: start afresh
        except Exception as exc:  # a bug or an unmapped library error: report, then start afresh
            conn.send(
                (
                    "error",
                    RecognizerCrashed(
                        f"unexpected {type(exc).__name__} in the transcriber process: {exc}"
                    ),
                )
            )
            return


def _serve(
    conn: multiprocessing.connection.Connection,
    recognizers: dict[str, Recognizer],
    request: tuple[Any, ...],
    limits: DecodeLimits,
    threshold: float,
) -> Any:
    kind, model_dir = request[0], request[1]
    recognizer = recognizers.get(model_dir)
    if recognizer is None:
        conn.send(("loading",))
        recognizer = Recognizer(Path(model_dir), threshold)
        recognizers[model_dir] = recognizer
        conn.send(("ready", recognizer.load_seconds))
    else:
        conn.send(("ready", None))
    if kind == "load":
        return None
    audio, format_hint = request[2], request[3]
    return transcribe_audio(recognizer, audio, limits, format_hint)


def _oom_message(limit: int | None) -> str:
    where = f"its limit of {limit} bytes" if limit else "the machine's memory"
    return (
        f"the transcriber process ran out of memory ({where}); raise [transcription] "
        "memory_limit or use a smaller model"
    )
