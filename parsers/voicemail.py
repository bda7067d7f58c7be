"""Recognise a voicemail: a sound attachment, plus what the PBX said about the call.

Whether an attachment is sound, and in what format, is ``parsers.audiosniff``'s
call. Call metadata is read from headers first (``X-Asterisk-CallerID*``, the
``X-Asterisk-VM-*`` set, FreeSWITCH's ``X-Voicemail-Length``), then from the
stock Asterisk, FreePBX and FreeSWITCH body and subject layouts. Those are
admin-editable templates: every reader matches defensively, and a layout it
does not know leaves the field empty. Only the first 64 KB of a body is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from parsers.audiosniff import classify_audio
from parsers.model import Attachment, Pbx, Voicemail, VoicemailAudio
from parsers.text import clean_line

SCAN_CHARS = 64 * 1024
MAX_TRANSCRIPT_CHARS = 20_000
MAX_DURATION_SECONDS = 24 * 3600

_NO_CALLER = frozenset(
    {"an unknown caller", "unknown", "unknown caller", "<unknown>", "anonymous", "unavailable",
     "private", "restricted", "withheld", "desconocido", "anónimo"}
)  # fmt: skip
_ANGLE_CALLER = re.compile(r'^"?(?P<name>[^"<]*?)"?\s*<(?P<num>[^<>]*)>$')
_TRAILING_NUMBER = re.compile(r"^(?P<name>.*?)[\s,;:(-]*(?P<num>\+?\(?\d[\d\s().-]{0,30}\d)\)?$")
_URI_USER = re.compile(r"^(?:sips?:|tel:)?([^@;]*)", re.I)
_NUMBER_JUNK = re.compile(r"[\s().\-/]")
_NUMBER = re.compile(r"\+?[0-9]{2,20}")
_DURATION = re.compile(
    r"^\s*(?:(?P<h>\d{1,2}):(?P<hm>\d{2}):(?P<hs>\d{2})|(?P<m>\d{1,4}):(?P<s>\d{2})|(?P<n>\d{1,6}))\b",
    re.ASCII,
)
_ASTERISK_BODY = re.compile(
    r"\b(?:left|forwarded) an? (?P<dur>\d{1,4}:\d{2}) long (?:\w+ )?message "
    r"\(number (?P<num>\d{1,9})\) in mailbox (?P<box>[^\s,]{1,80}) from (?P<who>.{1,200}?), on ",
    re.I,
)
_ASTERISK_SUBJECT = re.compile(
    r"\bNew (?:(?P<flag>\w+) )?message (?P<num>\d{1,9}) in mailbox (?P<box>[^\s,;]{1,80})", re.I
)
_ASTERISK_ID = re.compile(r"^<?Asterisk-(?P<num>\d{1,9})-(?:\d+-)?(?P<box>[^@<>]{1,80}?)-\d+@")
_FREESWITCH_SUBJECT = re.compile(
    r"\b(?:(?P<dur>\d{1,6}(?::\d{2}){0,2}) sec )?Voicemail from (?P<who>.{1,200})$", re.I
)
_FREESWITCH_MARK = re.compile(r"\S+ sec Voicemail from ", re.I)
_FREEPBX_MARK = re.compile(r"\bThere is a new voicemail in mailbox\b", re.I)
_FS_CID = "attached@freeswitch.org"
_IN_MAILBOX = re.compile(r"\bin mailbox (?P<box>[\w.@+-]{1,80}?)[.:,;]?(?:\s|$)", re.I)
_FIELD_LINE = re.compile(r"^[\s>*]*(?P<key>[^\W\d_][\w ()/-]{0,30}?)\s*:\s*(?P<value>.*?)\s*$")
_CALLER_KEYS = ("from", "caller", "caller id", "callerid", "caller-id", "de", "llamante")
_NUMBER_KEYS = ("caller number", "from (number)", "caller id number", "número")
_NAME_KEYS = ("caller name", "from (name)", "caller id name")
_DURATION_KEYS = ("duration", "length", "duración", "duracion")
_MAILBOX_KEYS = ("mailbox", "account", "buzón", "buzon")
_TRANSCRIPT_LABEL = re.compile(
    r"^[ \t>*_#]*(?:voice ?mail |voice message )?"
    r"(?:transcription|transcript|transcripci[oó]n|transcrição)[ \t]*:[ \t]*(?P<rest>.*)$",
    re.I | re.M,
)
_SECTION_END = re.compile(r"^(?:[-_=*~]{2,}.*|[^\W\d_][\w ()/-]{0,30}:(?:\s.*)?)$")
_PLACEHOLDER = re.compile(
    r"^[\[({<]*\s*(?:\{\{.*\}\}|\$\{.*\}|none|n/?a|(?:no )?transcription (?:is )?"
    r"(?:not )?(?:available|unavailable)|not available|unavailable)\s*[\])}>.]*$",
    re.I,
)


@dataclass(frozen=True)
class _Reading:
    """What one header set or layout said; fields it did not give stay empty."""

    source: str
    number: str = ""
    name: str = ""
    duration: int | None = None
    mailbox: str = ""
    message_number: int | None = None
    urgent: bool = False
    orig_time: datetime | None = None


def _number(text: str) -> str:
    """A caller number without spaces, dashes, dots or brackets; "" unless it is one."""
    user = _URI_USER.match(text.strip().strip("<>"))
    compact = _NUMBER_JUNK.sub("", user.group(1) if user else "")
    return compact if _NUMBER.fullmatch(compact) else ""


def _name(text: str) -> str:
    name = clean_line(text, 200).strip(" \"'")
    if name.lower() in _NO_CALLER or _number(name):
        return ""
    return name


def _caller(text: str) -> tuple[str, str]:
    """(number, name) from ``"Name" <number>``, ``Name NUMBER``, a number or a name."""
    text = clean_line(text, 200).strip(" ,;")
    if text.lower() in _NO_CALLER:
        return "", ""
    if match := _ANGLE_CALLER.match(text):
        number = _number(match["num"])
        if not number and "@" in match["num"]:
            return "", ""  # a mail address (a quoted From: line), not a caller
        return number, _name(match["name"])
    if (match := _TRAILING_NUMBER.match(text)) and _number(match["num"]):
        return _number(match["num"]), _name(match["name"])
    return "", ("" if "@" in text else _name(text))


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _duration(text: str) -> int | None:
    """Seconds from ``H:MM:SS``, ``M:SS`` or a plain number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        return None
    if match["h"] is not None:
        seconds = int(match["h"]) * 3600 + int(match["hm"]) * 60 + int(match["hs"])
    elif match["m"] is not None:
        seconds = int(match["m"]) * 60 + int(match["s"])
    else:
        seconds = int(match["n"])
    return seconds if seconds <= MAX_DURATION_SECONDS else None


