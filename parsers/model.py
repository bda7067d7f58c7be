"""The parser's output types: what every later stage may know about a message.

They are frozen and hold only plain values so they cross process boundaries
(the daemon parses in worker processes) and never alias a mutable email object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

# What the bytes of an audio part are, sniffed, never taken from the file name.
# "wav" is RIFF PCM (integer or float); "wav49" is RIFF with GSM 6.10 (tag 49);
# "mulaw"/"alaw" are RIFF µ-law/A-law or raw G.711 typed so; "gsm" is raw GSM
# 06.10 frames; "unknown" is a part typed audio whose bytes were not recognised.
AudioFormat = Literal["wav", "wav49", "gsm", "mp3", "ogg", "m4a", "amr", "mulaw", "alaw", "unknown"]
Pbx = Literal["asterisk", "freepbx", "freeswitch", ""]


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


# What kind of machine mail a message is (``parsers.autosignals`` decides, and
# says why in ``AutoSignals.reason``); "" means a person wrote it.
AutoKind = Literal[
    "",
    "bounce",
    "delivery_report",
    "read_report",
    "feedback_report",
    "out_of_office",
    "list",
    "auto_generated",
]
AUTO_KINDS: tuple[AutoKind, ...] = get_args(AutoKind)


@dataclass(frozen=True, slots=True)
class AutoSignals:
    """Evidence that a message was sent by a machine, for loop prevention (RFC 3834).

    ``kind`` is the one answer the daemon acts on: never acknowledge or open a
    ticket for a non-empty kind; attach a report or auto-reply to the ticket of
    ``returned_message_ids``. ``reason`` names the header or part that decided.
    The other fields are the raw evidence, kept for logs and older readers.
    """

    auto_submitted: str = ""  # keyword before ";", comments dropped, lower-cased; "" if absent
    precedence: str = ""  # bulk, list, junk, auto_reply … (same normalisation)
    auto_response_suppress: str = ""  # X-Auto-Response-Suppress value
    list_id: str = ""
    is_bounce: bool = False  # non-delivery: a failed (or unreadable) DSN, or a classic bounce
    is_dsn: bool = False  # multipart/report; report-type=delivery-status (or such a part)
    is_mdn: bool = False  # multipart/report; report-type=disposition-notification
    null_sender: bool = False  # Return-Path: <> (set by the daemon from the envelope too)
    kind: AutoKind = ""  # see AutoKind; "" when a person wrote it
    reason: str = ""  # one line naming the deciding header or part; "" when kind is ""
    # Message-IDs (bare, as ``ParsedMessage.message_id``) of the message a report
    # or auto-reply is about, most reliable source first; () when unknown.
    returned_message_ids: tuple[str, ...] = ()

    @property
    def is_automatic(self) -> bool:
        """True when any signal says a machine sent this; never auto-respond then."""
        return bool(
            self.kind
            or (self.auto_submitted and self.auto_submitted != "no")
            or self.precedence in {"bulk", "list", "junk", "auto_reply"}
            or self.auto_response_suppress
            or self.list_id
            or self.is_bounce
            or self.is_dsn
            or self.is_mdn
            or self.null_sender
        )


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One top-level Authentication-Results field (RFC 8601), as far as Buzón reads it.

    Only the DMARC result is kept: it is what decides whether a From address
    may be trusted for threading (``parsers.authresults.dmarc_fail_for``).
    """

    authserv_id: str  # lower-cased; "" when the field names none (Microsoft 365 omits it)
    dmarc: str = ""  # lower-cased result: pass, fail, none, temperror, permerror …; "" when absent
    header_from: str = ""  # the dmarc result's header.from domain, lower-cased; "" when absent


@dataclass(frozen=True, slots=True)
class VoicemailAudio:
    """One recording: which attachment holds it and what its bytes are.

    ``detected_by`` is "content-type" when the part was typed audio (the
    format still comes from its bytes) or "bytes" when a generic type
    (``application/octet-stream``, none) was recognised by its magic bytes.
    """

    index: int  # into ParsedMessage.attachments
    format: AudioFormat
    detected_by: Literal["content-type", "bytes"]


@dataclass(frozen=True, slots=True)
class Voicemail:
    """A message that carries a recorded call, and what the PBX said about the call.

    Every field but ``audio`` is best effort: PBX subjects and bodies are
    admin-editable templates, so an unknown layout leaves fields empty.
    ``source_fields`` names, for each field that was filled, the header or
    body layout it came from (``("caller_number", "X-Asterisk-CallerID")``),
    so a ticket can explain where a caller id came from.
    """

    audio: tuple[VoicemailAudio, ...]  # never empty
    caller_number: str = ""  # digits, a leading + kept; "" when withheld or unknown
    caller_name: str = ""
    duration_seconds: int | None = None
    mailbox: str = ""
    message_number: int | None = None  # as the PBX counts them (Asterisk: 1-based)
    urgent: bool = False
    orig_time: datetime | None = None  # timezone-aware UTC; only from an epoch header
    pbx: Pbx = ""  # "" when no known PBX shape was recognised
    pbx_transcript: str = ""  # a transcript the PBX put in the body, lines joined
    source_fields: tuple[tuple[str, str], ...] = ()  # (field, where it came from)


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
    voicemail: Voicemail | None = None  # set when an attachment is a sound recording
    authentication: tuple[AuthResult, ...] = ()  # Authentication-Results, topmost first
