"""``parse_message``: raw bytes in, a ``ParsedMessage`` out, never an exception.

Steps: refuse what is not a message (``parsers.limits.not_a_message``), cut
the bytes to ``ParseLimits`` (``parsers.limits.prepare``), build the MIME tree
(``parsers.mime``), then extract each field on its own: a failure in one
field becomes a defect and a default value, not a lost message. Only when
nothing sensible can be had (not a message, or the stdlib parser itself
recursing too deep) is the result ``fatal``, with ``parser="none"`` and a
one-line reason; the message id is then always the generated one. Last, a
message with a sound attachment gets its ``voicemail`` (``parsers.voicemail``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from parsers.addresses import parse_address_list, parse_sender
from parsers.attachments import build
from parsers.authresults import auth_results
from parsers.autosignals import auto_signals
from parsers.headers import (
    HeaderIndex,
    header_pairs,
    id_list,
    message_id,
    parse_date,
    subject,
)
from parsers.limits import Prepared, not_a_message, prepare
from parsers.mime import PARSER_COMPAT32, parse_tree
from parsers.model import (
    Address,
    Attachment,
    AuthResult,
    AutoSignals,
    ParsedMessage,
    ParseLimits,
    Voicemail,
)
from parsers.parts import Sorted, all_defects, body_text, sort_parts
from parsers.text import clean_line
from parsers.voicemail import detect_voicemail

GENERATED_DOMAIN = "generated.buzon.invalid"
MAX_DEFECTS = 100
MAX_ADDRESSES = 1000
DEFAULT_LIMITS = ParseLimits()

T = TypeVar("T")


class _Defects:
    """Short one-line defect strings, deduplicated, in order, at most 100."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, *items: str) -> None:
        for item in items:
            text = clean_line(item, 200)
            if text and len(self._items) < MAX_DEFECTS:
                self._items.setdefault(text, None)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self._items)


def generated_message_id(raw: bytes) -> str:
    """The deterministic id of a message without one: SHA-256 of the raw bytes."""
    return f"{hashlib.sha256(raw).hexdigest()[:32]}@{GENERATED_DOMAIN}"


def _fatal(raw: bytes, reason: str) -> ParsedMessage:
    return ParsedMessage(
        message_id=generated_message_id(raw),
        message_id_generated=True,
        in_reply_to=(),
        references=(),
        sender=None,
        to=(),
        cc=(),
        reply_to=(),
        subject="",
        date=None,
        text="",
        text_from_html=False,
        attachments=(),
        defects=(),
        auto=AutoSignals(),
        parser="none",
        fatal=clean_line(reason, 300) or "unparseable",
    )


def _guarded(defects: _Defects, what: str, step: Callable[[], T], default: T) -> T:
    """Run one extraction step; on failure record a defect and use ``default``."""
    try:
        return step()
    except RecursionError:
        raise
    except Exception as exc:  # one bad field must not lose the message
        defects.add(f"could not read {what}: {type(exc).__name__}: {exc}")
        return default


def _attachments(found: Sorted, prepared: Prepared, defects: _Defects) -> tuple[Attachment, ...]:
    out: list[Attachment] = []
    for n, (part, span) in enumerate(found.attachments):
        content: bytes | None = None
        if span is not None:
            if span < len(prepared.spans) and prepared.spans[span][0] == part.get_content_type():
                _, start, end = prepared.spans[span]
                content = prepared.data[start:end]
            else:
                defects.add("raw bytes of an embedded message not found; content left empty")
                content = b""
        try:
            out.append(build(part, content))
        except RecursionError:
            raise
        except Exception as exc:  # one broken part must not lose the others
            defects.add(f"could not read attachment {n + 1}: {type(exc).__name__}: {exc}")
    return tuple(out)


def _recipients(index: HeaderIndex, name: str, defects: _Defects) -> tuple[Address, ...]:
    found, capped = parse_address_list(index.all(name), MAX_ADDRESSES)
    if capped:
        defects.add(f"{name} has more than {MAX_ADDRESSES} addresses; rest dropped")
    return found


