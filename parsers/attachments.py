"""Build ``Attachment`` values: exact content, safe display names (SEC-03).

Names come from ``Content-Disposition: filename`` or ``Content-Type: name``,
RFC 2231- and RFC 2047-decoded, then reduced to something safe to show and
useless as a path: the last ``/`` or ``\\`` component only, no control, format
(bidi override), surrogate or separator characters, no leading dots, at most
255 UTF-8 bytes with the extension kept, and ``attachment`` plus an extension
guessed from the content type when nothing is left. ``message/*`` parts keep
the raw bytes of their body as found by ``parsers.structure`` (transfer
encoding undone: some mailers base64-encode forwarded messages).
"""

from __future__ import annotations

import hashlib
import unicodedata
from email.message import Message

from parsers.model import Attachment
from parsers.parts import decode_transfer, payload_bytes, transfer_encoding
from parsers.rfc2047 import decode_words
from parsers.text import clean_line, header_str

MAX_NAME_BYTES = 255
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_EXTENSIONS = {
    "application/ms-tnef": ".dat",
    "application/msword": ".doc",
    "application/octet-stream": ".bin",
    "application/ogg": ".ogg",
    "application/pdf": ".pdf",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/zip": ".zip",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/gsm": ".gsm",
    "audio/x-gsm": ".gsm",
    "image/gif": ".gif",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/rfc822": ".eml",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/html": ".html",
    "text/plain": ".txt",
    "text/rfc822-headers": ".txt",
}


def _truncate(name: str) -> str:
    """Cut ``name`` to 255 UTF-8 bytes, keeping a short extension."""
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8")) > 16:
        stem, dot, ext = name, "", ""
    budget = MAX_NAME_BYTES - len((dot + ext).encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
    return stem.rstrip() + dot + ext


def sanitise_filename(name: str, content_type: str) -> str:
    """A display-only file name; see the module docstring for the rules."""
    name = name[:2048].replace("\\", "/").rsplit("/", 1)[-1]
    name = name.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    name = "".join(c for c in name if unicodedata.category(c) not in _UNSAFE_CATEGORIES)
    name = " ".join(name.split()).lstrip(". ").rstrip(" ")
    if name in ("", "..", "."):
        return "attachment" + _EXTENSIONS.get(content_type, "")
    return _truncate(name)


def raw_filename(part: Message) -> str:
    """The declared file name, decoded (RFC 2231, 8-bit, RFC 2047); "" when none.

    The parameters are read from a copy of the two headers with raw 8-bit bytes
    already decoded (UTF-8, else Windows-1252): compat32 would turn them into
    U+FFFD, and raw UTF-8 file names are common.
    """
    view = Message()
    for name, value in part.raw_items():
        if name.lower() in ("content-type", "content-disposition"):
            view.set_raw(name, header_str(str(value))[0])
    try:
        found = view.get_filename()
    except Exception:  # hostile parameters; treat as unnamed
        return ""
    if not found:
        return ""
    return decode_words(header_str(str(found))[0])[0]


def _content_id(part: Message) -> str:
    value = part.get("content-id")
    if value is None:
        return ""
    return clean_line(header_str(str(value))[0], 998).strip("<> ")


def build(part: Message, content: bytes | None) -> Attachment:
    """Turn a leaf or ``message/*`` part into an Attachment (``content`` when known)."""
    ctype = clean_line(part.get_content_type(), 255)
    if content is None:
        data = payload_bytes(part)
    else:  # raw message/* bytes; base64-encoded forwarded messages exist
        data = decode_transfer(content, transfer_encoding(part))
    disposition = part.get_content_disposition() or ""
    return Attachment(
        filename=sanitise_filename(raw_filename(part), ctype),
        content_type=ctype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content=data,
        content_id=_content_id(part),
        disposition=disposition if disposition in ("attachment", "inline") else "",
    )
