"""Outbound mail (acks, follow-ups, last notices, agent replies, breach notices) from templates.

Pure composition: no database, no network. ``daemon/templates/<lang>/<kind>.txt``
ship in es, en and bg; a same-named file under ``[outbound] templates`` replaces
one. A file is ``Subject: <template>``, a blank line, then the body, both
``string.Template``; all are checked at load so a typo stops the daemon at start,
not at 3 a.m. The subject of mail a customer answers (``THREADED``) must carry
``[$ref]``: threading finds replies by it. A body line of nothing but
placeholders that all came out empty is dropped.

Placeholders (``FIELDS``): every kind has ``customer_name`` (default ``to_name``,
else ``to``) and ``desk_name`` (default the sender's name), every kind but breach
``ref`` and ``subject``;
the caller passes the rest, already formatted, in ``Outgoing.values``:
ack ``respond_by``, ``calendar_note`` (may be ""); followup ``followup_number``,
``waiting_since``, ``close_on``; last_notice ``close_on``, ``reopen_within``;
reply ``body`` (may span lines), ``agent``; breach (one digest per notify address
and scheduler batch) ``count``, ``team`` and ``breaches``, a line per breached
deadline (may span lines). A language not shipped gets English, the one a
stranger most likely reads.

Headers (RFC 3834, LOOP-08): our ``Message-ID``, ``In-Reply-To``/``References``,
``Auto-Submitted`` on every mail (``no`` on a human's reply, so each mail says
what it is), ``X-Auto-Response-Suppress: All``. ``Precedence: bulk`` is
non-standard but vacation(1), Exchange and many responders honour it, so it goes
on automatic mail only: a person's reply is not bulk. The UTF-8 body is 7-bit,
never 8bit, so it passes relays without 8BITMIME and no line nears 998 octets
whatever an agent pastes; it is the shorter of quoted-printable
(es, en: readable on the wire) and base64 (bg: quoted-printable triples Cyrillic),
chosen as the stdlib chooses (``daemon.mailwire.set_text``).

SEC-01: subject, names and values are untrusted. Encoded words are decoded first
(``email`` itself decodes ``=?utf-8?q?=0D=0A?=`` on assignment and writes a bare
CRLF), controls become one space, and a ``=?`` left over is broken up so nothing
decodes it again. Headers carrying such text or ids are folded by
``daemon.mailwire``, not by CPython 3.11's folder (why: its docstring). The bytes are
parsed back and must hold exactly the headers we set and one recipient.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, get_args

from daemon.errors import ConfigError
from daemon.mailwire import folded, ids, mailbox, set_text

Kind = Literal["ack", "followup", "last_notice", "reply", "breach"]
KINDS: tuple[Kind, ...] = get_args(Kind)
LANGUAGES = ("es", "en", "bg")
FALLBACK_LANGUAGE = "en"

_COMMON = frozenset({"ref", "subject", "customer_name", "desk_name"})
FIELDS: dict[Kind, frozenset[str]] = {
    "ack": _COMMON | {"respond_by", "calendar_note"},
    "followup": _COMMON | {"followup_number", "waiting_since", "close_on"},
    "last_notice": _COMMON | {"close_on", "reopen_within"},
    "reply": _COMMON | {"body", "agent"},
    "breach": _COMMON - {"ref", "subject"} | {"count", "team", "breaches"},
}
# Kinds a customer answers: their subject carries the [$ref] tag replies thread by. A
# breach digest goes to the desk's own people, names many tickets and answers none.
THREADED: frozenset[Kind] = frozenset({"ack", "followup", "last_notice", "reply"})
_MULTILINE = frozenset({"body", "breaches"})  # values that may span lines
MAX_REFERENCES = 20
_MAX_ID = 250  # a longer id cannot be folded and would be encoded, breaking threading


class _Registry(HeaderRegistry):
    """The stdlib's header factory, each header's class built once.

    CPython 3.11's ``HeaderRegistry.__getitem__`` builds a new class with ``type()`` at
    every look-up, ~13 µs, and composing one mail looks up ~24 (every header set, and
    again to read its ``max_count`` and to fold it): a third of ``compose``'s time.
    The classes are the same ones; only their creation is saved.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


