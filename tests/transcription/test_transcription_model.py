"""The plain data of transcription: stored transcripts, limits, and what errors promise."""

from __future__ import annotations

import json
import pickle

import pytest

from transcription import (
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

SAMPLE = Transcript(
    text="월요일 화요일",
    words=(Word("월요일", 0.12, 0.6, 0.91), Word("화요일", 0.66, 1.2, 0.5)),
    confidence=0.705,
    model="vosk-model-small-ko-0.22",
    duration=4.0,
    elapsed=1.0,
    needs_listening=False,
)


def test_transcript_round_trips_through_json_text() -> None:
    """What the daemon stores (to_json, as JSON text) reads back as the same Transcript."""
    stored = json.dumps(SAMPLE.to_json(), ensure_ascii=False)
    assert Transcript.from_json(json.loads(stored)) == SAMPLE


def test_real_time_factor_is_work_per_audio_second() -> None:
    """real_time_factor is elapsed / duration, and 0 for empty audio rather than a crash."""
    assert SAMPLE.real_time_factor == pytest.approx(0.25)
    empty = Transcript("", (), 0.0, "m", 0.0, 0.1, True)
    assert empty.real_time_factor == 0.0


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("words"),
        lambda d: d.update(words=[["only-a-word"]]),
        lambda d: d.update(confidence="high"),
        lambda d: d.update(needs_listening="no"),
    ],
)
def test_from_json_rejects_what_to_json_never_writes(damage: object) -> None:
    """A damaged stored transcript raises ValueError naming the problem, never a KeyError."""
    data = SAMPLE.to_json()
    damage(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match="not a stored transcript"):
        Transcript.from_json(data)


def test_decode_limits_defaults_and_validation() -> None:
    """Defaults are 64 MiB, 15 minutes, 120 s; zero or negative limits are refused."""
    limits = DecodeLimits()
    assert (limits.max_bytes, limits.max_seconds, limits.time_limit) == (64 << 20, 900, 120)
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_seconds=0)


def test_errors_say_whether_retrying_can_help() -> None:
    """Bad audio is permanent; a missing model, a crash or a closing pool are worth a retry."""
    permanent = (UndecodableAudio, AudioTooLarge, AudioTooLong, TranscriptionTimeout)
    transient = (ModelUnavailable, RecognizerCrashed, PoolClosed)
    assert all(issubclass(e, TranscriptionError) and e.permanent for e in permanent)
    assert all(issubclass(e, TranscriptionError) and not e.permanent for e in transient)


def test_errors_survive_pickling_between_processes() -> None:
    """Workers send errors back pickled: class and message must arrive intact."""
    error = ModelUnavailable("Vosk model directory /nope does not exist")
    back = pickle.loads(pickle.dumps(error))  # noqa: S301 — our own bytes, as between workers
    assert type(back) is ModelUnavailable
    assert str(back) == str(error)
