"""Sniff audio from bytes and a Content-Type: is a MIME part a sound recording, in what format.

A part typed ``audio/*`` (any case) or ``application/ogg`` is sound unless its
bytes are plainly a document or an image; a part with a generic type
(``application/octet-stream``, or a missing or broken one, which the MIME layer
reads as ``text/plain``) is sound only when its magic bytes say so: RIFF/WAVE,
ID3 or two MPEG audio frames, OggS, ``ftyp`` with an M4A brand, ``#!AMR``. File
names are never looked at. Raw GSM and G.711 have no magic, so they count only
when typed audio. The format reported always comes from the bytes when they
have a signature.
"""

from __future__ import annotations

from typing import Literal

from parsers.model import AudioFormat

DetectedBy = Literal["content-type", "bytes"]

# Types that say nothing about the content: only magic bytes can make them sound.
# A missing or unparseable Content-Type reaches us as text/plain.
_GENERIC_TYPES = frozenset(
    {"application/octet-stream", "application/x-octet-stream", "binary/octet-stream",
     "application/binary", "application/unknown", "application/x-unknown", "application/download",
     "application/x-download", "application/force-download", "text/plain"}
)  # fmt: skip
_OGG_TYPES = frozenset({"application/ogg", "application/x-ogg"})
_PLAYLIST_TYPES = frozenset({"audio/x-mpegurl", "audio/mpegurl", "audio/x-scpls"})
# Headerless codecs: when typed so, the type is the only evidence there is.
_RAW_TYPES: dict[str, AudioFormat] = {
    "audio/x-gsm": "gsm", "audio/gsm": "gsm",
    "audio/basic": "mulaw", "audio/pcmu": "mulaw", "audio/x-ulaw": "mulaw",
    "audio/x-mulaw": "mulaw", "audio/ulaw": "mulaw", "audio/pcma": "alaw", "audio/x-alaw": "alaw",
    "audio/alaw": "alaw", "audio/x-alaw-basic": "alaw",
}  # fmt: skip
# Documents and images (OLE2 is .doc/.xls/.msg): typed audio or not, no recording.
_NOT_AUDIO = (
    b"%PDF-", b"PK\x03\x04", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"MZ", b"{\\rtf",
    b"\xd0\xcf\x11\xe0",
)  # fmt: skip
_WAV_TAGS: dict[int, AudioFormat] = {1: "wav", 3: "wav", 6: "alaw", 7: "mulaw", 49: "wav49"}
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A "})
# MPEG audio layer III bitrates (kbit/s) for MPEG-1 and MPEG-2/2.5, and sample
# rates by the header's version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5).
_MP3_KBPS = (
    (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
)
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _wav_format(data: bytes) -> AudioFormat:
    """The codec of a RIFF/WAVE file, from the format tag of its ``fmt `` chunk."""
    pos = 12
    while pos + 10 <= min(len(data), 64 * 1024):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"fmt ":
            tag = int.from_bytes(data[pos + 8 : pos + 10], "little")
            if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the GUID starts with it
                tag = int.from_bytes(data[pos + 32 : pos + 34], "little")
            return _WAV_TAGS.get(tag, "unknown")
        pos += 8 + size + (size & 1)
    return "unknown"


def _mp3_frame(data: bytes, pos: int) -> int:
    """Length of the MPEG layer III frame whose header starts at ``pos``; 0 when none does."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return 0
    version, layer = (data[pos + 1] >> 3) & 3, (data[pos + 1] >> 1) & 3
    kbps_index, rate_index = data[pos + 2] >> 4, (data[pos + 2] >> 2) & 3
    if version == 1 or layer != 1 or kbps_index in (0, 15) or rate_index == 3:
        return 0
    bitrate = _MP3_KBPS[0 if version == 3 else 1][kbps_index] * 1000
    padding = (data[pos + 2] >> 1) & 1
    return (144 if version == 3 else 72) * bitrate // _MP3_RATES[version][rate_index] + padding


def _is_mp3(data: bytes, typed: bool) -> bool:
    if data[:3] == b"ID3" and len(data) >= 10 and 2 <= data[3] <= 4:
        return all(byte < 0x80 for byte in data[6:10])  # the tag size is "syncsafe"
    first = _mp3_frame(data, 0)
    if not first:
        return False
    # Eleven set bits and a few valid fields happen by chance in binary files:
    # an untyped part needs a second frame header exactly where the first ends.
    return (typed and first + 4 > len(data)) or _mp3_frame(data, first) > 0


def _is_m4a(data: bytes, typed: bool) -> bool:
    if data[4:8] != b"ftyp":
        return False
    if typed:
        return True
    box_end = min(int.from_bytes(data[:4], "big"), 256, len(data))
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, box_end - 3, 4)]
    return any(brand in _M4A_BRANDS for brand in brands)  # isom/mp42 may well be video


def _is_gsm(data: bytes, min_frames: int) -> bool:
    """Raw GSM 06.10: 33-byte frames, each starting with the 0xD signature nibble."""
    frames = range(0, min(len(data), 33 * 50), 33)
    return len(frames) >= min_frames and all(data[i] >> 4 == 0xD for i in frames)


def sniff_audio(data: bytes, *, typed: bool = False) -> AudioFormat | None:
    """The format the magic bytes announce, or None when they announce no sound.

    ``typed`` relaxes the checks meant to keep random binary files out (a
    single MPEG frame, an ``ftyp`` box of any brand) for parts already typed audio.
    """
    head = data[: 64 * 1024]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_format(head)
    if _is_mp3(head, typed):
        return "mp3"
    if head[:4] == b"OggS":
        return None if b"\x80theora" in head[:512] else "ogg"
    if _is_m4a(head, typed):
        return "m4a"
    if head[:5] == b"#!AMR":  # AMR-NB and AMR-WB ("#!AMR-WB")
        return "amr"
    return None


def classify_audio(content_type: str, data: bytes) -> tuple[AudioFormat, DetectedBy] | None:
    """Whether a part is sound (see the module docstring), with its format and why."""
    ctype = content_type.strip().lower()
    if (ctype.startswith("audio/") and ctype not in _PLAYLIST_TYPES) or ctype in _OGG_TYPES:
        if data.startswith(_NOT_AUDIO):
            return None
        found = sniff_audio(data, typed=True)
        if found is None:
            raw = _RAW_TYPES.get(ctype)
            if _is_gsm(data, 1 if raw == "gsm" else 3):
                found = "gsm"
            elif raw is not None and raw != "gsm" and not data.startswith(b".snd"):
                found = raw  # headerless G.711; a Sun .au header is left to the decoder
        return (found or "unknown"), "content-type"
    if ctype in _GENERIC_TYPES:
        found = sniff_audio(data)
        return (found, "bytes") if found is not None else None
    return None