def _parse(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    defects = _Defects()
    prepared = prepare(raw, limits)
    defects.add(*prepared.defects)
    root, parser, parser_notes = parse_tree(prepared.data)
    if parser == PARSER_COMPAT32:
        defects.add(*parser_notes)
    index = HeaderIndex(root)

    def step(what: str, fn: Callable[[], T], default: T) -> T:
        return _guarded(defects, what, fn, default)

    mid = step("Message-ID", lambda: message_id(index), "")
    unverified = Address("", "", False, "From could not be read")
    from_values, from_not_utf8 = index.all("from"), index.bad_8bit("from")
    sender = step("From", lambda: parse_sender(from_values, from_not_utf8), unverified)
    no_defects = list[str]()
    subject_text, subject_defects = step("Subject", lambda: subject(index), ("", no_defects))
    no_date: datetime | None = None
    date, date_defects = step("Date", lambda: parse_date(index), (no_date, no_defects))
    found = step("MIME parts", lambda: sort_parts(root, limits.max_parts), Sorted())
    body = step(
        "text body", lambda: body_text(found, limits.max_text_chars), ("", False, no_defects)
    )
    attachments: tuple[Attachment, ...] = step(
        "attachments", lambda: _attachments(found, prepared, defects), ()
    )
    auto = step(
        "auto signals",
        lambda: auto_signals(
            index, root, found.content_types, sender=sender, subject=subject_text, text=body[0]
        ),
        AutoSignals(),
    )
    no_results: tuple[AuthResult, ...] = ()
    authentication = step("Authentication-Results", lambda: auth_results(index), no_results)
    no_headers: tuple[tuple[str, str], ...] = ()
    headers, header_defects = step(
        "headers", lambda: header_pairs(root, limits.max_header_bytes), (no_headers, no_defects)
    )
    no_ids: tuple[str, ...] = ()
    in_reply_to = step("In-Reply-To", lambda: id_list(index.all("in-reply-to")), no_ids)
    references = step("References", lambda: id_list(index.all("references")), no_ids)
    nobody: tuple[Address, ...] = ()
    to = step("To", lambda: _recipients(index, "to", defects), nobody)
    cc = step("Cc", lambda: _recipients(index, "cc", defects), nobody)
    reply_to = step("Reply-To", lambda: _recipients(index, "reply-to", defects), nobody)
    no_voicemail: Voicemail | None = None
    voicemail = step(
        "voicemail",
        lambda: detect_voicemail(
            headers=headers, subject=subject_text, text=body[0], attachments=attachments
        ),
        no_voicemail,
    )
    defects.add(*found.defects, *subject_defects, *date_defects, *body[2], *header_defects)
    defects.add(*step("defects", lambda: all_defects(root, limits.max_parts), no_defects))
    if parser != PARSER_COMPAT32:
        defects.add(*parser_notes)
    return ParsedMessage(
        message_id=mid or generated_message_id(raw),
        message_id_generated=not mid,
        in_reply_to=in_reply_to,
        references=references,
        sender=sender,
        to=to,
        cc=cc,
        reply_to=reply_to,
        subject=subject_text,
        date=date,
        text=body[0],
        text_from_html=body[1],
        attachments=attachments,
        defects=defects.as_tuple(),
        auto=auto,
        parser=parser,
        headers=headers,
        voicemail=voicemail,
        authentication=authentication,
    )


def parse_message(raw: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse one raw RFC 5322 message; never raises (see the module docstring)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        return _fatal(b"", f"input is {type(raw).__name__}, not bytes")
    data = bytes(raw)
    try:
        reason = not_a_message(data)
        if reason:
            return _fatal(data, reason)
        return _parse(data, limits)
    except RecursionError:
        return _fatal(data, "message nested too deeply to parse (RecursionError)")
    except MemoryError:
        return _fatal(data, "out of memory while parsing")
    except Exception as exc:  # the contract: never raise, report instead
        return _fatal(data, f"parser failed: {type(exc).__name__}: {exc}")
