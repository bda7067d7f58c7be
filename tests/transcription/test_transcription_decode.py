"""Decoding every voicemail format to 16 kHz PCM, compared with sox; hostile audio bounded."""

from __future__ import annotations

import io
import math
import random
import struct
import wave
from pathlib import Path

import av
import pytest

from support.audio import FORMATS, VoicemailAudio, sox, sox_pcm16k
from transcription import (
    AudioTooLarge,
    AudioTooLong,
    DecodeLimits,
    UndecodableAudio,
    decode_to_pcm16k,
)
from transcription.decode import format_for_hint, looks_like_raw_gsm

# How far each format's decoded length may be from the source's (2 x the 8 kHz samples),
# in 16 kHz samples: codecs that work in frames add the encoder's delay and pad the last
# frame, and only some of them record how much to trim.
LENGTH_SLACK = {
    "wav": 0,
    "ulaw": 0,
    "alaw": 0,
    "ogg": 0,  # Ogg's granule positions say exactly where the audio ends
    "wav16": 1,  # sox made it from 22.05 kHz itself and rounds the length its own way
    "wav49": 320,  # GSM: 160 samples per 20 ms frame, the last one padded
    "gsm": 320,
    "amr": 320,  # AMR: 20 ms frames too
    "m4a": 2 * 1024 // 3,  # AAC: 1024-sample frames at 48 kHz, priming trimmed by the edit list
    # MP3 from LAME without a LAME tag: 1105 samples of encoder delay plus up to one
    # 576-sample frame of padding at 8 kHz, which nothing tells the decoder to trim.
    "mp3": 2 * (1105 + 576),
}
# Formats whose decoder is bit-exact with sox's (integer codecs): the only differences left
# are our resampler's, within one LSB.
EXACT_WITH_SOX = ("wav", "wav16", "wav49", "gsm", "ulaw", "alaw")
AMR_HEADER = b"#!AMR\n"
NO_DATA = b"\x7c"  # an AMR storage frame of type 15 (NO_DATA): its TOC byte alone


def samples(pcm: bytes) -> memoryview:
    return memoryview(pcm).cast("h")