def _epoch(text: str | None) -> datetime | None:
    seconds = _int(text)
    if not seconds:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _header_readings(fields: dict[str, str]) -> Iterator[_Reading]:
    if "x-asterisk-callerid" in fields or "x-asterisk-calleridname" in fields:
        yield _Reading(
            "X-Asterisk-CallerID",
            number=_number(fields.get("x-asterisk-callerid", "")),
            name=_name(fields.get("x-asterisk-calleridname", "")),
        )
    vm = {
        k.removeprefix("x-asterisk-vm-"): v
        for k, v in fields.items()
        if k.startswith("x-asterisk-vm-")
    }
    if vm:
        yield _Reading(
            "X-Asterisk-VM-*",
            number=_number(vm.get("caller-id-num", "")),
            name=_name(vm.get("caller-id-name", "")),
            duration=_duration(vm.get("duration", "")),
            mailbox=clean_line(vm.get("mailbox") or vm.get("extension") or "", 80),
            message_number=_int(vm.get("message-num")),
            urgent=vm.get("flag", "").strip().lower() == "urgent",
            orig_time=_epoch(vm.get("orig-time")),
        )
    if "x-voicemail-length" in fields:
        yield _Reading("X-Voicemail-Length", duration=_duration(fields["x-voicemail-length"]))
    if "freeswitch" in fields.get("x-mailer", "").lower():
        # mod_voicemail writes X-Priority: 1 for a message left urgent, 3 otherwise.
        yield _Reading("X-Priority", urgent=fields.get("x-priority", "").strip() == "1")


def _body_fields(text: str) -> dict[str, str]:
    """``Key: value`` lines of a body (first of each key), keys lower-cased."""
    found: dict[str, str] = {}
    for line in text.splitlines()[:300]:
        match = _FIELD_LINE.match(line)
        if match and match["value"]:
            found.setdefault(" ".join(match["key"].lower().split()), match["value"])
    return found


