"""Turn bytes of unknown honesty into clean, storable Unicode text.

Charset labels in mail are often wrong (``us-ascii`` over UTF-8 bytes), unknown
(``x-unknown``) or dangerous to honour (``unicode-escape``); decoding always
succeeds here and reports what it had to guess. Cleaning removes what
PostgreSQL ``text`` rejects (NUL, lone surrogates) and what breaks log lines
(CR, LF and other control characters in one-line values).
"""

from __future__ import annotations

import codecs
import re

# Labels seen in the wild that Python does not know, or knows as a narrower
# charset than the mailers meant (WHATWG Encoding Standard, "labels").
_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "x-sjis": "cp932",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "windows-31j": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "cp-850": "cp850",
    "8859-1": "latin-1",
    "unicode-1-1-utf-7": "utf-7",
}
# Labels that name no charset at all: decode by guessing.
_NO_CHARSET = frozenset({"", "x-unknown", "unknown", "unknown-8bit", "x-user-defined", "default"})
# Codecs Python knows that are escapes or transforms, not mail charsets.
_REFUSED_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "mbcs", "oem"}
)
# Single-byte Western labels; bytes that are valid UTF-8 under them were UTF-8.
_WESTERN = frozenset({"ascii", "iso8859-1", "cp1252", "iso8859-15"})

_BODY_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")


def codec_for(label: str | None) -> str | None:
    """Return the Python codec name for a charset label, or None when unusable."""
    if label is None:
        return None
    name = label.strip().strip("\"'").lower()
    if name in _NO_CHARSET or len(name) > 64 or not name.isascii():
        return None
    name = _ALIASES.get(name, name)
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        return None
    if codec in _REFUSED_CODECS:
        return None
    return codec


def _guess(data: bytes) -> tuple[str, str]:
    """Decode without a usable label: UTF-8, then Windows-1252, then Latin-1."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def decode_bytes(data: bytes, label: str | None) -> tuple[str, str]:
    """Decode ``data`` declared as charset ``label``; never raises.

    Returns the text and a short defect string ("" when the label was right).
    A missing label means us-ascii (RFC 2045), which in practice is UTF-8 or
    Windows-1252 when 8-bit bytes appear.
    """
    codec = codec_for(label if label is not None else "us-ascii")
    shown = label if label is not None else "us-ascii (default)"
    if codec in _WESTERN and data.isascii():
        return data.decode("ascii"), ""
    if codec is not None and codec not in _WESTERN:
        try:
            return data.decode(codec), ""
        except Exception:  # a codec may raise anything on hostile bytes
            text, used = _guess(data)
            return text, f"charset {shown!r} could not decode text; decoded as {used}"
    text, used = _guess(data)
    if codec is None:
        problem = f"unknown charset {shown!r}; decoded as {used}"
    elif codec == "ascii":
        problem = f"8-bit text in {shown!r}; decoded as {used}"
    else:
        problem = f"text labelled {shown!r} is utf-8" if used == "utf-8" else ""
    return text, problem


def header_str(raw: str) -> tuple[str, bool]:
    """Turn a compat32 raw header value (8-bit bytes as surrogates) into text.

    Returns the text and whether 8-bit bytes were not valid UTF-8 (RFC 6532
    allows UTF-8 only), in which case they were read as Windows-1252.
    """
    if raw.isascii():
        return raw, False
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", raw), True
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return _guess(data)[0], True


def clean_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Normalise a body: no BOM, ``\\n`` line ends, no NUL/controls/surrogates, capped.

    Tabs and newlines stay. Returns the text and whether it was truncated.
    """
    if len(text) > 4 * max_chars:
        text = text[: 4 * max_chars]
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _BODY_CONTROLS.sub("", text)
    if len(text) > max_chars:
        return text[:max_chars], True
    return text, False


def clean_line(text: str, max_chars: int) -> str:
    """Make a one-line value safe for logs and headers: controls become spaces.

    CR, LF, NUL, tabs, other C0/C1 controls and Unicode line separators are
    replaced by a space, runs of whitespace collapse to one space, surrogates go.
    """
    if len(text) > 4 * max_chars:
        text = text[: 4 * max_chars]
    text = _LINE_CONTROLS.sub(" ", text)
    text = _SURROGATES.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    return text[:max_chars].rstrip()
