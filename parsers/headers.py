"""Read top-level header fields: index, subject, ids, date and the decoded list.

Values come from ``Message.raw_items()`` (compat32 keeps them as written, 8-bit
bytes as surrogates), are unfolded, read as UTF-8 (Windows-1252 when they are
not UTF-8), RFC 2047-decoded where the field is text, and made one-line safe
(CR, LF, NUL and other controls become spaces; SEC-01, SEC-05).
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message

from parsers.rfc2047 import decode_words
from parsers.text import clean_line, header_str

MAX_SUBJECT_CHARS = 998
MAX_HEADER_VALUE_CHARS = 4096
MAX_IDS = 100

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ID = re.compile(r"<([^<>]*)>")
_ID_JUNK = re.compile("[\\s\x00-\x1f\x7f-\x9f\ud800-\udfff<>]")
# Zones ``email.utils.parsedate_tz`` knows; it reports a missing or unknown one as +0000.
_KNOWN_ZONE = re.compile(r"(?:^|[\s0-9])(?:[+-][0-9]{3,4}|UTC?|GMT|Z|[ECMPA][SD]T)(?:\s|$)", re.I)
_COMMENT = re.compile(r"\([^()]*\)")


class HeaderIndex:
    """Top-level header values by lower-cased name, unfolded and read as text."""

    def __init__(self, msg: Message) -> None:
        self._values: dict[str, list[tuple[str, bool]]] = {}
        for name, raw in msg.raw_items():
            text, bad_8bit = header_str(str(raw))
            key = header_str(str(name))[0].strip().lower()
            self._values.setdefault(key, []).append((_FOLD.sub("", text), bad_8bit))

    def all(self, name: str) -> list[str]:
        """Every value of the field ``name`` (not RFC 2047-decoded)."""
        return [value for value, _ in self._values.get(name, [])]

    def first(self, name: str) -> str | None:
        """The first value of ``name``, or None when the field is absent."""
        values = self._values.get(name)
        return values[0][0] if values else None

    def bad_8bit(self, name: str) -> bool:
        """Whether any value of ``name`` held 8-bit bytes that were not UTF-8."""
        return any(bad for _, bad in self._values.get(name, []))


def decoded_line(value: str, max_chars: int) -> tuple[str, list[str]]:
    """RFC 2047-decode a text field value and make it one safe line."""
    text, defects = decode_words(value)
    return clean_line(text, max_chars), defects


def subject(index: HeaderIndex) -> tuple[str, list[str]]:
    """The decoded, one-line Subject capped at 998 characters ("" when absent)."""
    value = index.first("subject")
    if value is None:
        return "", []
    return decoded_line(value, MAX_SUBJECT_CHARS)


def _clean_id(text: str) -> str:
    return _ID_JUNK.sub("", text)[:MAX_SUBJECT_CHARS]


def message_id(index: HeaderIndex) -> str:
    """The Message-ID without angle brackets or whitespace; "" when absent or empty."""
    value = index.first("message-id")
    if value is None:
        return ""
    match = _ID.search(value)
    if match is not None:
        return _clean_id(match.group(1))
    words = value.split()
    return _clean_id(words[0]) if words else ""


def id_list(values: list[str]) -> tuple[str, ...]:
    """Message ids from In-Reply-To or References: bare, deduplicated, in order.

    Ids are taken from ``<...>``; a value without any brackets contributes its
    words that contain ``@`` (broken mailers). Past 100 ids the first and the
    last 99 are kept: the thread root and the nearest ancestors matter most.
    """
    ids: list[str] = []
    for value in values:
        found = [_clean_id(m) for m in _ID.findall(value)]
        if not found and "<" not in value:
            found = [_clean_id(w) for w in value.split() if "@" in w]
        ids.extend(found)
    unique = [i for i in dict.fromkeys(ids) if i]
    if len(unique) > MAX_IDS:
        unique = unique[:1] + unique[-(MAX_IDS - 1) :]
    return tuple(unique)


def parse_date(index: HeaderIndex) -> tuple[datetime | None, list[str]]:
    """The Date field as an aware UTC datetime; None (with a defect) when unusable.

    ``-0000`` means UTC (RFC 5322 §3.3). A date without a zone, or with a zone
    the stdlib does not know (``CEST``), is not guessed: it gives None.
    """
    value = index.first("date")
    if value is None:
        return None, []
    value = clean_line(value, 256)
    try:
        parsed = email.utils.parsedate_tz(value)
    except Exception:  # the stdlib date parser raises on some garbage
        parsed = None
    if parsed is None:
        return None, ["Date unparseable"]
    offset = parsed[9]
    if offset is None or not _KNOWN_ZONE.search(_COMMENT.sub(" ", value)):
        return None, ["Date has no usable time zone"]
    try:
        year, month, day, hour, minute, second = parsed[:6]
        local = datetime(
            year,
            month,
            day,
            hour,
            minute,
            min(second, 59),
            tzinfo=timezone(timedelta(seconds=offset)),
        )
        return local.astimezone(UTC), []
    except (ValueError, OverflowError, TypeError):
        return None, ["Date out of range"]


def header_pairs(msg: Message, max_total: int) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """All top-level fields as decoded one-line (name, value) pairs.

    Each value is capped at 4096 characters; the list stops once names and
    values add up to ``max_total`` characters.
    """
    pairs: list[tuple[str, str]] = []
    total = 0
    for name, raw in msg.raw_items():
        key = clean_line(header_str(str(name))[0], 200)
        text = _FOLD.sub("", header_str(str(raw))[0])
        value = clean_line(decode_words(text)[0], MAX_HEADER_VALUE_CHARS)
        total += len(key) + len(value)
        if total > max_total:
            return tuple(pairs), [f"header list capped at {max_total} characters"]
        pairs.append((key, value))
    return tuple(pairs), []
