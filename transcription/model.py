"""The values transcription hands out (Transcript, Word), its limits, and its errors.

Everything here is plain data that crosses process boundaries: the worker pool pickles
transcripts and errors back to the caller, and the daemon stores ``Transcript.to_json()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PCM_RATE = 16_000  # what Vosk models expect; every recording is converted to it
PCM_BYTES_PER_SECOND = PCM_RATE * 2  # s16le mono


@dataclass(frozen=True)
class Word:
    """One recognised word: seconds from the start of the recording, confidence 0..1."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class Transcript:
    """What Vosk heard in one recording.

    ``confidence`` is the mean of the words' confidences (0.0 without words); ``model`` names
    the model directory; ``duration`` is seconds of audio; ``elapsed`` is wall seconds spent
    turning the audio into text (decoding and recognition, not loading the model);
    ``needs_listening`` says a human should play the recording instead of trusting the text.
    """

    text: str
    words: tuple[Word, ...]
    confidence: float
    model: str
    duration: float
    elapsed: float
    needs_listening: bool

    @property
    def real_time_factor(self) -> float:
        """Seconds of work per second of audio (0.0 for empty audio)."""
        return self.elapsed / self.duration if self.duration > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A plain dict (JSON types only) for storing next to the message."""
        return {
            "text": self.text,
            "words": [[w.word, w.start, w.end, w.conf] for w in self.words],
            "confidence": self.confidence,
            "model": self.model,
            "duration": self.duration,
            "elapsed": self.elapsed,
            "needs_listening": self.needs_listening,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transcript:
        """The inverse of ``to_json``; ValueError when ``data`` is not one of its outputs."""
        try:
            words = tuple(
                Word(str(w), float(s), float(e), float(c)) for w, s, e, c in data["words"]
            )
            needs = data["needs_listening"]
            if not isinstance(needs, bool):
                raise TypeError("needs_listening must be a boolean")
            return cls(
                text=str(data["text"]),
                words=words,
                confidence=float(data["confidence"]),
                model=str(data["model"]),
                duration=float(data["duration"]),
                elapsed=float(data["elapsed"]),
                needs_listening=needs,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored transcript: {exc!r}") from exc


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on one recording, so hostile audio cannot take the machine.

    ``max_bytes`` is checked before decoding, ``max_seconds`` while decoding (decoding stops
    as soon as it is passed), ``time_limit`` is wall seconds for decoding plus recognition
    (the pool kills the worker process when it is passed; model loading is not counted).
    """

    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 900.0
    time_limit: float = 120.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_seconds <= 0 or self.time_limit <= 0:
            raise ValueError(f"decode limits must be positive: {self}")


class TranscriptionError(Exception):
    """Base of every error raised by this package; the message names the problem and the fix.

    ``permanent`` tells the caller whether retrying the same recording can ever succeed
    (False: an admin or time can fix it, retry later; True: give up and say why).
    """

    permanent: ClassVar[bool] = False


class UndecodableAudio(TranscriptionError):
    """The bytes are not audio in a format we accept, or hold no audio samples."""

    permanent = True


class AudioTooLarge(TranscriptionError):
    """The recording has more bytes than ``DecodeLimits.max_bytes`` (checked before decoding)."""

    permanent = True


class AudioTooLong(TranscriptionError):
    """The recording decodes to more than ``DecodeLimits.max_seconds`` of audio."""

    permanent = True


class TranscriptionTimeout(TranscriptionError):
    """Decoding and recognition took longer than ``DecodeLimits.time_limit``; worker killed."""

    permanent = True


class ModelUnavailable(TranscriptionError):
    """The configured model directory is missing or not a Vosk model; an admin must fix it."""

    permanent = False


class RecognizerCrashed(TranscriptionError):
    """The worker process died (signal, abort, out of memory) or failed unexpectedly."""

    permanent = False


class PoolClosed(TranscriptionError):
    """The pool was closed before the job finished (the daemon is stopping); retry later."""

    permanent = False