def test_the_fixture_has_every_format(audio: VoicemailAudio) -> None:
    """The audio fixture holds each format VOICEMAIL.md lists, plus M4A and AMR."""
    assert set(audio.files) == set(FORMATS) == set(LENGTH_SLACK)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_the_recording_length(audio: VoicemailAudio, fmt: str) -> None:
    """Each format decodes to the source's length, give or take its codec's framing."""
    pcm = decode_to_pcm16k(audio.read(fmt))
    expected = 2 * audio.source_samples_8k()
    assert len(pcm) % 2 == 0
    assert abs(len(pcm) // 2 - expected) <= LENGTH_SLACK[fmt], (len(pcm) // 2, expected)


@pytest.mark.parametrize("fmt", EXACT_WITH_SOX)
def test_decoding_matches_sox_within_one_lsb(
    audio: VoicemailAudio, fmt: str, tmp_path: Path
) -> None:
    """Same length as sox's conversion of the same file, samples within ±1, few differ."""
    ours = samples(decode_to_pcm16k(audio.read(fmt)))
    ref = samples(sox_pcm16k(audio.files[fmt], tmp_path / "ref.raw"))
    assert len(ours) == len(ref)
    diffs = [abs(a - b) for a, b in zip(ours, ref, strict=True) if a != b]
    assert max(diffs, default=0) <= 1
    assert len(diffs) < len(ref) // 200, f"{len(diffs)} of {len(ref)} samples differ"


def snr_db(ours: memoryview, ref: memoryview) -> float:
    noise = sum((a - b) ** 2 for a, b in zip(ours, ref, strict=True))
    return 10 * math.log10(sum(b * b for b in ref) / max(noise, 1))


def amr_frames(amr: bytes) -> list[bytes]:
    """The storage-format frames of an AMR-NB file (RFC 4867 5.3), by their TOC byte."""
    sizes = (13, 14, 16, 18, 20, 21, 27, 32, 6, 1, 1, 1, 1, 1, 1, 1)  # bytes, by frame type
    assert amr.startswith(AMR_HEADER)
    frames, at = [], len(AMR_HEADER)
    while at < len(amr):
        size = sizes[amr[at] >> 3 & 0x0F]
        frames.append(amr[at : at + size])
        at += size
    return frames


def test_amr_matches_sox_in_length_and_within_30_db(audio: VoicemailAudio, tmp_path: Path) -> None:
    """FFmpeg's float AMR decoder against sox's (opencore, the fixed-point reference):
    the same length, pauses included, and the same sound (35 dB SNR measured)."""
    ours = samples(decode_to_pcm16k(audio.read("amr")))
    ref = samples(sox_pcm16k(audio.files["amr"], tmp_path / "ref.raw"))
    assert len(ours) == len(ref)
    assert snr_db(ours, ref) > 30


def test_amr_pauses_at_either_end_are_silence_in_time(audio: VoicemailAudio) -> None:
    """DTX frames (a comfort-noise SID frame, then NO_DATA), which phones send in every
    pause and FFmpeg's decoder rejects, are 20 ms of silence each, even where no speech
    follows: leading and trailing pauses add exactly their zeros to the speech's PCM."""
    amr = audio.read("amr")
    frames = amr_frames(amr)
    sid = next(f for f in frames if f[0] >> 3 & 0x0F == 8)
    assert NO_DATA in frames, "the fixture should end in a pause, as sox's encoder writes it"
    pause = sid + NO_DATA * 9  # 200 ms
    paused = AMR_HEADER + pause + amr[len(AMR_HEADER) :] + pause
    zeros = bytes(2 * 3200)  # 200 ms at 16 kHz
    assert decode_to_pcm16k(paused) == zeros + decode_to_pcm16k(amr) + zeros


def test_amr_pause_inside_speech_keeps_later_words_in_time(audio: VoicemailAudio) -> None:
    """Two seconds of pause in the middle of speech make the recording two seconds longer."""
    amr = audio.read("amr")
    frames = amr_frames(amr)
    middle = len(frames) // 2
    paused = AMR_HEADER + b"".join(frames[:middle]) + NO_DATA * 100 + b"".join(frames[middle:])
    assert len(decode_to_pcm16k(paused)) == len(decode_to_pcm16k(amr)) + 2 * 32000


def test_amr_in_3gp_decodes_as_the_bare_file(audio: VoicemailAudio) -> None:
    """Phones record AMR in 3GP (MP4) files: the same frames, so pauses are read from
    each frame's type there too and the PCM is the bare .amr file's, byte for byte."""
    amr = audio.read("amr")
    pause = NO_DATA * 25  # 500 ms at the start: needs the frame types to be read
    paused = AMR_HEADER + pause + amr[len(AMR_HEADER) :]
    source = av.open(io.BytesIO(paused), mode="r")
    stream = source.streams.audio[0]
    out = io.BytesIO()
    with av.open(out, "w", format="3gp") as mp4:
        track = mp4.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is not None:
                packet.stream = track
                mp4.mux(packet)
    source.close()
    assert out.getvalue()[4:8] == b"ftyp"
    assert decode_to_pcm16k(out.getvalue()) == decode_to_pcm16k(paused)


@pytest.mark.parametrize(
    ("header", "sid"),
    [(AMR_HEADER, b"\x44" + bytes(5)), (b"#!AMR-WB\n", b"\x4c" + bytes(5))],
    ids=["narrow-band", "wide-band"],
)
def test_amr_of_only_a_pause_is_a_second_of_silence(header: bytes, sid: bytes) -> None:
    """A voicemail in which nobody spoke decodes to its length of silence, not an error."""
    assert decode_to_pcm16k(header + sid + NO_DATA * 49) == bytes(32000)


def test_mp3_and_ogg_are_close_to_sox(audio: VoicemailAudio, tmp_path: Path) -> None:
    """Other decoders than sox's: MP3 within one LSB and one frame, Ogg above 40 dB SNR."""
    mp3 = samples(decode_to_pcm16k(audio.read("mp3")))
    ref = samples(sox_pcm16k(audio.files["mp3"], tmp_path / "mp3.raw"))
    assert abs(len(mp3) - len(ref)) <= 1152  # one MP3 frame (576 at 8 kHz): libmad drops one
    assert max(abs(a - b) for a, b in zip(mp3, ref, strict=False)) <= 1
    ogg = samples(decode_to_pcm16k(audio.read("ogg")))
    ref = samples(sox_pcm16k(audio.files["ogg"], tmp_path / "ogg.raw"))
    assert snr_db(ogg, ref) > 40


def test_pcm_at_16_khz_passes_through_untouched(audio: VoicemailAudio) -> None:
    """A 16 kHz PCM WAV (Asterisk's wav16) comes out as exactly its own samples."""
    with wave.open(str(audio.files["wav16"])) as w:
        assert w.getframerate() == 16000
        raw = w.readframes(w.getnframes())
    assert decode_to_pcm16k(audio.read("wav16")) == raw


def test_raw_gsm_is_recognised_by_its_frames(audio: VoicemailAudio) -> None:
    """Headerless GSM decodes without a hint, even three frames of it (too short to probe)."""
    gsm = audio.read("gsm")
    assert looks_like_raw_gsm(gsm)
    assert not looks_like_raw_gsm(audio.read("wav49"))
    assert len(decode_to_pcm16k(gsm[: 3 * 33])) == 3 * 320 * 2


def test_bytes_win_over_a_wrong_hint(audio: VoicemailAudio) -> None:
    """A WAV attached as msg0000.gsm still decodes as the WAV it is."""
    wav = audio.read("wav")
    assert decode_to_pcm16k(wav, format_hint="gsm") == decode_to_pcm16k(wav)


@pytest.mark.parametrize(
    ("hint", "demuxer"),
    [
        ("audio/x-WAV", "wav"),
        (".gsm", "gsm"),
        ("wav16", "wav"),
        ("audio/x-gsm", "gsm"),
        ("application/ogg", "ogg"),
        ("audio/mpeg", "mp3"),
        ("m4a", "m4a"),
        ("application/pdf", None),
        ("", None),
    ],
)
def test_hints_name_accepted_demuxers_only(hint: str, demuxer: str | None) -> None:
    """Extensions and MIME types map to a demuxer we accept, or to nothing."""
    assert format_for_hint(hint) == demuxer


# --- hostile and damaged input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        random.Random(4).randbytes(64 * 1024),
        bytes.fromhex("89504e470d0a1a0a") + random.Random(5).randbytes(2000),  # a PNG
    ],
    ids=["empty", "random", "png"],
)
def test_junk_is_undecodable_with_advice(junk: bytes) -> None:
    """Empty, random or non-audio bytes raise UndecodableAudio listing what is accepted."""
    with pytest.raises(UndecodableAudio, match="Accepted formats: WAV") as err:
        decode_to_pcm16k(junk)
    assert err.value.permanent


