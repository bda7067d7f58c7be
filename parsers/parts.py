"""Walk a parsed MIME tree without recursion and sort leaves into body and attachments.

A *body candidate* is a ``text/plain`` or ``text/html`` leaf with no filename,
not marked ``Content-Disposition: attachment`` and not inside a container so
marked (a broken multipart whose boundary was never found counts as
``text/plain``). The text body is the first ``text/plain`` candidate; when there
is none, or it is blank, the first ``text/html`` candidate rendered as text.
Other candidates are alternatives of the body and are dropped. Every other
leaf is an attachment, and so is every ``message/*`` part, whole: the walk
does not descend into forwarded messages.
"""

from __future__ import annotations

import quopri
import re
from dataclasses import dataclass, field
from email.message import Message

from parsers.htmltext import html_to_text
from parsers.rfc2047 import b64decode_lenient
from parsers.text import clean_text, codec_for, decode_bytes

_UU = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


@dataclass
class Sorted:
    """The outcome of the walk over one message."""

    plain: Message | None = None
    html: Message | None = None
    attachments: list[tuple[Message, int | None]] = field(default_factory=list)  # span index
    content_types: set[str] = field(default_factory=set)  # of every part walked
    defects: list[str] = field(default_factory=list)


def _is_attachment_container(part: Message) -> bool:
    return part.get_content_disposition() == "attachment"


def _named(part: Message) -> bool:
    """Whether the part declares a file name; unreadable parameters count as one."""
    try:
        return bool(part.get_filename())
    except Exception:  # hostile RFC 2231 parameters
        return True


def payload_of(part: Message) -> object:
    """``part.get_payload()``, with Buzón's charset policy instead of the stdlib's.

    For 8-bit text compat32 decodes with the declared charset and
    ``errors="replace"``, catching only ``LookupError``: codecs that refuse that
    handler (``idna``, ``punycode``, ``undefined``) raise UnicodeError, a NUL in
    the label ValueError, an RFC 2231 ``charset*`` (a tuple) TypeError, and
    ``unicode-escape`` interprets backslashes (warning on unknown escapes). Here
    the label goes through ``codec_for`` first; an unusable one gives what
    compat32 gives an unknown charset: ASCII with U+FFFD for 8-bit bytes.
    """
    if part.is_multipart():
        return part.get_payload()
    raw = getattr(part, "_payload", None)  # compat32 keeps 8-bit bytes as surrogates
    if not isinstance(raw, str):
        return ""
    try:
        raw.encode("utf-8")
        return raw  # no 8-bit bytes: what get_payload() returns
    except UnicodeEncodeError:
        data = raw.encode("ascii", "surrogateescape")
    label = part.get_param("charset")
    codec = (codec_for(label) if isinstance(label, str) else None) or "ascii"
    try:
        return data.decode(codec, "replace")
    except Exception:  # a codec may raise anything on hostile bytes
        return data.decode("ascii", "replace")


def sort_parts(root: Message, max_parts: int) -> Sorted:
    """Walk ``root`` depth-first (document order) with an explicit stack."""
    out = Sorted()
    stack: list[tuple[Message, bool]] = [(root, False)]
    seen = message_parts = 0
    while stack:
        part, in_attachment = stack.pop()
        seen += 1
        if seen > max_parts:
            out.defects.append(f"parts limit {max_parts} exceeded; remaining parts not parsed")
            break
        ctype = part.get_content_type()
        out.content_types.add(ctype)
        maintype = ctype.split("/", 1)[0]
        if maintype == "message":
            out.attachments.append((part, message_parts))
            message_parts += 1
            continue
        payload = payload_of(part)
        if isinstance(payload, list):
            inside = in_attachment or _is_attachment_container(part)
            children = [child for child in reversed(payload) if isinstance(child, Message)]
            stack.extend((child, inside) for child in children)
            continue
        if in_attachment or _named(part) or part.get_content_disposition() == "attachment":
            out.attachments.append((part, None))
        elif ctype == "text/html":
            if out.html is None:
                out.html = part
        elif ctype == "text/plain" or maintype == "multipart":
            if out.plain is None:
                out.plain = part
        else:
            out.attachments.append((part, None))
    return out


def all_defects(root: Message, max_parts: int) -> list[str]:
    """Class names of the stdlib defects anywhere in the tree, in walk order."""
    names: list[str] = []
    stack = [root]
    seen = 0
    while stack and seen < max_parts:
        part = stack.pop()
        seen += 1
        names.extend(type(defect).__name__ for defect in part.defects)
        payload = payload_of(part)
        if isinstance(payload, list):
            stack.extend(child for child in reversed(payload) if isinstance(child, Message))
    return list(dict.fromkeys(names))


def transfer_encoding(part: Message) -> str:
    """The Content-Transfer-Encoding, lower-cased, comments and spaces removed."""
    declared = str(part.get("content-transfer-encoding", ""))
    return re.sub(r"\([^()]*\)", "", declared).strip().lower()


def decode_transfer(data: bytes, cte: str) -> bytes:
    """Undo base64 (bad padding and junk tolerated) or quoted-printable."""
    if cte == "base64":
        return b64decode_lenient(data)
    if cte == "quoted-printable":
        return quopri.decodestring(data)
    return data


def payload_bytes(part: Message) -> bytes:
    """The decoded content of a leaf: base64 (bad padding tolerated), QP, uuencode.

    The stdlib compares the Content-Transfer-Encoding without stripping it, so
    ``base64 `` or ``base64 (comment)`` would come back undecoded; those are
    decoded here.
    """
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return b""
    cte = transfer_encoding(part)
    if cte == str(part.get("content-transfer-encoding", "")).lower() or cte in _UU:
        return data
    return decode_transfer(data, cte)


def body_text(found: Sorted, max_chars: int) -> tuple[str, bool, list[str]]:
    """Decode the chosen body part; return text, whether it came from HTML, defects."""
    defects: list[str] = []
    text = ""
    if found.plain is not None:
        text, problem = decode_bytes(payload_bytes(found.plain), found.plain.get_content_charset())
        defects += [problem] if problem else []
    from_html = False
    if not text.strip() and found.html is not None:
        source, problem = decode_bytes(payload_bytes(found.html), found.html.get_content_charset())
        defects += [problem] if problem else []
        rendered = html_to_text(source[: 4 * max_chars])
        if rendered.strip():
            text, from_html = rendered, True
    text, truncated = clean_text(text, max_chars)
    if truncated:
        defects.append(f"text longer than {max_chars} characters; truncated")
    return text, from_html, defects