def _first(fields: dict[str, str], keys: tuple[str, ...]) -> tuple[str, str]:
    return next(((key, fields[key]) for key in keys if key in fields), ("", ""))


def _field_readings(fields: dict[str, str]) -> Iterator[_Reading]:
    """The labelled-line layouts: FreePBX (From/Length/Date), FreeSWITCH, hosted PBXs."""
    key, value = _first(fields, _CALLER_KEYS)
    number, name = _caller(value) if key else ("", "")
    yield _Reading(f"body {key.capitalize()}:", number=number, name=name)
    key, value = _first(fields, _NUMBER_KEYS)
    yield _Reading(f"body {key.capitalize()}:", number=_number(value))
    key, value = _first(fields, _NAME_KEYS)
    yield _Reading(f"body {key.capitalize()}:", name=_name(value))
    key, value = _first(fields, _DURATION_KEYS)
    yield _Reading(f"body {key.capitalize()}:", duration=_duration(value))
    key, value = _first(fields, _MAILBOX_KEYS)
    words = value.split()
    yield _Reading(f"body {key.capitalize()}:", mailbox=clean_line(words[0], 80) if words else "")


def _text_readings(subject: str, body: str, message_id: str) -> Iterator[_Reading]:
    flat = " ".join(body.split())
    if match := _ASTERISK_BODY.search(flat):
        number, name = _caller(match["who"])
        yield _Reading(
            "body (Asterisk layout)",
            number=number,
            name=name,
            duration=_duration(match["dur"]),
            mailbox=match["box"],
            message_number=_int(match["num"]),
        )
    yield from _field_readings(_body_fields(body))
    if match := _FREESWITCH_SUBJECT.search(subject):
        number, name = _caller(match["who"])
        duration = _duration(match["dur"]) if match["dur"] else None
        yield _Reading("Subject", number=number, name=name, duration=duration)
    if match := _ASTERISK_SUBJECT.search(subject):
        urgent = (match["flag"] or "").lower() == "urgent"
        yield _Reading(
            "Subject", mailbox=match["box"], message_number=_int(match["num"]), urgent=urgent
        )
    for where, text in (("Subject", subject), ("body", flat)):
        if match := _IN_MAILBOX.search(text):
            yield _Reading(where, mailbox=match["box"])
    if match := _ASTERISK_ID.match(message_id.strip()):
        yield _Reading("Message-ID", mailbox=match["box"], message_number=_int(match["num"]))


def _pbx(
    fields: dict[str, str], subject: str, body: str, audio: Sequence[Attachment]
) -> tuple[Pbx, str]:
    """Which PBX's shape the message has, and the evidence; FreePBX before Asterisk."""
    checks: tuple[tuple[Pbx, str, Callable[[], object]], ...] = (
        ("freeswitch", "X-Mailer", lambda: "freeswitch" in fields.get("x-mailer", "").lower()),
        ("freeswitch", "X-Voicemail-Length", lambda: "x-voicemail-length" in fields),
        ("freeswitch", "Content-ID", lambda: any(a.content_id.lower() == _FS_CID for a in audio)),
        ("freeswitch", "Subject", lambda: _FREESWITCH_MARK.match(subject)),
        ("freepbx", "Subject", lambda: subject.strip().lower() == "pbx voicemail notification"),
        ("freepbx", "body (FreePBX layout)", lambda: _FREEPBX_MARK.search(body)),
        ("asterisk", "X-Asterisk-*", lambda: any(k.startswith("x-asterisk-") for k in fields)),
        ("asterisk", "Message-ID", lambda: _ASTERISK_ID.match(fields.get("message-id", ""))),
        ("asterisk", "Subject", lambda: _ASTERISK_SUBJECT.search(subject)),
        (
            "asterisk",
            "body (Asterisk layout)",
            lambda: _ASTERISK_BODY.search(" ".join(body.split())),
        ),
    )
    return next(((pbx, source) for pbx, source, test in checks if test()), ("", ""))