# CRLF on the wire; 7bit makes set_content pick quoted-printable or base64, never 8bit.
_HEADERS = _Registry()  # both policies map names to the same classes: one cache
_POLICY = policy.SMTP.clone(cte_type="7bit", header_factory=_HEADERS)
# ``policy.default``'s parsing, faster: decoding encoded words.
_DEFAULT = policy.default.clone(header_factory=_HEADERS)
# The composed bytes read back as a relay reads them: header names and raw values, with no
# structured parse (a quarter of the default policy's time) and no decoding of encoded
# words, which no MTA decodes to find recipients.
_READ_BACK = BytesParser(policy=policy.compat32)
_HEADER_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")
_BODY_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_MSG_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")  # printable ASCII without < > or spaces
_ADDRESS_PROBLEMS = (
    (r"[\x00-\x1f\x7f]", "contains a control character (CR, LF, NUL...)"),
    (r"[,;]", "holds a list; a recipient is exactly one address"),
    (r"[<>]", "has angle brackets; give the bare addr-spec, the name apart"),
    (r"\s", "contains whitespace"),
    (r"[\"()\\\[\]:]", "has quotes, comments or brackets; give a plain local@domain"),
    (r"[^\x00-\x7f]", "is not ASCII (outbound mail does not use SMTPUTF8)"),
    (r"^[^@]*$|@.*@|^@|@$", "is not one local@domain"),
    (r"^.{255,}$", "is longer than 254 characters (RFC 5321)"),
)
_ADDRESS_CHECKS = tuple((re.compile(pattern), problem) for pattern, problem in _ADDRESS_PROBLEMS)
# One search finds a good address good (every queued mail's recipient); the checks one by
# one only name what is wrong with a bad one.
_ANY_ADDRESS_PROBLEM = re.compile("|".join(f"(?:{pattern})" for pattern, _ in _ADDRESS_PROBLEMS))
_ONLY_PLACEHOLDERS = re.compile(r"(?:\s*\$(?:[_a-z][_a-z0-9]*|\{[_a-z][_a-z0-9]*\}))+\s*", re.I)


def _address_problem(value: str) -> str | None:
    if not _ANY_ADDRESS_PROBLEM.search(value):
        return None
    return next(problem for pattern, problem in _ADDRESS_CHECKS if pattern.search(value))


class TemplateError(ConfigError, ValueError):
    """Raised at load for a template that cannot be used; names the file, problem and fix."""


@dataclass(frozen=True, slots=True)
class Template:
    """One kind in one language: ``string.Template`` sources of subject and body."""

    subject: str
    body: str


def _read(path: Path | Traversable, kind: Kind) -> Template:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # editors on Windows add a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{where}: cannot read as UTF-8 text ({exc}); fix the file") from exc
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines[0].startswith("Subject:"):
        raise TemplateError(f"{where}: first line must be 'Subject: <template>'; add it")
    if len(lines) < 2 or lines[1].strip():
        raise TemplateError(f"{where}: the Subject line must be followed by one blank line")
    tpl = Template(lines[0].removeprefix("Subject:").strip(), "\n".join(lines[2:]).rstrip() + "\n")
    if kind in THREADED and "[$ref]" not in tpl.subject and "[${ref}]" not in tpl.subject:
        raise TemplateError(f"{where}: subject lacks the tag [$ref] replies thread by; add it")
    allowed = ", ".join(f"${name}" for name in sorted(FIELDS[kind]))
    for part in (tpl.subject, tpl.body):
        source = string.Template(part)
        if not source.is_valid():
            raise TemplateError(f"{where}: invalid placeholder; use $name or ${{name}}, $$ for $")
        for name in source.get_identifiers():
            if name not in FIELDS[kind]:
                raise TemplateError(f"{where}: unknown placeholder ${name}; use one of {allowed}")
    return tpl


def _check_override_dir(root: Path) -> None:
    # A misspelt file name would silently keep the shipped text: refuse it instead.
    if not root.is_dir():
        raise TemplateError(f"{root}: templates directory does not exist; create it or unset it")
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name not in LANGUAGES:
            raise TemplateError(f"{entry}: unknown language; use one of {', '.join(LANGUAGES)}")
        for file in entry.glob("*.txt"):
            if file.stem not in KINDS:
                raise TemplateError(f"{file}: unknown kind; name it one of {', '.join(KINDS)}.txt")


