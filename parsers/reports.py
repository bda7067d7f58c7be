"""Read the machine-readable parts of mail reports and the message they return.

Reports are DSNs (RFC 3464/6533), MDNs (RFC 8098) and ARF feedback reports
(RFC 5965): a ``multipart/report`` whose parts are fields (``Action:``,
``Disposition:``, ``Feedback-Type:``) and, usually, the original message
(``message/rfc822``) or its header (``text/rfc822-headers``). This module finds
those parts among the first 32 parts outside forwarded messages, reads their
fields from the tree compat32 already built, and says what a DSN reports
(``dsn_verdict``) and which message a report returns (``returned_id``).

Bounded: at most 64 KiB of one report body or header block, 50 blocks of 100
fields, 3 returned parts; a returned message is never parsed again, its
headers were parsed with the tree. Hostile parts give empty answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from itertools import islice

from parsers.headers import HeaderIndex, message_id
from parsers.model import AutoKind
from parsers.parts import decode_transfer, payload_of, transfer_encoding
from parsers.text import clean_line, header_str

MAX_REPORT_PARTS = 32
MAX_RETURNED_PARTS = 3
MAX_REPORT_CHARS = 64 * 1024
MAX_BLOCKS = 50
MAX_FIELDS = 100

DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
MDN_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
ARF_TYPE = "message/feedback-report"
RETURNED_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/global-headers",
        "message/rfc822-headers",  # not registered, but MailSite and others send it
    }
)
_ENCODED = frozenset({"base64", "quoted-printable"})
_OK_ACTIONS = frozenset({"delivered", "relayed", "expanded", "delayed"})
_STATUS = re.compile(r"\s*([245])\.\d{1,3}\.\d{1,3}")
_STATUS_ACTIONS = {"2": "delivered", "4": "delayed", "5": "failed"}
_COMMENT = re.compile(r"\([^()]*\)")
_LINE = re.compile(r"\r\n|\r|\n")

Fields = dict[str, str]


@dataclass
class ReportParts:
    """The first report part of each kind and the returned parts, in document order."""

    dsn: Message | None = None
    mdn: Message | None = None
    feedback: Message | None = None
    returned: list[Message] = field(default_factory=list)


def keyword(value: str) -> str:
    """A field's keyword: before ``;``, comments removed, spaces collapsed, lower-cased."""
    return " ".join(_COMMENT.sub(" ", value.split(";", 1)[0]).split()).lower()


def report_parts(root: Message) -> ReportParts:
    """Walk at most 32 parts, never into forwarded messages, for report parts."""
    found = ReportParts()
    stack, seen = [root], 0
    while stack and seen < MAX_REPORT_PARTS:
        part = stack.pop()
        seen += 1
        ctype = part.get_content_type()
        if ctype in DSN_TYPES:
            found.dsn = found.dsn or part
        elif ctype in MDN_TYPES:
            found.mdn = found.mdn or part
        elif ctype == ARF_TYPE:
            found.feedback = found.feedback or part
        elif ctype in RETURNED_TYPES:
            if len(found.returned) < MAX_RETURNED_PARTS:
                found.returned.append(part)
        elif ctype.startswith("multipart/"):
            payload = payload_of(part)
            if isinstance(payload, list):
                stack.extend(reversed([c for c in payload if isinstance(c, Message)]))
    return found


def _decoded(text: str, cte: str) -> str:
    """Undo base64 or quoted-printable on payload text; other text is returned as is."""
    if cte not in _ENCODED:
        return text
    try:  # compat32 keeps 8-bit bytes as surrogates: get them back
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return decode_transfer(data, cte).decode("utf-8", "replace")


def _header_fields(block: Message) -> Fields:
    fields: Fields = {}
    for name, value in islice(block.raw_items(), MAX_FIELDS):
        key = header_str(str(name))[0].strip().lower()
        fields.setdefault(key, clean_line(header_str(str(value))[0], 300))
    return fields


def _text_fields(text: str) -> list[Fields]:
    """``Name: value`` blocks of report text separated by blank lines (folding kept)."""
    blocks: list[Fields] = []
    current: Fields = {}
    last = ""
    for line in _LINE.split(text)[: MAX_BLOCKS * MAX_FIELDS]:
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
        elif line[0] in " \t":
            if last:
                current[last] = clean_line(current[last] + " " + line, 300)
        else:
            name, sep, value = line.partition(":")
            name = name.strip().lower()
            last = ""
            if sep and name and " " not in name and name not in current:
                current[name] = clean_line(value, 300)
                last = name
    if current:
        blocks.append(current)
    return blocks[:MAX_BLOCKS]


