"""Walk the MIME structure of raw bytes without parsing it, to cut it to size.

``email.feedparser`` recurses once per nesting level and tests every line
against every open boundary, so 10,000-deep nesting raises ``RecursionError``
and 100,000 parts take seconds. This scanner mirrors its rules closely enough
to count what it would build: the same header-line and boundary-line patterns,
the first ``Content-Type`` decides, a boundary already open makes a leaf,
``message/*`` bodies are nested messages, ``multipart/digest`` children default
to ``message/rfc822`` and ``message/delivery-status`` blocks are parts. It is a
loop with an explicit stack, regex searches only (no per-line Python work in
bodies), and it returns where to cut. It also shortens ``Content-Type`` and
``Content-Disposition`` fields, whose parameter parsing in the stdlib is
quadratic in the number of ``;``, and records the raw byte span of every
``message/*`` body outside other ``message/*`` bodies, so attachments of that
kind keep their exact bytes instead of a re-serialised copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from itertools import islice

MAX_MIME_FIELD_BYTES = 4096
MAX_MIME_PARAMS = 32
_HEADER_WINDOW = 64 * 1024

EOL = rb"(?:\r\n|\r(?!\n)|\n)"
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # feedparser.headerRE
_HEADER_END = re.compile(EOL + rb"(?!From |[\x21-\x39\x3b-\x7e]*:|[\t ])")
_LINE_END = re.compile(EOL)
NEXT_FIELD = re.compile(EOL + rb"(?![\t ])")
_MIME_FIELD = re.compile(
    rb"(?<![^\r\n])(content-type|content-disposition|content-transfer-encoding|content-id):",
    re.I,
)
_PARAM_FIELDS = frozenset({b"content-type", b"content-disposition"})
_MAX_PART_FIELDS = 100
_BLANK_LINE = re.compile(EOL + rb"(?=[\r\n])")


@dataclass
class Frame:
    """An open container: a multipart with its boundary, or a message/* body."""

    depth: int
    subtype: str
    body_start: int
    boundary: bytes | None = None
    span: int | None = None  # index into Scan.spans when its bytes are wanted
    blocks: bool = False  # message/delivery-status: header blocks are parts


@dataclass
class Span:
    """Raw byte range of a ``message/*`` body (a future attachment)."""

    ctype: str
    start: int
    end: int


@dataclass
class Scan:
    """What the scanner found: edits to make, where to cut, spans, defects."""

    edits: list[tuple[int, int, bytes]] = field(default_factory=list)
    cut: int | None = None
    spans: list[Span] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    parts: int = 0


def header_block(buf: bytes, pos: int, endpos: int) -> tuple[int, int]:
    """Return (end of header lines, body start) for headers starting at ``pos``."""
    if not _HEADER_LINE.match(buf, pos, endpos):
        eol = _LINE_END.match(buf, pos, endpos)
        return pos, (eol.end() if eol else pos)
    m = _HEADER_END.search(buf, pos, endpos)
    if m is None:
        return endpos, endpos
    eol = _LINE_END.match(buf, m.end(), endpos)
    return m.end(), (eol.end() if eol else m.end())


def field_end(buf: bytes, start: int, end: int) -> int:
    """End (after its line break) of the header field starting at ``start``."""
    m = NEXT_FIELD.search(buf, start, end)
    return m.end() if m else end


def shortened(buf: bytes, start: int, end: int, limit: int, params: int | None) -> bytes | None:
    """A shortened copy of field [start, end), or None when it is within bounds."""
    body = buf[start:end].rstrip(b"\r\n")
    eol = buf[start + len(body) : end]
    cut = len(body) if len(body) <= limit else limit
    if params is not None and body.count(b";", 0, cut) > params:
        cut = [i for i, c in enumerate(body[:cut]) if c == 0x3B][params]
    if cut >= len(body):
        return None
    return body[:cut].rstrip(b"\r\n") + (eol or b"\n")


class Scanner:
    """One pass over a message; see the module docstring."""

    def __init__(self, buf: bytes, max_parts: int, max_depth: int) -> None:
        self.buf, self.max_parts, self.max_depth = buf, max_parts, max_depth
        self.scan = Scan()
        self.stack: list[Frame] = []
        self._delims: re.Pattern[bytes] | None = None

    def _delimiter_re(self) -> re.Pattern[bytes] | None:
        if self._delims is None:
            names = [re.escape(f.boundary) for f in reversed(self.stack) if f.boundary]
            if names:
                # "--" first, line start checked behind it: the regex engine
                # then jumps between "--" occurrences instead of trying every byte.
                self._delims = re.compile(
                    rb"--(?<![^\r\n]--)(?P<b>" + b"|".join(names) + rb")(?P<end>--)?[ \t]*"
                    rb"(?:\r\n|\r|\n|\Z)"
                )
        return self._delims

    def _push(self, frame: Frame) -> None:
        self.stack.append(frame)
        if frame.boundary is not None:
            self._delims = None

    def _next_delimiter(self, pos: int, endpos: int | None = None) -> re.Match[bytes] | None:
        delims = self._delimiter_re()
        if delims is None:
            return None
        return delims.search(self.buf, pos, len(self.buf) if endpos is None else endpos)

    def _headers(self, start: int) -> tuple[int, int]:
        """Header block of the entity at ``start``; an open boundary line ends it too.

        Looking for the boundary only inside the header block keeps the cost
        bounded; only a header block longer than 64 KiB pays an open search.
        """
        limit = min(len(self.buf), start + _HEADER_WINDOW)
        headers_end, body = header_block(self.buf, start, limit)
        # The end is only certain when the line after it is wholly inside the window.
        if limit < len(self.buf) and _LINE_END.search(self.buf, headers_end, limit) is None:
            nxt = self._next_delimiter(start)
            return header_block(self.buf, start, nxt.start() if nxt else len(self.buf))
        inside = self._next_delimiter(start, headers_end)
        if inside is None:
            return headers_end, body
        return header_block(self.buf, start, inside.start())

    def _close(self, frame: Frame, at: int, count_blocks: bool = True) -> bool:
        """Close ``frame`` at delimiter offset ``at``; False when a limit cut the scan."""
        end = at
        if self.buf[end - 2 : end] == b"\r\n":
            end -= 2
        elif self.buf[end - 1 : end] in (b"\r", b"\n"):
            end -= 1
        end = max(end, frame.body_start)
        if frame.span is not None:
            self.scan.spans[frame.span].end = end
        if not (count_blocks and frame.blocks) or end == frame.body_start:
            return True
        if frame.depth + 1 > self.max_depth:
            return self._cut(frame.body_start, f"depth limit {self.max_depth} exceeded")
        blocks = 1
        for m in _BLANK_LINE.finditer(self.buf, frame.body_start, end):
            if self.scan.parts + blocks >= self.max_parts:
                return self._cut(m.start(), f"parts limit {self.max_parts} exceeded")
            blocks += 1
        self.scan.parts += blocks
        return True

    def _cut(self, at: int, why: str) -> bool:
        self.scan.cut = at
        self.scan.defects.append(f"{why}; remaining parts not parsed")
        return False

    def _part_fields(self, start: int, end: int, root: bool) -> list[tuple[int, int, bytes]]:
        """The MIME fields of a header block as (start, end, bytes to keep).

        Content-Type and Content-Disposition are shortened when their parameter
        lists are hostile. A part (not the top level, which ``parsers.limits``
        caps) whose header block is over 64 KiB or 100 fields keeps only its
        first Content-* fields: compat32 scans every field on each lookup.
        """
        fields: list[tuple[int, int, bytes]] = []
        window = end if root else min(end, start + _HEADER_WINDOW)  # root: capped already
        for m in _MIME_FIELD.finditer(self.buf, start, window):
            fend = field_end(self.buf, m.start(), end)
            params = MAX_MIME_PARAMS if m.group(1).lower() in _PARAM_FIELDS else None
            short = shortened(self.buf, m.start(), fend, MAX_MIME_FIELD_BYTES, params)
            if short is not None:
                self.scan.defects.append(f"{m.group(1).decode().lower()} field shortened")
            fields.append((m.start(), fend, self.buf[m.start() : fend] if short is None else short))
        return fields

    def _oversized(self, start: int, end: int) -> bool:
        if end - start > _HEADER_WINDOW:
            return True
        fields = NEXT_FIELD.finditer(self.buf, start, end)
        return next(islice(fields, _MAX_PART_FIELDS, None), None) is not None

    def _content_type(self, start: int, end: int, default: str, root: bool) -> Message:
        """A header-only Message with the entity's first Content-Type, after edits."""
        fields = self._part_fields(start, end, root)
        if not root and self._oversized(start, end):
            first: dict[bytes, bytes] = {}
            for _, _, data in fields:
                first.setdefault(data.split(b":", 1)[0].lower(), data)
            self.scan.edits.append((start, end, b"".join(first.values())))
            self.scan.defects.append("part header block too large; only Content-* fields kept")
        else:
            self.scan.edits.extend(f for f in fields if f[2] != self.buf[f[0] : f[1]])
        msg = Message()
        msg.set_default_type(default)
        for _, _, data in fields:
            name, _, value = data.partition(b":")
            if name.lower() == b"content-type":
                text = value.decode("ascii", "surrogateescape")
                msg.set_raw("Content-Type", text.lstrip(" \t").rstrip("\r\n"))
                break
        return msg

    def _open(self, start: int, depth: int, default: str, cut_at: int) -> int | None:
        """Open the entity whose headers start at ``start``; return its body start.

        A ``message/*`` entity's body is the next entity, opened in the same loop.
        """
        while True:
            self.scan.parts += 1
            if self.scan.parts > self.max_parts:
                self._cut(cut_at, f"parts limit {self.max_parts} exceeded")
                return None
            if depth > self.max_depth:
                self._cut(cut_at, f"depth limit {self.max_depth} exceeded")
                return None
            headers_end, body = self._headers(start)
            msg = self._content_type(start, headers_end, default, root=depth == 1)
            ctype = msg.get_content_type()
            if not ctype.startswith("message/"):
                break
            frame = Frame(depth, ctype, body, blocks=ctype == "message/delivery-status")
            if all(f.boundary is not None for f in self.stack):
                frame.span = len(self.scan.spans)
                self.scan.spans.append(Span(ctype, body, len(self.buf)))
            self._push(frame)
            if frame.blocks:
                return body
            start, depth, default, cut_at = body, depth + 1, "text/plain", body
        boundary = msg.get_boundary() if ctype.startswith("multipart/") else None
        if boundary is not None:
            try:
                raw = boundary.encode("ascii", "surrogateescape")
            except UnicodeEncodeError:
                return body  # can never match a line, as in the stdlib
            if all(f.boundary != raw for f in self.stack):
                self._push(Frame(depth, ctype.split("/", 1)[1], body, boundary=raw))
        return body

    def run(self, start: int) -> Scan:
        """Scan from ``start`` (the first header line) to the end or the cut."""
        body = self._open(start, 1, "text/plain", start)
        while body is not None:
            m = self._next_delimiter(body)
            if m is None:
                break
            body = self._delimiter(m)
        for frame in reversed(self.stack):
            cut = self.scan.cut
            self._close(frame, len(self.buf) if cut is None else cut, count_blocks=cut is None)
        return self.scan

    def _delimiter(self, m: re.Match[bytes]) -> int | None:
        """Handle a boundary line: close inner frames, open the next part."""
        index = max(i for i, f in enumerate(self.stack) if f.boundary == m.group("b"))
        for frame in reversed(self.stack[index + 1 :]):
            if not self._close(frame, m.start()):
                return None
        if index + 1 < len(self.stack):
            del self.stack[index + 1 :]
            self._delims = None
        frame = self.stack[index]
        if m.group("end"):
            self.stack.pop()
            self._delims = None
            return m.end()
        again = re.compile(
            re.escape(b"--" + (frame.boundary or b"")) + rb"(?:--)?[ \t]*(?:\r\n|\r|\n|\Z)"
        )
        pos = m.end()
        while (repeat := again.match(self.buf, pos)) is not None and repeat.end() > pos:
            pos = repeat.end()
        default = "message/rfc822" if frame.subtype == "digest" else "text/plain"
        return self._open(pos, frame.depth + 1, default, m.start())
