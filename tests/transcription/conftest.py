"""Transcription fixtures: real audio (espeak-ng, sox, PyAV), the real Korean Vosk model.

Everything costly is session-scoped: the audio is made once, the model is loaded once in
this process (twice: once behind our Recognizer, once as bare Vosk for the reference
transcripts) and once per worker of the shared pool.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import vosk

from support.audio import VoicemailAudio, long_speech_wav
from transcription import Recognizer, TranscriberPool


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory: pytest.TempPathFactory, audio: VoicemailAudio) -> bytes:
    """An 8 kHz WAV of at least 30 s of speech: several seconds of work for Vosk."""
    return long_speech_wav(tmp_path_factory.mktemp("long-speech"), 30).read_bytes()


@pytest.fixture(scope="session")
def recognizer(model_dir: Path) -> Recognizer:
    return Recognizer(model_dir)


@pytest.fixture(scope="session")
def raw_vosk(model_dir: Path) -> Callable[[bytes], str]:
    """Bare Vosk, as its own examples use it, on 16 kHz PCM: the reference text.

    Same seeding of the C library's rand() and the same 4000-sample chunks as Buzón, since
    without them bare Vosk does not agree with itself from one call to the next (Kaldi's
    dither noise comes from rand(); see transcription/recognize.py).
    """
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(model_dir))
    srand: Any = ctypes.CDLL(None).srand

    def transcribe(pcm: bytes) -> str:
        srand(1)
        rec = vosk.KaldiRecognizer(model, 16000)
        rec.SetWords(True)
        texts = []
        for i in range(0, len(pcm), 8000):
            if rec.AcceptWaveform(pcm[i : i + 8000]):
                texts.append(json.loads(rec.Result())["text"])
        texts.append(json.loads(rec.FinalResult())["text"])
        return " ".join(t for t in texts if t)

    return transcribe


@pytest.fixture(scope="session")
def pool(model_dir: Path) -> Iterator[TranscriberPool]:
    """Two workers with the model preloaded, shared by the pool tests."""
    with TranscriberPool(2) as p:
        p.preload(model_dir)
        yield p
