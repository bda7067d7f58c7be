"""Audio bytes in, Transcript out: PyAV decodes any voicemail format, Vosk recognises it.

``decode_to_pcm16k`` and ``Recognizer`` work in the calling process (the CLI);
``TranscriberPool`` runs both in killable worker processes (the daemon).
"""

from transcription.decode import decode_to_pcm16k
from transcription.job import transcribe_audio
from transcription.model import (
    AudioTooLarge,
    AudioTooLong,
    DecodeLimits,
    ModelUnavailable,
    PoolClosed,
    RecognizerCrashed,
    Transcript,
    TranscriptionError,
    TranscriptionTimeout,
    UndecodableAudio,
    Word,
)
from transcription.pool import PoolStats, TranscriberPool, WorkerStats
from transcription.recognize import Recognizer, check_model_dir

__all__ = [
    "AudioTooLarge",
    "AudioTooLong",
    "DecodeLimits",
    "ModelUnavailable",
    "PoolClosed",
    "PoolStats",
    "Recognizer",
    "RecognizerCrashed",
    "TranscriberPool",
    "Transcript",
    "TranscriptionError",
    "TranscriptionTimeout",
    "UndecodableAudio",
    "Word",
    "WorkerStats",
    "check_model_dir",
    "decode_to_pcm16k",
    "transcribe_audio",
]
