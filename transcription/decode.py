"""Decode any voicemail recording (bytes) to 16 kHz mono s16le PCM, within DecodeLimits.

PyAV runs FFmpeg's demuxers and decoders in-process on a BytesIO: WAV (PCM, µ-law, A-law,
GSM 6.10 "wav49"), raw GSM, MP3, Ogg, M4A, AMR and a few more. Only the demuxers a PBX
plausibly uses are accepted, so hostile bytes cannot reach the rest of FFmpeg's parsers.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import av
import av.container
from av.audio.codeccontext import AudioCodecContext
from av.packet import Packet

from transcription.model import (
    PCM_BYTES_PER_SECOND,
    PCM_RATE,
    AudioTooLarge,
    AudioTooLong,
    DecodeLimits,
    TranscriptionTimeout,
    UndecodableAudio,
)
from transcription.resample import SoxLikeResampler, silent_frame

# FFmpeg demuxer names (a probed container reports a comma list, e.g. "mov,mp4,m4a,...").
ACCEPTED_DEMUXERS = frozenset(
    {"wav", "w64", "gsm", "mp3", "ogg", "mov", "mp4", "m4a", "3gp", "amr", "amrnb", "amrwb"}
    | {"aiff", "au", "flac", "matroska", "webm", "caf"}
)
# A hint is a file extension or a MIME subtype ("x-wav", "WAV", "wav16", "gsm", ...).
HINT_ALIASES = {
    "wav16": "wav",
    "wav49": "wav",
    "wave": "wav",
    "vnd.wave": "wav",
    "oga": "ogg",
    "opus": "ogg",
    "vorbis": "ogg",
    "mpeg": "mp3",
    "mpeg3": "mp3",
    "aif": "aiff",
    "basic": "au",
    "mka": "matroska",
}
# Phones stop sending speech in every pause (DTX): a comfort-noise (SID) frame, then 20 ms
# NO_DATA frames. FFmpeg's own AMR decoders reject both, so each is decoded here as 20 ms of
# silence, where opencore (the library sox uses) would make comfort noise. The frame type is
# bits 3-6 of each frame's first byte in the storage format (RFC 4867 5.3), as AMR files and
# MP4 'samr'/'sawb' tracks hold them. Other types are left to the decoder (NB 12-14 are
# reserved: damaged). Opencore is not preferred even where a PyAV build bundles it, so the
# same recording gives the same PCM (and transcript) whatever the build.
AMR_NO_SPEECH = {
    "amrnb": frozenset({8, 9, 10, 11, 15}),  # AMR, GSM-EFR, TDMA-EFR, PDC-EFR SID; NO_DATA
    "amrwb": frozenset({9, 14, 15}),  # SID, SPEECH_LOST, NO_DATA
}
AMR_FRAMES_PER_SECOND = 50  # 20 ms frames, narrow- and wide-band alike
GSM_FRAME = 33  # bytes per 20 ms frame of raw GSM 06.10
MIN_RATE, MAX_RATE = 1_000, 384_000  # outside this, a "sample rate" is a hostile header
MAX_CHANNELS = 16


def format_for_hint(hint: str) -> str | None:
    """The FFmpeg demuxer a file extension or MIME type names, or None when it names none."""
    name = hint.strip().lower().rpartition("/")[2].removeprefix(".").removeprefix("x-")
    name = HINT_ALIASES.get(name, name)
    return name if name in ACCEPTED_DEMUXERS else None


def looks_like_raw_gsm(data: bytes) -> bool:
    """Headerless GSM 06.10: whole 33-byte frames, each starting with the 0xD signature nibble."""
    return (
        bool(data) and len(data) % GSM_FRAME == 0 and {b >> 4 for b in data[::GSM_FRAME]} == {0xD}
    )


def _accepted(container: av.container.InputContainer) -> bool:
    return bool(ACCEPTED_DEMUXERS.intersection(container.format.name.split(",")))


def _open(data: bytes, format_hint: str) -> av.container.InputContainer:
    """Open as raw GSM if it looks like it, else by probing, else as hinted; accepted only.

    The bytes decide, not the name: the hint is tried last, for content FFmpeg cannot probe.
    Raw GSM goes first because its frame signature is reliable where FFmpeg's probe is not
    (a few frames are too few); no accepted container starts with a 0xD_ byte.
    """
    attempts: list[str | None] = ["gsm"] if looks_like_raw_gsm(data) else []
    attempts.append(None)  # let FFmpeg probe the bytes
    hinted = format_for_hint(format_hint)
    if hinted and hinted not in attempts:
        attempts.append(hinted)
    problems: list[str] = []
    for fmt in attempts:
        try:
            container = av.open(io.BytesIO(data), mode="r", format=fmt)
        except av.error.EOFError:
            problems.append("it ends before the first audio packet (truncated?)")
            continue
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            problems.append(f"FFmpeg cannot open it as {fmt or 'any format'} ({exc})")
            continue
        if _accepted(container) and container.streams.audio:
            return container
        problems.append(
            f"it is {container.format.long_name} without an audio stream"
            if _accepted(container)
            else f"it looks like {container.format.name!r}, not a voicemail format"
        )
        container.close()
    raise UndecodableAudio(
        f"cannot decode the recording ({len(data)} bytes): {'; '.join(problems)}. Accepted "
        "formats: WAV (PCM, µ-law, A-law, GSM), raw GSM, MP3, Ogg, M4A, AMR, AIFF, AU, FLAC, "
        "WebM. The recording is kept; listen to it or convert it"
    )


def _check_frame(frame: av.AudioFrame) -> None:
    if not MIN_RATE <= frame.sample_rate <= MAX_RATE or frame.layout.nb_channels > MAX_CHANNELS:
        raise UndecodableAudio(
            f"the recording claims {frame.sample_rate} Hz with {frame.layout.nb_channels} "
            "channels, which no voice recording has: the file is damaged or hostile"
        )


def decode_to_pcm16k(
    data: bytes, limits: DecodeLimits | None = None, format_hint: str = ""
) -> bytes:
    """Decode ``data`` to s16le mono 16 kHz PCM; raises a TranscriptionError subclass.

    ``format_hint`` (a file extension or MIME type) is only tried when the bytes themselves
    do not say what they are. Damaged packets are skipped (silence keeps later words in
    time) and a truncated file yields the audio it holds: a voicemail cut short is still
    worth reading.
    """
    limits = limits or DecodeLimits()
    if len(data) > limits.max_bytes:
        raise AudioTooLarge(
            f"the recording is {len(data)} bytes, over the limit of {limits.max_bytes}; "
            "listen to it, or raise [transcription] max_bytes if such recordings are expected"
        )
    container = _open(data, format_hint)
    out = bytearray()
    try:
        skipped = _decode(container, limits, out)
    except av.error.FFmpegError as exc:
        if not out:
            raise UndecodableAudio(
                f"the recording is damaged before any audio could be decoded ({exc}); "
                "it is kept, listen to it"
            ) from exc
        # A damaged container after some audio: keep what was decoded, as for a truncated file.
    finally:
        container.close()
    if not out:
        raise UndecodableAudio(
            "the recording holds no audio samples"
            + (f" ({skipped} damaged packets skipped)" if skipped else "")
            + "; it is kept, listen to it"
        )
    return bytes(out)


def _decode(container: av.container.InputContainer, limits: DecodeLimits, out: bytearray) -> int:
    """Append the PCM of the first audio stream to ``out``; the number of skipped packets."""
    deadline = time.monotonic() + limits.time_limit
    stream = container.streams.audio[0]
    no_speech = AMR_NO_SPEECH.get(stream.codec_context.name, frozenset())
    state = _Decoding(limits, out)
    for packet in container.demux(stream):
        if no_speech and packet.size and _amr_frame_type(packet) in no_speech:
            state.pause(stream.codec_context)
        else:
            try:
                for frame in packet.decode():
                    state.add(frame)
            except (av.error.FFmpegError, ValueError):
                state.lost(packet)
        if time.monotonic() > deadline:
            raise TranscriptionTimeout(
                f"decoding took longer than {limits.time_limit:g} s; the recording is kept "
                "(raise [transcription] time_limit if it is legitimate)"
            )
    state.finish()
    return state.skipped


def _amr_frame_type(packet: Packet[Any]) -> int:
    return (bytes(memoryview(packet)[:1])[0] >> 3) & 0x0F


class _Decoding:
    """One decode in progress: PCM out so far, seconds in so far, a pending gap of silence."""

    def __init__(self, limits: DecodeLimits, out: bytearray) -> None:
        self.limits = limits
        self.out = out
        self.max_out = math.floor(limits.max_seconds * PCM_RATE) * 2
        self.max_in = limits.max_seconds + 1.0  # an input-side guard against absurd frames
        self.in_seconds = 0.0
        self.gap = 0  # input samples of silence owed for lost packets
        self.skipped = 0
        self.resampler: SoxLikeResampler | None = None

    def lost(self, packet: Packet[Any]) -> None:
        """A damaged packet: silence of its length, if audio follows, keeps words in time."""
        self.skipped += 1
        if self.resampler is not None:
            self.gap += _packet_samples(packet, self.resampler.rate)

    def pause(self, decoder: AudioCodecContext) -> None:
        """An AMR DTX frame: 20 ms of silence, in time with the speech around it.

        Unlike a lost packet it is audio even at either end, as opencore's comfort noise is.
        """
        fmt, layout, rate = (
            self.resampler.signature
            if self.resampler is not None
            else (decoder.format.name, decoder.layout.name, decoder.sample_rate)
        )
        self.add(silent_frame(fmt, layout, rate, rate // AMR_FRAMES_PER_SECOND))

    def add(self, frame: av.AudioFrame) -> None:
        _check_frame(frame)
        self.in_seconds += frame.samples / frame.sample_rate
        if self.in_seconds > self.max_in:
            raise _too_long(self.limits)
        if self.resampler is not None and self.gap:
            self.in_seconds += self.gap / self.resampler.rate
            self.out += self.resampler.silence(self.gap)
            self.gap = 0
        if self.resampler is None or not self.resampler.accepts(frame):
            # A chained Ogg or a damaged MP3 may change rate or layout mid-stream.
            if self.resampler is not None:
                self.out += self.resampler.flush()
            self.resampler = SoxLikeResampler(frame)
        self.out += self.resampler.push(frame)
        self._check_length()

    def finish(self) -> None:
        # Lost packets at the very end stand for nothing: no audio follows to keep in time
        # (wav49 files often end with a stray padding byte that FFmpeg reads as a packet).
        if self.resampler is not None:
            self.out += self.resampler.flush()
            self._check_length()

    def _check_length(self) -> None:
        if len(self.out) > self.max_out or self.in_seconds > self.max_in:
            raise _too_long(self.limits)


def _packet_samples(packet: Packet[Any], rate: int) -> int:
    """Samples a packet stood for, from its duration; 0 when unknown or implausible (> 1 s)."""
    if not packet.duration or packet.time_base is None:
        return 0
    samples = round(packet.duration * packet.time_base * rate)
    return samples if 0 < samples <= rate else 0


def _too_long(limits: DecodeLimits) -> AudioTooLong:
    return AudioTooLong(
        f"the recording is longer than {limits.max_seconds:g} s, the limit; decoding stopped "
        "there. Listen to it, or raise [transcription] max_seconds if such recordings are "
        "expected"
    )


def pcm_seconds(pcm: bytes) -> float:
    """Duration of s16le mono 16 kHz PCM."""
    return len(pcm) / PCM_BYTES_PER_SECOND