def field_blocks(part: Message) -> list[Fields]:
    """The field blocks of a DSN, MDN or ARF part, read from what compat32 built.

    compat32 parses ``message/delivery-status`` into one header-only Message
    per block and other ``message/*`` reports into one Message; text it could
    not read as headers is left as a body and read here. A transfer encoding,
    declared on the part or (Proofpoint does this) in a block, is undone
    first: base64 report text would otherwise be unreadable.
    """
    payload = payload_of(part)
    items: list[object] = list(payload[:MAX_BLOCKS]) if isinstance(payload, list) else [payload]
    cte = transfer_encoding(part)
    budget = MAX_REPORT_CHARS
    blocks: list[Fields] = []
    for item in items:
        body = item
        if isinstance(item, Message):
            fields = _header_fields(item)
            blocks.append(fields)
            cte = keyword(fields.get("content-transfer-encoding", cte))
            body = payload_of(item)
        if isinstance(body, str) and body.strip() and budget > 0:
            chunk = body[:budget]
            budget -= len(chunk)
            blocks.extend(_text_fields(_decoded(chunk, cte)))
        if len(blocks) >= MAX_BLOCKS:
            break
    return blocks[:MAX_BLOCKS]


def merged_fields(part: Message) -> Fields:
    """All fields of a single-block report (MDN, ARF), the first value of each name."""
    merged: Fields = {}
    for block in field_blocks(part):
        for key, value in block.items():
            merged.setdefault(key, value)
    return merged


def _recipient(fields: Fields) -> str:
    value = fields.get("final-recipient") or fields.get("original-recipient") or ""
    address = value.split(";", 1)[1] if ";" in value else value
    return clean_line(address.strip().strip("<>"), 100)


def _addresses(names: list[str], capped: bool) -> str:
    """Three addresses and how many more (at least, when the block limit was hit)."""
    unique = [n for n in dict.fromkeys(names) if n]
    if not unique:
        return "an unnamed recipient"
    more = ""
    if len(unique) > 3:
        more = f" and {'at least ' if capped else ''}{len(unique) - 3} more"
    return ", ".join(unique[:3]) + more


def dsn_verdict(where: str, part: Message | None) -> tuple[AutoKind, str]:
    """``bounce`` or ``delivery_report`` for a DSN, with the reason.

    A recipient's outcome is its ``Action``, or the class of its ``Status``
    when Action is missing or unknown (5 failed, 4 delayed, 2 delivered).
    Any failed recipient makes a bounce; all delivered, relayed, expanded or
    delayed a delivery report; nothing readable a bounce too, since DSNs are
    nearly always sent for failures and a missed bounce is the worse mistake.
    """
    blocks = field_blocks(part) if part is not None else []
    capped = len(blocks) >= MAX_BLOCKS
    recipients: list[tuple[str, str, str]] = []  # (address, action, evidence)
    for fields in blocks:
        words = keyword(fields.get("action", "")).split()
        action = words[0] if words else ""
        evidence = f"Action: {action}"
        if action not in _OK_ACTIONS and action != "failed":
            status = _STATUS.match(fields.get("status", ""))
            if status is None:
                continue  # the per-message block, or an unreadable recipient
            action = _STATUS_ACTIONS[status.group(1)]
            evidence = f"Status: {fields['status'].split()[0]} (no Action)"
        recipients.append((_recipient(fields), action, evidence))
    failed = [r for r in recipients if r[1] == "failed"]
    if failed:
        names = _addresses([r[0] for r in failed], capped)
        return "bounce", f"{where} with {failed[0][2]} for {names}"
    if recipients:
        evidence = ", ".join(dict.fromkeys(r[2] for r in recipients))
        names = _addresses([r[0] for r in recipients], capped)
        return "delivery_report", f"{where} with {evidence} for {names}"
    if part is None:
        return "bounce", f"{where} without a readable delivery-status part; taken as a failure"
    return "bounce", f"{where} with no readable Action or Status; taken as a failure"


def returned_id(part: Message) -> str:
    """The Message-ID of a returned message or header block ("" when none).

    Normalised by ``parsers.headers.message_id``, as the message's own id is.
    """
    payload = payload_of(part)
    cte = transfer_encoding(part)
    headers: Message | None = None
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        headers = payload[0]
        inner = payload_of(headers)
        if not headers.keys() and cte in _ENCODED and isinstance(inner, str):
            headers, payload = None, inner  # an encoded message/rfc822 parses as no headers
    if headers is None and isinstance(payload, str):
        text = _decoded(payload[:MAX_REPORT_CHARS], cte)
        headers = HeaderParser(policy=compat32).parsestr(text, headersonly=True)
    return message_id(HeaderIndex(headers)) if headers is not None else ""
