"""One recording end to end, in the calling process: decode, recognise, time both."""

from __future__ import annotations

import dataclasses
import time

from transcription.decode import decode_to_pcm16k
from transcription.model import DecodeLimits, Transcript, TranscriptionTimeout
from transcription.recognize import Recognizer


def transcribe_audio(
    recognizer: Recognizer,
    audio: bytes,
    limits: DecodeLimits | None = None,
    format_hint: str = "",
) -> Transcript:
    """Decode ``audio`` (any accepted format) and recognise it with ``recognizer``.

    The time limit is only checked between steps here; the pool enforces it by killing its
    worker process, which is the only way to stop a decoder or Vosk mid-call.
    """
    limits = limits or DecodeLimits()
    started = time.perf_counter()
    pcm = decode_to_pcm16k(audio, limits, format_hint)
    if time.perf_counter() - started > limits.time_limit:
        raise TranscriptionTimeout(
            f"decoding took longer than {limits.time_limit:g} s; the recording is kept "
            "(raise [transcription] time_limit if it is legitimate)"
        )
    transcript = recognizer.transcribe(pcm)
    return dataclasses.replace(transcript, elapsed=time.perf_counter() - started)