@dataclass(frozen=True, slots=True)
class Templates:
    """Every kind in every language, checked; build with ``Templates.load``."""

    by_key: Mapping[tuple[Kind, str], Template]

    @classmethod
    def load(cls, override_dir: str | Path | None = None) -> Templates:
        """Shipped templates, each replaced by ``override_dir/<lang>/<kind>.txt`` if present."""
        root = Path(override_dir) if override_dir else None
        if root is not None:
            _check_override_dir(root)
        shipped = resources.files("daemon").joinpath("templates")
        by_key: dict[tuple[Kind, str], Template] = {}
        for lang, kind in ((lang, kind) for lang in LANGUAGES for kind in KINDS):
            own = root / lang / f"{kind}.txt" if root else None
            path = own if own and own.is_file() else shipped / lang / f"{kind}.txt"
            by_key[kind, lang] = _read(path, kind)
        return cls(by_key)

    def get(self, kind: Kind, language: str) -> Template:
        """The template for ``kind`` in ``language``, English for a language not shipped."""
        return self.by_key[kind, language_for(language)]


def language_for(language: str) -> str:
    """``es-ES``/``ES`` -> ``es``; a language without templates -> ``en``."""
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in LANGUAGES else FALLBACK_LANGUAGE


@dataclass(frozen=True, slots=True)
class Sender:
    """Who our mail is from; ``envelope_from`` "" is the null reverse-path ``<>``."""

    from_address: str
    from_name: str
    envelope_from: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One mail to compose; ``subject``, names and values are inbound data, untrusted."""

    kind: Kind
    _: KW_ONLY
    to: str
    to_name: str = ""
    language: str = "es"
    ref: str
    subject: str
    in_reply_to: str = ""  # Message-ID without angle brackets; "" none
    references: tuple[str, ...] = ()
    reply_to: str = ""  # e.g. the plus-address carrying the reply token
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Composed:
    """A mail ready for the relay: ``raw`` has CRLF line endings, as it goes on the wire."""

    message_id: str
    recipient: str
    envelope_from: str  # "" = null sender
    subject: str
    raw: bytes


def auto_submitted(kind: Kind) -> str:
    """RFC 3834 value: an ack answers a message, timers generate the rest, people write replies."""
    return {"ack": "auto-replied", "reply": "no"}.get(kind, "auto-generated")


def header_text(value: str) -> str:
    """``value`` safe for one header: encoded words decoded, controls to one space."""
    if "=?" in value:  # only encoded words need the (slow) header parser
        with suppress(ValueError, LookupError, IndexError):  # undecodable: keep it as text
            value = str(_DEFAULT.header_factory("subject", _HEADER_JUNK.sub(" ", value)))
    return " ".join(_HEADER_JUNK.sub(" ", value).split()).replace("=?", "= ?")


def body_text(value: str) -> str:
    """``value`` safe for a body: LF line endings, controls other than tab and newline gone."""
    return _BODY_JUNK.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def addr_spec(value: str, what: str) -> str:
    """``value`` if it is one plain ``local@domain``; else ValueError naming the problem."""
    if problem := _addr_spec_problem(value):
        raise ValueError(f"{what} address {value!r} {problem}")
    return value


@lru_cache(maxsize=4096)
def _addr_spec_problem(value: str) -> str | None:
    # Cached: every mail checks the desk's own From and envelope sender again, and the
    # strict parse is ~0.1 ms. The answer depends on the text alone.
    if problem := _address_problem(value):
        return problem
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError) as exc:
        return f"is not a valid addr-spec ({exc})"
    return None


def _msg_ids(given: tuple[str, ...], last: str) -> list[str]:
    # Inbound ids that cannot be written safely are left out; the subject tag still threads.
    clean: list[str] = []
    for raw in (*given, last):
        mid = raw.strip().removeprefix("<").removesuffix(">")
        if len(mid) <= _MAX_ID and _MSG_ID.fullmatch(mid) and mid not in clean:
            clean.append(mid)
    if len(clean) > MAX_REFERENCES:  # RFC 5322 practice: keep the root and the newest
        clean = clean[:1] + clean[1 - MAX_REFERENCES :]
    return clean


# Per kind: the values a caller may give (ref and subject come from the ticket) and those
# it must give; worked out once, not for every mail a scheduler pass queues.
_CALLER_FIELDS = {k: (f - {"ref", "subject"}, f - _COMMON) for k, f in FIELDS.items()}


def check(kind: Kind, values: Mapping[str, str], to: str) -> None:
    """What ``compose`` would refuse in a kind, its values or its recipient: ValueError.

    Run when a mail is queued, so the caller that owes it hears of the problem then,
    not the sender at some later claim.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    allowed, required = _CALLER_FIELDS[kind]
    if unknown := values.keys() - allowed:
        raise ValueError(f"{kind}: unknown values {sorted(unknown)}; allowed {sorted(allowed)}")
    if missing := required - values.keys():
        raise ValueError(f"{kind}: missing values {sorted(missing)}")
    if problem := _address_problem(to):  # the full parse waits for ``compose``
        raise ValueError(f"recipient address {to!r} {problem}")


