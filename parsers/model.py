"""The parser's output types: what every later stage may know about a message.

They are frozen and hold only plain values so they cross process boundaries
(the daemon parses in worker processes) and never alias a mutable email object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep a hostile message from eating CPU or memory while parsing.

    Past a limit the parser stops descending and records a defect; the raw bytes
    are kept by the caller either way.
    """

    max_header_bytes: int = 256 * 1024
    max_parts: int = 1000
    max_depth: int = 50
    max_text_chars: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. ``verified`` is False when the header was ambiguous or malformed.

    An unverified address must never be used to authorise anything (CVE-2023-27043):
    no auto-reply to it, no threading into another ticket on its strength.
    """

    addr_spec: str  # lower-cased domain, local part as written; "" when unusable
    display_name: str = ""
    verified: bool = True
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A non-body MIME part. ``filename`` is sanitised for display only, never a path."""

    filename: str
    content_type: str
    size: int
    sha256: str
    content: bytes = field(repr=False)
    content_id: str = ""
    disposition: str = ""  # "attachment", "inline" or ""


@dataclass(frozen=True, slots=True)
class AutoSignals:
    """Evidence that a message was sent by a machine, for loop prevention (RFC 3834)."""

    auto_submitted: str = ""  # header value lower-cased; "" when absent
    precedence: str = ""  # bulk, list, junk, auto_reply …
    auto_response_suppress: str = ""  # X-Auto-Response-Suppress value
    list_id: str = ""
    is_bounce: bool = False  # multipart/report delivery-status, or a classic bounce
    is_dsn: bool = False  # multipart/report; report-type=delivery-status
    is_mdn: bool = False  # multipart/report; report-type=disposition-notification
    null_sender: bool = False  # Return-Path: <> (set by the daemon from the envelope too)

    @property
    def is_automatic(self) -> bool:
        """True when any signal says a machine sent this; never auto-respond then."""
        return bool(
            (self.auto_submitted and self.auto_submitted != "no")
            or self.precedence in {"bulk", "list", "junk", "auto_reply"}
            or self.auto_response_suppress
            or self.list_id
            or self.is_bounce
            or self.is_dsn
            or self.is_mdn
            or self.null_sender
        )


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything extracted from one raw message.

    ``fatal`` is non-empty when the message could not be understood at all; the
    daemon then quarantines it with that reason (raw bytes kept). ``defects`` are
    problems that did not stop parsing (recovered MIME errors, limits hit, …).
    """

    message_id: str  # without angle brackets
    message_id_generated: bool
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    sender: Address | None  # From:
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    date: datetime | None  # timezone-aware UTC, None when absent or unparseable
    text: str  # plain-text body; NUL-free, valid Unicode
    text_from_html: bool
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    auto: AutoSignals
    parser: str  # "mail-parser", "compat32" or "none"
    fatal: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # decoded, control chars removed, capped
