"""Pre-scan raw bytes: refuse what is not a message, cut the rest to ``ParseLimits``.

Runs before any real parser, in time linear in the input, so a hostile message
cannot make parsing quadratic (gh-136063) or recursive (RecursionError):

* A leading mbox ``From `` line, a UTF-8 byte order mark and leading blank
  lines are skipped; obsolete whitespace before a top-level header colon
  (``Subject :``, RFC 822) is removed, as the stdlib would otherwise read
  the whole message as body.
* Top-level header fields longer than 64 KiB are truncated (a 1 MB ``To:``);
  past ``max_header_bytes`` the remaining fields are dropped except the first
  of each field Buzón needs (From, Subject, Message-ID, Content-Type, …) found
  in the next 8 MiB, each shortened to 4 KiB.
* ``parsers.structure`` then counts MIME parts and nesting and cuts the bytes
  at the first part beyond ``max_parts`` or ``max_depth``.

Every cut is reported as a defect. The caller keeps the raw bytes; what is
returned here is only what the parser reads.

**Not a message** (a fatal result) is decided here, conservatively:

* the input is empty or only whitespace;
* it is an Outlook ``.msg`` file (OLE2 compound document magic);
* none of the first 64 KiB of lines (after an mbox line) looks like a header
  field, ``Name: value`` with a name of 1-76 printable ASCII characters;
* more than 5 % of those 64 KiB are C0 control bytes other than TAB, LF, VT,
  FF, CR and ESC (ISO-2022-JP uses ESC): binary data, not text.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from parsers.model import ParseLimits
from parsers.structure import MAX_MIME_FIELD_BYTES, Scanner, field_end, header_block, shortened

WINDOW = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024
_ESSENTIAL_FIELD = re.compile(
    rb"(?<![^\r\n])(from|sender|reply-to|subject|date|message-id|in-reply-to|references"
    rb"|return-path|auto-submitted|precedence|list-id|x-auto-response-suppress|mime-version"
    rb"|content-type|content-transfer-encoding|content-disposition):",
    re.I,
)
_RESCUE_WINDOW = 8 * 1024 * 1024
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER_LIKE = re.compile(rb"(?<![^\r\n])[\x21-\x39\x3b-\x7e]{1,76}[ \t]*:")
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_LEADING_BLANKS = re.compile(rb"(?:[ \t]*(?:\r\n|\r|\n))+")
_BOM = b"\xef\xbb\xbf"
_OBSOLETE_COLON = re.compile(rb"(?<![^\r\n])([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_RELAXED_HEADER_LINE = rb"(?:From |[\x21-\x39\x3b-\x7e]*[ \t]*:|[\t ])"
_RELAXED_HEADER_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?!" + _RELAXED_HEADER_LINE + rb")")
_SPACE = re.compile(rb"[ \t\r\n]*")
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Prepared:
    """Bytes for the parser, what was cut, and raw spans of ``message/*`` bodies."""

    data: bytes
    defects: tuple[str, ...]
    spans: tuple[tuple[str, int, int], ...]  # (content type, start, end) in ``data``


def not_a_message(raw: bytes) -> str:
    """Return why ``raw`` is not an email message at all, or "" when it may be one."""
    blank = _SPACE.match(raw)
    start = blank.end() if blank else 0
    if start == len(raw):
        return "empty input" if not raw else "input is only whitespace"
    if raw.startswith(_OLE2_MAGIC, start):
        return "not a message: an Outlook .msg (OLE2) file, not RFC 5322"
    window = raw[start : start + WINDOW]
    if not _HEADER_LIKE.search(window):
        return "not a message: no 'Name: value' header line in the first 64 KiB"
    controls = len(_BINARY.findall(window))
    if controls * 20 > len(window):
        return f"not a message: binary data ({100 * controls // len(window)}% control bytes)"
    return ""


def _skip_envelope(raw: bytes) -> tuple[int, list[str]]:
    """Offset of the first header line: past an mbox line, a BOM and blank lines."""
    pos, defects = 0, []
    if raw.startswith(_BOM):
        pos = len(_BOM)
        defects.append("leading byte order mark skipped")
    if raw.startswith(b"From ", pos):
        eol = _LINE_END.search(raw, pos)
        pos = eol.end() if eol else len(raw)
    blanks = _LEADING_BLANKS.match(raw, pos)
    if blanks is not None:
        pos = blanks.end()
        defects.append("leading blank lines skipped")
    return pos, defects


def _fix_obsolete_colons(buf: bytes, window: int) -> tuple[bytes, list[str]]:
    """Turn ``Name :`` into ``Name:`` in the first ``window`` bytes of the headers."""
    if not re.match(_RELAXED_HEADER_LINE, buf):
        return buf, []
    end = _RELAXED_HEADER_END.search(buf, 0, window)
    block_end = end.end() if end else min(window, len(buf))
    fixed, count = _OBSOLETE_COLON.subn(rb"\1:", buf[:block_end])
    if not count:
        return buf, []
    return fixed + buf[block_end:], ["obsolete space before a header colon removed"]


def _field_name(buf: bytes, start: int, end: int) -> bytes:
    colon = buf.find(b":", start, min(end, start + 200))
    return buf[start:colon].strip().lower() if colon > start else b""


def _cap_headers(buf: bytes, max_bytes: int) -> tuple[bytes, list[str]]:
    """Apply the top-level header policy of the module docstring."""
    headers_end, _ = header_block(buf, 0, len(buf))
    if headers_end <= min(max_bytes, MAX_FIELD_BYTES):
        return buf, []
    pieces: list[bytes] = []
    defects: list[str] = []
    pos = copied = total = 0
    while pos < headers_end:
        end = field_end(buf, pos, headers_end)
        kept = min(end - pos, MAX_FIELD_BYTES)
        if total + kept > max_bytes:
            break
        short = shortened(buf, pos, end, MAX_FIELD_BYTES, None)
        if short is not None:
            pieces += [buf[copied:pos], short]
            copied = end
            name = _field_name(buf, pos, end).decode("ascii", "replace")
            defects.append(f"header field {name} over {MAX_FIELD_BYTES} bytes; truncated")
        total += kept
        pos = end
    if pos < headers_end:
        # One pass over at most 8 MiB of the dropped fields, first occurrence of each.
        rescued: dict[bytes, bytes] = {}
        for m in _ESSENTIAL_FIELD.finditer(buf, pos, min(headers_end, pos + _RESCUE_WINDOW)):
            essential = m.group(1).lower()
            if essential not in rescued:
                end = field_end(buf, m.start(), headers_end)
                short = shortened(buf, m.start(), end, MAX_MIME_FIELD_BYTES, None)
                rescued[essential] = buf[m.start() : end] if short is None else short
        pieces += [buf[copied:pos], *rescued.values()]
        copied = headers_end
        defects.append(f"header block over {max_bytes} bytes; later fields dropped")
    pieces.append(buf[copied:])
    return b"".join(pieces), defects


def prepare(raw: bytes, limits: ParseLimits) -> Prepared:
    """Skip the envelope, cap headers, cut parts and depth; see the module docstring."""
    start, defects = _skip_envelope(raw)
    buf = raw[start:] if start else raw
    buf, obsolete_defects = _fix_obsolete_colons(buf, limits.max_header_bytes)
    buf, header_defects = _cap_headers(buf, limits.max_header_bytes)
    scan = Scanner(buf, limits.max_parts, limits.max_depth).run(0)
    end = len(buf) if scan.cut is None else scan.cut
    pieces: list[bytes] = []
    shift_at: list[int] = []
    shift_by: list[int] = []
    copied = delta = 0
    for s, e, replacement in scan.edits:
        if e > end:
            break
        pieces += [buf[copied:s], replacement]
        copied = e
        delta += (e - s) - len(replacement)
        shift_at.append(e)
        shift_by.append(delta)
    data = buf if not pieces and end == len(buf) else b"".join([*pieces, buf[copied:end]])

    def moved(pos: int) -> int:
        i = bisect.bisect_right(shift_at, pos)
        return pos - (shift_by[i - 1] if i else 0)

    spans = tuple((span.ctype, moved(span.start), moved(span.end)) for span in scan.spans)
    unique = list(dict.fromkeys([*defects, *obsolete_defects, *header_defects, *scan.defects]))
    return Prepared(data, tuple(unique), spans)