def _values(out: Outgoing, sender: Sender) -> dict[str, str]:
    ref = header_text(out.ref)
    # The ticket's subject may already carry our tag; the template adds it once.
    subject = " ".join(header_text(out.subject).replace(f"[{ref}]", " ").split())
    values = {"customer_name": out.to_name or out.to, "desk_name": sender.from_name}
    return values | dict(out.values) | {"ref": ref, "subject": subject}


def _body(source: str, values: Mapping[str, str]) -> str:
    lines = []
    for line in source.split("\n"):
        text = string.Template(line).substitute(values)
        if text.strip() or not _ONLY_PLACEHOLDERS.fullmatch(line):
            lines.append(text)
    return body_text("\n".join(lines))


def compose(
    out: Outgoing, *, sender: Sender, message_id: str, templates: Templates, now: datetime
) -> Composed:
    """The mail ``out`` describes, from ``sender``; ValueError for a bad address or value."""
    check(out.kind, out.values, out.to)
    addr_spec(out.to, "recipient")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: the Date header needs a real offset")
    if len(message_id) > _MAX_ID or not _MSG_ID.fullmatch(message_id):
        raise ValueError(f"message_id {message_id!r} is not id@domain without angle brackets")
    to = out.to
    from_address = addr_spec(sender.from_address, "from")
    if sender.envelope_from:
        addr_spec(sender.envelope_from, "envelope-from")
    if out.kind in THREADED and not header_text(out.ref):
        raise ValueError("ref must not be empty: the subject tag threads replies")
    lang = language_for(out.language)
    tpl = templates.get(out.kind, lang)
    values = _values(out, sender)
    subject = header_text(
        string.Template(tpl.subject).substitute({k: header_text(v) for k, v in values.items()})
    )

    msg = EmailMessage(policy=_POLICY)
    # Our own values, ASCII and short, are stored folded as they are: the email package
    # would parse each into a header object and fold it back (a fifth of a mail's cost).
    msg["Date"] = folded("Date", format_datetime(now), encode=False)
    msg["From"] = mailbox("From", header_text(sender.from_name), from_address)
    msg["To"] = mailbox("To", header_text(out.to_name), to)
    msg["Subject"] = folded("Subject", subject)
    msg["Message-ID"] = ids("Message-ID", [message_id])
    if in_reply_to := _msg_ids((), out.in_reply_to):
        msg["In-Reply-To"] = ids("In-Reply-To", in_reply_to)
    if refs := _msg_ids(out.references, out.in_reply_to):
        msg["References"] = ids("References", refs)
    if out.reply_to:
        msg["Reply-To"] = mailbox("Reply-To", "", addr_spec(out.reply_to, "reply-to"))
    msg["Auto-Submitted"] = folded("Auto-Submitted", auto_submitted(out.kind))
    msg["X-Auto-Response-Suppress"] = folded("X-Auto-Response-Suppress", "All")
    if out.kind != "reply":
        msg["Precedence"] = folded("Precedence", "bulk")
    # Only the agent's text may span lines; names and dates stay on theirs.
    body = {k: body_text(v) if k in _MULTILINE else header_text(v) for k, v in values.items()}
    set_text(msg, _body(tpl.body, body))  # 7-bit: see the docstring
    msg["Content-Language"] = folded("Content-Language", lang)
    raw = msg.as_bytes()
    verify(raw, msg, to)
    return Composed(message_id, to, sender.envelope_from, subject, raw)


def verify(raw: bytes, msg: EmailMessage, to: str) -> None:
    """ValueError unless ``raw`` holds exactly ``msg``'s headers and the one recipient ``to``.

    Belt and braces for SEC-01: whatever the email package does with odd input, the bytes
    sent must parse back to the headers we set and to one recipient. The headers alone:
    the checks read nothing else, and the body's MIME parse was 40 % of the read-back.
    """
    parsed = _READ_BACK.parsebytes(raw, headersonly=True)
    if sorted(k.lower() for k in parsed) != sorted(k.lower() for k in msg):
        raise ValueError(f"composed mail to {to} parses to other headers; refusing to send it")
    if [addr for _, addr in getaddresses(parsed.get_all("To", []))] != [to]:
        raise ValueError(f"composed mail to {to} parses to other recipients; refusing to send it")