def pbx_transcript(body: str) -> str:
    """The text under a ``Transcription:`` (``Transcript:``, ``Transcripción:``) label.

    The section runs from the label to the first blank line, separator line or
    ``Key: value`` line after some text; placeholders ("not available",
    unexpanded ``{{…}}``) count as no transcript.
    """
    match = _TRANSCRIPT_LABEL.search(body[:SCAN_CHARS])
    if match is None:
        return ""
    lines: list[str] = []
    for line in [match["rest"], *body[match.end() : SCAN_CHARS].split("\n")[1:200]]:
        stripped = line.strip()
        if lines and (not stripped or _SECTION_END.match(stripped)):
            break
        if stripped:
            lines.append(stripped)
    text = " ".join(lines)
    return "" if _PLACEHOLDER.match(text) else text[:MAX_TRANSCRIPT_CHARS]


@dataclass
class _Chosen:
    """Each call field from the first reading that gave it, and where that was.

    ``sources`` maps a ``Voicemail`` field name to its reading's source, in the
    order the fields were first filled.
    """

    caller_number: str = ""
    caller_name: str = ""
    duration_seconds: int | None = None
    mailbox: str = ""
    message_number: int | None = None
    urgent: bool = False
    orig_time: datetime | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, reading: _Reading) -> None:
        """Fill the fields still empty that ``reading`` gives (0 counts as not given)."""
        if reading.number and not self.caller_number:
            self.caller_number = reading.number
            self.sources["caller_number"] = reading.source
        if reading.name and not self.caller_name:
            self.caller_name = reading.name
            self.sources["caller_name"] = reading.source
        if reading.duration and self.duration_seconds is None:
            self.duration_seconds = reading.duration
            self.sources["duration_seconds"] = reading.source
        if reading.mailbox and not self.mailbox:
            self.mailbox = reading.mailbox
            self.sources["mailbox"] = reading.source
        if reading.message_number and self.message_number is None:
            self.message_number = reading.message_number
            self.sources["message_number"] = reading.source
        if reading.urgent and not self.urgent:
            self.urgent = True
            self.sources["urgent"] = reading.source
        if reading.orig_time is not None and self.orig_time is None:
            self.orig_time = reading.orig_time
            self.sources["orig_time"] = reading.source

    def prefer_accented_name(self, readings: Sequence[_Reading]) -> None:
        """Asterisk strips every non-ASCII byte from X-Asterisk-CallerIDName; a body
        that shows the same name with its accents is the better reading."""
        if not self.caller_name:
            return
        for reading in readings:
            if not reading.name.isascii() and _ascii(reading.name) == _ascii(self.caller_name):
                self.caller_name = reading.name
                self.sources["caller_name"] = reading.source  # keeps its place in the order
                return


def _ascii(text: str) -> str:
    return " ".join("".join(c for c in text if c.isascii()).split())


def detect_voicemail(
    *,
    headers: Sequence[tuple[str, str]],
    subject: str,
    text: str,
    attachments: Sequence[Attachment],
) -> Voicemail | None:
    """A ``Voicemail`` when an attachment is sound, else None; never raises on content."""
    audio = [
        VoicemailAudio(index, *found)
        for index, attachment in enumerate(attachments)
        if (found := classify_audio(attachment.content_type, attachment.content)) is not None
    ]
    if not audio:
        return None
    fields: dict[str, str] = {}
    for name, value in headers:
        fields.setdefault(name.strip().lower(), value)
    if fields.get("x-asterisk-vm-message-type", "message").strip().lower() not in ("message", ""):
        return None  # an Asterisk greeting-change notice carries audio but no call
    body = text[:SCAN_CHARS]
    readings = [
        *_header_readings(fields),
        *_text_readings(subject, body, fields.get("message-id", "")),
    ]
    chosen = _Chosen()
    for reading in readings:
        chosen.add(reading)
    chosen.prefer_accented_name(readings)
    sources = list(chosen.sources.items())
    pbx, pbx_source = _pbx(fields, subject, body, [attachments[a.index] for a in audio])
    sources += [("pbx", pbx_source)] if pbx else []
    transcript = pbx_transcript(body)
    sources += [("pbx_transcript", "body")] if transcript else []
    return Voicemail(
        audio=tuple(audio),
        caller_number=chosen.caller_number,
        caller_name=chosen.caller_name,
        duration_seconds=chosen.duration_seconds,
        mailbox=chosen.mailbox,
        message_number=chosen.message_number,
        urgent=chosen.urgent,
        orig_time=chosen.orig_time,
        pbx=pbx,
        pbx_transcript=transcript,
        source_fields=tuple(sources),
    )