def test_truncated_headers_and_empty_data_are_undecodable(audio: VoicemailAudio) -> None:
    """A WAV cut inside its header, or holding no samples, is UndecodableAudio."""
    wav = audio.read("wav")
    with pytest.raises(UndecodableAudio, match="cannot decode"):
        decode_to_pcm16k(wav[:40])
    with pytest.raises(UndecodableAudio, match="no audio samples"):
        decode_to_pcm16k(wav[:44])


def test_truncated_m4a_without_its_index_is_undecodable(audio: VoicemailAudio) -> None:
    """An M4A cut before its index (written last) cannot be decoded, and says so."""
    m4a = audio.read("m4a")
    with pytest.raises(UndecodableAudio):
        decode_to_pcm16k(m4a[: len(m4a) // 2])


@pytest.mark.parametrize("fmt", ["wav", "mp3", "gsm", "ulaw"])
def test_truncated_audio_keeps_what_it_holds(audio: VoicemailAudio, fmt: str) -> None:
    """A recording cut in the middle decodes to its first part: still worth transcribing."""
    data = audio.read(fmt)
    full = decode_to_pcm16k(data)
    cut = data[: len(data) // 2 // 33 * 33]  # whole GSM frames, so raw GSM is still sniffed
    part = decode_to_pcm16k(cut)
    assert len(full) // 4 < len(part) < len(full) * 3 // 4
    if fmt == "wav":  # PCM: exactly the samples that are there
        assert len(part) == (len(cut) - 44) // 2 * 2 * 2


def test_header_claiming_a_huge_size_decodes_what_is_there(audio: VoicemailAudio) -> None:
    """RIFF and data sizes of 4 GiB change nothing: only the bytes present are decoded."""
    wav = bytearray(audio.read("wav"))
    assert wav[36:40] == b"data"
    wav[4:8] = wav[40:44] = struct.pack("<I", 0xFFFFFFF0)
    assert decode_to_pcm16k(bytes(wav)) == decode_to_pcm16k(audio.read("wav"))


@pytest.mark.parametrize(("rate", "channels"), [(1, 1), (2**31 - 1, 1), (8000, 65535)])
def test_header_claiming_absurd_parameters_is_undecodable(
    audio: VoicemailAudio, rate: int, channels: int
) -> None:
    """A WAV claiming 1 Hz, 2 GHz or 65535 channels is refused before anything is allocated."""
    wav = bytearray(audio.read("wav"))
    wav[22:24] = struct.pack("<H", channels)
    wav[24:28] = struct.pack("<I", rate)
    wav[28:32] = struct.pack("<I", min(rate * 2 * channels, 2**32 - 1))
    with pytest.raises(UndecodableAudio):
        decode_to_pcm16k(bytes(wav))


def test_too_many_bytes_are_refused_before_decoding(audio: VoicemailAudio) -> None:
    """Over max_bytes: AudioTooLarge naming the size, the limit and the setting."""
    data = audio.read("wav")
    with pytest.raises(AudioTooLarge, match=rf"{len(data)} bytes, over the limit of 1000"):
        decode_to_pcm16k(data, DecodeLimits(max_bytes=1000))


def test_small_file_of_long_silence_stops_at_max_seconds(tmp_path: Path) -> None:
    """A small file that decodes to far more than max_seconds raises once past the cap."""
    bomb = tmp_path / "silence.ogg"
    sox("-n", "-r", "8000", "-c", "1", "-C", "-1", bomb, "trim", "0", "300")
    assert bomb.stat().st_size < 300 * 32000 // 50  # under 2 % of the PCM it decodes to
    with pytest.raises(AudioTooLong, match=r"longer than 20 s.*\[transcription\] max_seconds"):
        decode_to_pcm16k(bomb.read_bytes(), DecodeLimits(max_seconds=20))


def test_duration_cap_is_exact_at_the_boundary(audio: VoicemailAudio) -> None:
    """A recording just under max_seconds decodes; just over it raises AudioTooLong."""
    seconds = audio.source_samples_8k() / 8000
    decode_to_pcm16k(audio.read("wav"), DecodeLimits(max_seconds=seconds + 0.01))
    with pytest.raises(AudioTooLong):
        decode_to_pcm16k(audio.read("wav"), DecodeLimits(max_seconds=seconds - 0.05))


def test_damaged_packets_are_skipped(audio: VoicemailAudio) -> None:
    """Random bytes over part of an MP3 lose some audio but never raise."""
    mp3 = bytearray(audio.read("mp3"))
    mp3[1500:1700] = random.Random(6).randbytes(200)
    pcm = decode_to_pcm16k(bytes(mp3))
    assert len(pcm) > len(decode_to_pcm16k(audio.read("mp3"))) // 2
