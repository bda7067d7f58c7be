"""Decode RFC 2047 encoded-words (``=?charset?q?...?=``) in header text, tolerantly.

The stdlib's ``email.header.decode_header`` raises on bad base64 and unknown
charsets; this decoder never does. Adjacent encoded-words in one charset are
joined before decoding, so a UTF-8 character split across two words survives,
and the whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2).
Bad padding is repaired, unknown charsets fall back like bodies do
(``parsers.text.decode_bytes``) and each problem is reported once.
"""

from __future__ import annotations

import binascii
import re

from parsers.text import decode_bytes

# Encoded text may not hold "?" (RFC 2047 §2); spaces are tolerated because
# some mailers put them there. Every repetition stops at a "?", so matching
# stays linear in the header length.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*)\?=")
_BLANK = re.compile(r"[ \t\r\n]*")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def b64decode_lenient(data: bytes) -> bytes:
    """Decode base64, ignoring junk characters and repairing missing padding."""
    data = _NOT_BASE64.sub(b"", data)
    if len(data) % 4 == 1:
        data = data[:-1]
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


def _q_decode(text: str) -> bytes:
    """Decode "Q" encoding: ``_`` is a space, ``=XX`` a byte, anything else literal."""
    data = text.encode("utf-8", "surrogateescape").replace(b"_", b" ")
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def decode_words(value: str) -> tuple[str, list[str]]:
    """Replace the encoded-words in ``value`` by their text.

    Returns the decoded text and defect strings (unknown charset, undecodable
    bytes). Text between words that is not only whitespace is kept as is.
    """
    if "=?" not in value:
        return value, []
    out: list[str] = []
    defects: list[str] = []
    pending: bytes = b""
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending_charset is not None:
            text, problem = decode_bytes(pending, pending_charset)
            out.append(text)
            if problem:
                defects.append(f"encoded-word: {problem}")
        pending, pending_charset = b"", None

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        adjacent = pending_charset is not None and _BLANK.fullmatch(between) is not None
        charset = match.group(1).split("*", 1)[0].lower()  # RFC 2231 language tag
        if not adjacent or charset != pending_charset:
            flush()
            if not adjacent:
                out.append(between)
        encoding = match.group(2).lower()
        text = match.group(3)
        raw = (
            b64decode_lenient(text.encode("ascii", "ignore"))
            if encoding == "b"
            else _q_decode(text)
        )
        pending += raw
        pending_charset = charset
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out), defects
