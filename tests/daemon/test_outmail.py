"""Outbound mail composition: every kind in every language, headers per RFC 3834 and LOOP-08,
no header injection from inbound text (SEC-01), and templates that fail at load, not at send."""

# ruff: noqa: RUF001 - the Bulgarian texts are Cyrillic on purpose

from __future__ import annotations

import email
import string
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.mailwire import encoded_words, set_text
from daemon.outbound import nonces, when
from daemon.outmail import (
    _POLICY,
    FIELDS,
    KINDS,
    LANGUAGES,
    THREADED,
    Composed,
    Kind,
    Outgoing,
    Sender,
    TemplateError,
    Templates,
    auto_submitted,
    compose,
    language_for,
    verify,
)

NOW = datetime(2025, 3, 4, 9, 30, tzinfo=timezone(timedelta(hours=1)))
SENDER = Sender("soporte@example.com", "Soporte Ñandú", "")
MESSAGE_ID = "b-42.kq3xv7pd.0001.buzon@example.com"
TEMPLATES = Templates.load()

VALUES: dict[Kind, dict[str, str]] = {
    "ack": {"respond_by": "RESPOND-BY-5-MARCH", "calendar_note": "CALENDAR-NOTE"},
    "followup": {
        "followup_number": "2",
        "waiting_since": "WAITING-SINCE-1-MARCH",
        "close_on": "CLOSE-ON-10-MARCH",
    },
    "last_notice": {"close_on": "CLOSE-ON-10-MARCH", "reopen_within": "REOPEN-7-DAYS"},
    "reply": {"body": "Line one of the answer.\nLine two.", "agent": "AGENT-LUCIA"},
    "breach": {
        "count": "2",
        "team": "TEAM-BILLING",
        "breaches": "B-42  respond  DEADLINE-4-MARCH  La web\nB-43  assign  DEADLINE-5  Factura",
    },
}
# Words only that language's template for that kind says (subject or body).
MARKERS: dict[tuple[Kind, str], str] = {
    ("ack", "es"): "Le responderemos antes de",
    ("ack", "en"): "We will reply by",
    ("ack", "bg"): "Ще Ви отговорим до",
    ("followup", "es"): "cerraremos la incidencia",
    ("followup", "en"): "we will close the ticket",
    ("followup", "bg"): "ще затворим запитването",
    ("last_notice", "es"): "cerramos la incidencia",
    ("last_notice", "en"): "we are closing ticket",
    ("last_notice", "bg"): "затваряме запитване",
    ("reply", "es"): "[B-42] Re:",
    ("reply", "en"): "[B-42] Re:",
    ("reply", "bg"): "[B-42] Отг:",
    ("breach", "es"): "Han vencido los plazos",
    ("breach", "en"): "deadlines of these tickets",
    ("breach", "bg"): "изтекоха",
}


def _out(kind: Kind = "ack", **kw: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "to": "ana@example.net",
        "to_name": "Ana Pérez",
        "language": "es",
        "ref": "B-42",
        "subject": "No puedo entrar",
        "in_reply_to": "CAF-original.1@mail.example.net",
        "references": ("root.0@mail.example.net",),
        "reply_to": "soporte+b-42.kq3xv7pd@example.com",
        "values": VALUES[kind],
    }
    return Outgoing(kind, **(fields | kw))


def _compose(out: Outgoing, templates: Templates = TEMPLATES) -> Composed:
    return compose(out, sender=SENDER, message_id=MESSAGE_ID, templates=templates, now=NOW)


def _parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def _text(parsed: EmailMessage) -> str:
    # The decoded body keeps the wire's CRLF; compare with the LF the templates use.
    return cast(str, parsed.get_content()).replace("\r\n", "\n")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_and_language_composes_with_loop_headers(kind: Kind, language: str) -> None:
    """Each template renders in its language with every LOOP-08 header and all its values."""
    done = _compose(_out(kind, language=language))
    parsed = _parse(done.raw)
    body = _text(parsed)

    assert parsed["Auto-Submitted"] == auto_submitted(kind)
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["Precedence"] == (None if kind == "reply" else "bulk")
    assert parsed["Message-ID"] == f"<{MESSAGE_ID}>"
    assert parsed["In-Reply-To"] == "<CAF-original.1@mail.example.net>"
    assert parsed["References"] == "<root.0@mail.example.net> <CAF-original.1@mail.example.net>"
    assert parsed["Reply-To"] == "soporte+b-42.kq3xv7pd@example.com"
    assert parsed["Date"] == format_datetime(NOW)
    assert parsed["Content-Language"] == language
    assert parsed["From"].addresses[0].display_name == "Soporte Ñandú"
    assert parsed["From"].addresses[0].addr_spec == "soporte@example.com"
    assert parsed["To"].addresses[0].addr_spec == "ana@example.net"
    assert parsed["Subject"] == done.subject
    if kind in THREADED:  # a customer answers it: the tag threads the answer
        assert parsed["Subject"].startswith("[B-42] ")
        assert "No puedo entrar" in done.subject
    else:  # the breach digest: the desk's people, many tickets, nothing to thread
        assert "[B-42]" not in done.subject and VALUES[kind]["count"] in done.subject
    assert MARKERS[kind, language] in done.subject + body
    assert "B-42" in body
    for name, value in VALUES[kind].items():
        assert value in done.subject + body, name
    assert "$" not in body + done.subject
    assert done.recipient == "ana@example.net"
    assert done.envelope_from == ""
    assert done.message_id == MESSAGE_ID


def test_auto_submitted_says_who_wrote_the_mail() -> None:
    """RFC 3834: an ack answers a message, timers generate the rest, a human's reply is "no"."""
    assert [auto_submitted(k) for k in KINDS] == [
        "auto-replied",
        "auto-generated",
        "auto-generated",
        "no",
        "auto-generated",
    ]


@pytest.mark.parametrize(
    "subject",
    [
        "Hi\r\nBcc: evil@x",
        "Hi\nBcc: evil@x",
        "Hi\rBcc: evil@x",
        "=?utf-8?q?Hi=0D=0ABcc:_evil@x?=",
        "=?utf-8?b?SGkNCkJjYzogZXZpbEB4?=",
        # Encoded twice: one decoding yields another encoded newline.
        "=?utf-8?q?=3D=3Futf-8=3Fq=3FHi=3D0D=3D0ABcc:=5Fevil@x=3F=3D?=",
        "Hi\u2028Bcc: evil@x",
        "Hi\x85Bcc: evil@x",
        "Hi\x00\x0bBcc: evil@x",
    ],
)
def test_inbound_subject_never_adds_a_header_or_recipient(subject: str) -> None:
    """SEC-01: raw or RFC 2047-encoded newlines in the subject stay inside the Subject."""
    done = _compose(_out("ack", subject=subject))
    parsed = _parse(done.raw)

    assert "Bcc" not in parsed
    assert len(parsed.get_all("To", [])) == 1
    assert [a for _, a in getaddresses(parsed.get_all("To", []))] == ["ana@example.net"]
    assert done.recipient == "ana@example.net"
    assert parsed["Subject"].startswith("[B-42] ")
    assert "Bcc" in parsed["Subject"]  # kept as text, on one line
    for value in [done.subject, *(str(v) for v in parsed.values())]:
        assert not any(ch in value for ch in "\r\n\x00\u2028\x85")


@pytest.mark.parametrize(
    "field",
    ["to_name", "customer_name", "desk_name", "respond_by", "calendar_note"],
)
def test_injection_through_names_and_values_is_neutralised(field: str) -> None:
    """SEC-01: names and template values can carry newlines too; none becomes a header."""
    evil = "Ana\r\nBcc: evil@x =?utf-8?q?=0D=0ABcc:_evil2@x?="
    if field == "to_name":
        out = _out("ack", to_name=evil)
    else:
        out = _out("ack", values=VALUES["ack"] | {field: evil})
    done = _compose(out)
    parsed = _parse(done.raw)

    assert "Bcc" not in parsed
    assert [a for _, a in getaddresses(parsed.get_all("To", []))] == ["ana@example.net"]
    assert "Ana Bcc: evil@x" in _text(parsed) + str(parsed["To"])


def test_long_hostile_display_name_never_becomes_a_recipient() -> None:
    """SEC-01: a long name with an address in it stays a name (CPython 3.11's own folder
    writes it unquoted, which made it a second recipient)."""
    name = "x" * 90 + " <evil@x>, other@y"
    done = compose(
        _out("ack", to_name=name),
        sender=Sender("soporte@example.com", name, ""),
        message_id=MESSAGE_ID,
        templates=TEMPLATES,
        now=NOW,
    )
    parsed = _parse(done.raw)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ana@example.net"]
    assert [a.addr_spec for a in parsed["From"].addresses] == ["soporte@example.com"]
    assert "evil@x" not in [a for _, a in getaddresses(parsed.get_all("To", []))]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (b"\r\nSubject:", b"\r\nBcc: evil@x\r\nSubject:", "other headers"),
        (b"\r\nSubject:", b"\r\nsubject: again\r\nSubject:", "other headers"),
        (b"<ana@example.net>", b"<ana@example.net>, evil@x", "other recipients"),
        (b"<ana@example.net>", b"<ana@example.net>\r\n evil@x", "other recipients"),
        (b"<ana@example.net>", b"<evil@x>", "other recipients"),
        (b"\r\nTo:", b"\r\nTo: evil@x\r\nTo:", "other headers"),
    ],
    ids=["bcc-added", "subject-twice", "second-to", "folded-to", "swapped-to", "to-twice"],
)
def test_bytes_that_do_not_read_back_as_composed_are_refused(
    old: bytes, new: bytes, problem: str
) -> None:
    """SEC-01's last check on the bytes themselves, as a relay reads them: a header more, a
    header twice, a recipient more (in the line or a folded one) or another recipient."""
    done = _compose(_out("ack", to_name="José Pérez, Ana"))
    composed = _parse(done.raw)
    verify(done.raw, composed, "ana@example.net")  # the composed bytes pass
    assert old in done.raw
    with pytest.raises(ValueError, match=f"parses to {problem}; refusing to send it"):
        verify(done.raw.replace(old, new, 1), composed, "ana@example.net")


def test_long_non_ascii_name_keeps_its_spaces() -> None:
    """A long accented name is encoded with its spaces inside the encoded words (RFC 2047)."""
    name = " ".join(["Ñandú Pérez-Gómez"] * 6)
    wire = str(email.message_from_bytes(_compose(_out("ack", to_name=name)).raw)["To"])
    phrase, _, address = wire.rpartition(" <")
    assert str(make_header(decode_header(phrase))) == name  # what an RFC 2047 reader shows
    assert address == "ana@example.net>"


@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=300),
    st.integers(min_value=4, max_value=40),
)
def test_encoded_words_decode_to_the_text_in_legal_lines(text: str, taken: int) -> None:
    """RFC 2047 as readers decode it: the same text, spaces and all; each word at most
    75 characters and each line at most 76, the first after its header's name."""
    wire = encoded_words(text, taken)
    assert str(make_header(decode_header(wire))) == text
    lines = wire.split("\n")
    assert all(line.startswith(" =?utf-8?") for line in lines[1:])
    assert taken + len(lines[0]) <= 76
    assert all(len(line) <= 76 for line in lines[1:])
    assert wire.isascii() and "\r" not in wire


@given(
    st.one_of(
        st.text(max_size=400),
        st.text(alphabet="abc ñé\r\n", max_size=2000),
        st.lists(st.text(alphabet="xyzЖ ", min_size=70, max_size=120), max_size=14).map("\n".join),
    )
)
def test_the_body_is_what_set_content_writes_byte_for_byte(text: str) -> None:
    """The text part is the stdlib's ``set_content(text, charset="utf-8")``, its encoding
    choice included (7bit, quoted-printable or base64), without its header parsing."""
    ours, theirs = EmailMessage(policy=_POLICY), EmailMessage(policy=_POLICY)
    set_text(ours, text)
    theirs.set_content(text, charset="utf-8")
    assert ours.as_bytes() == theirs.as_bytes()


def test_hostile_sender_name_is_kept_on_one_line() -> None:
    """A display name from configuration is cleaned the same way as inbound ones."""
    sender = Sender("soporte@example.com", "Soporte\r\nBcc: evil@x", "")
    done = compose(
        _out("reply"), sender=sender, message_id=MESSAGE_ID, templates=TEMPLATES, now=NOW
    )
    parsed = _parse(done.raw)
    assert "Bcc" not in parsed
    assert parsed["From"].addresses[0].display_name == "Soporte Bcc: evil@x"


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("ana@example.net\r\nBcc: evil@x", "control character"),
        ("ana@example.net\n", "control character"),
        ("ana@example.net\x00", "control character"),
        ("ana@example.net, evil@x", "list"),
        ("ana@example.net;evil@x", "list"),
        ("<ana@example.net>", "angle brackets"),
        ("Ana <ana@example.net>", "angle brackets"),
        ("ana @example.net", "whitespace"),
        ('"a,b"@example.net', "list"),
        ("ana(comment)@example.net", "comments"),
        ("ana.núñez@example.net", "ASCII"),
        ("ana.example.net", "local@domain"),
        ("ana@b@example.net", "local@domain"),
        ("", "local@domain"),
        ("@example.net", "local@domain"),
        ("a" * 250 + "@example.net", "254 characters"),
    ],
)
def test_recipient_must_be_one_addr_spec(to: str, problem: str) -> None:
    """A recipient that is not exactly one plain addr-spec is refused, naming the problem."""
    with pytest.raises(ValueError, match=problem):
        _compose(_out("ack", to=to))


def test_reply_to_and_from_addresses_are_checked_too() -> None:
    """Reply-To and From must also be single addr-specs."""
    with pytest.raises(ValueError, match="reply-to"):
        _compose(_out("ack", reply_to="x@example.com\r\nBcc: evil@x"))
    sender = Sender("a@example.com, b@example.com", "Soporte", "")
    with pytest.raises(ValueError, match="from address"):
        compose(_out("ack"), sender=sender, message_id=MESSAGE_ID, templates=TEMPLATES, now=NOW)


def test_reply_body_keeps_its_lines_but_loses_control_characters() -> None:
    """An agent's text keeps newlines and tabs; NUL and other C0 controls are removed."""
    body = "Hola Ana,\r\n\r\nPaso 1:\tabrir\x00 el panel\x07.\rPaso 2: listo.\x1b[31m"
    done = _compose(_out("reply", values={"body": body, "agent": "Lucía"}))
    text = _text(_parse(done.raw))
    assert "Hola Ana,\n\nPaso 1:\tabrir el panel.\nPaso 2: listo.[31m" in text
    assert "-- \nLucía\nSoporte Ñandú · incidencia B-42\n" in text
    assert not any(ch in text for ch in "\x00\x07\x1b\r")


def test_empty_optional_value_drops_its_line() -> None:
    """An ack without a calendar note has no stray blank line where the note would be."""
    text = _text(_parse(_compose(_out("ack", values=VALUES["ack"] | {"calendar_note": ""})).raw))
    assert "RESPOND-BY-5-MARCH\n\nSi quiere" in text
    assert "\n\n\n" not in text


@pytest.mark.parametrize(
    "subject",
    [
        " ".join(["palabra"] * 62)[:500],
        ("Ñandú " * 90)[:500],
        "x" * 500,
        "Проблем с фактурата " * 25,
        "aaaaaaaaaaaaaaa=?utf-8?q?=?utf-8?q?=?utf-8?q?=?utf-8?q?",
        "Ñandú " + "y" * 300 + " fin",
    ],
)
def test_long_subject_folds_and_round_trips(subject: str) -> None:
    """A 500-character subject folds into legal lines and parses back unchanged."""
    done = _compose(_out("ack", subject=subject))
    parsed = _parse(done.raw)
    assert parsed["Subject"] == done.subject
    assert done.subject.startswith("[B-42] Hemos recibido su mensaje: ")
    if "=?" not in subject:
        assert " ".join(subject.split()) in parsed["Subject"]
    assert all(len(line) <= 998 for line in done.raw.split(b"\r\n"))


@pytest.mark.parametrize("kind", KINDS)
def test_raw_lines_are_crlf_and_short(kind: Kind) -> None:
    """Every line of the wire form ends in CRLF and none exceeds 998 octets, even for a huge
    line pasted by an agent."""
    values = VALUES[kind] | ({"body": "ñ" * 5000} if kind == "reply" else {})
    for language in LANGUAGES:
        raw = _compose(_out(kind, language=language, values=values)).raw
        assert raw.endswith(b"\r\n")
        lines = raw.split(b"\r\n")
        assert all(b"\r" not in line and b"\n" not in line for line in lines)
        assert all(len(line) <= 998 for line in lines)
        assert all(byte < 128 for byte in raw)  # 7-bit: no relay needs 8BITMIME


def test_references_end_with_in_reply_to_capped_keeping_root_and_newest() -> None:
    """References gain In-Reply-To once, drop unsafe ids, and keep the first and last 19."""
    ids = tuple(f"<m{i}@example.net>" for i in range(30))
    refs = _parse(_compose(_out("ack", references=ids, in_reply_to="new@example.net")).raw)[
        "References"
    ].split()
    assert len(refs) == 20
    assert refs[0] == "<m0@example.net>"
    assert refs[-1] == "<new@example.net>"
    assert refs[-2] == "<m29@example.net>"

    parsed = _parse(
        _compose(
            _out(
                "ack",
                references=("a@x", "bad\r\nBcc: evil@x", "no spaces@x", "b@x"),
                in_reply_to="a@x",
            )
        ).raw
    )
    assert parsed["References"] == "<a@x> <b@x>"
    assert parsed["In-Reply-To"] == "<a@x>"
    assert "Bcc" not in parsed


def test_long_message_ids_are_written_verbatim() -> None:
    """Long ids are folded between ids, never encoded (3.11 would encode In-Reply-To)."""
    long_id = "CA+" + "q" * 150 + "@mail.gmail.com"
    done = _compose(_out("ack", in_reply_to=long_id, references=("r@x",)))
    parsed = _parse(done.raw)
    assert parsed["In-Reply-To"] == f"<{long_id}>"
    assert parsed["References"] == f"<r@x> <{long_id}>"
    assert f"\r\nIn-Reply-To: <{long_id}>\r\n".encode() in done.raw
    assert f"\r\nReferences: <r@x>\r\n <{long_id}>\r\n".encode() in done.raw


def test_no_threading_headers_when_nothing_is_answered() -> None:
    """A mail that answers nothing has neither In-Reply-To nor References."""
    parsed = _parse(_compose(_out("breach", in_reply_to="", references=())).raw)
    assert "In-Reply-To" not in parsed
    assert "References" not in parsed


def test_subject_tag_is_not_doubled() -> None:
    """A ticket subject that already carries [B-42] gets the tag once."""
    done = _compose(_out("reply", subject="Re: [B-42] No puedo entrar"))
    assert done.subject == "[B-42] Re: Re: No puedo entrar"


@pytest.mark.parametrize(
    ("language", "used"),
    [("es", "es"), ("ES-es", "es"), ("bg_BG", "bg"), ("fr", "en"), ("", "en")],
)
def test_language_falls_back_to_english(language: str, used: str) -> None:
    """A region suffix is ignored; a language without templates gets English."""
    assert language_for(language) == used
    assert _parse(_compose(_out("ack", language=language)).raw)["Content-Language"] == used


def test_values_must_match_the_kind() -> None:
    """A missing or misspelt value is a caller bug, refused before any mail is built."""
    with pytest.raises(ValueError, match=r"missing values.*respond_by"):
        _compose(_out("ack", values={"calendar_note": ""}))
    with pytest.raises(ValueError, match=r"unknown values.*respondby"):
        _compose(_out("ack", values=VALUES["ack"] | {"respondby": "x"}))


def test_naive_now_and_bad_message_id_are_refused() -> None:
    """The Date needs a real offset; our Message-ID goes in without angle brackets."""
    with pytest.raises(ValueError, match="timezone"):
        compose(
            _out(),
            sender=SENDER,
            message_id=MESSAGE_ID,
            templates=TEMPLATES,
            now=datetime(2025, 1, 1),
        )
    with pytest.raises(ValueError, match="message_id"):
        compose(_out(), sender=SENDER, message_id=f"<{MESSAGE_ID}>", templates=TEMPLATES, now=NOW)


def _override(root: Path, lang: str, kind: str, text: str) -> Path:
    path = root / lang / f"{kind}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_override_replaces_one_template_and_keeps_the_rest(tmp_path: Path) -> None:
    """A file under the override directory replaces that template only."""
    _override(
        tmp_path, "es", "ack", "Subject: [$ref] Recibido: $subject\n\nHola $customer_name. $ref\n"
    )
    templates = Templates.load(tmp_path)
    assert templates.get("ack", "es").subject == "[$ref] Recibido: $subject"
    assert templates.get("followup", "es") == TEMPLATES.get("followup", "es")
    assert templates.get("ack", "en") == TEMPLATES.get("ack", "en")
    done = _compose(_out("ack"), templates)
    assert done.subject == "[B-42] Recibido: No puedo entrar"
    assert _text(_parse(done.raw)) == "Hola Ana Pérez. B-42\n"


def test_unknown_placeholder_fails_at_load_naming_file_and_fix(tmp_path: Path) -> None:
    """A typo in a placeholder stops loading, naming the file, the placeholder and the choices."""
    path = _override(tmp_path, "bg", "ack", "Subject: [$ref] $subject\n\nОтговор до: $respnd_by\n")
    with pytest.raises(TemplateError) as caught:
        Templates.load(tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert "$respnd_by" in message
    assert "$respond_by" in message  # the fix: the names this kind may use


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("es/ack.txt", "[$ref] $subject\n\nHola\n", "Subject:"),
        ("es/ack.txt", "Subject: [$ref] $subject\nHola\n", "blank line"),
        ("es/ack.txt", "Subject: $subject\n\nHola\n", r"\[\$ref\]"),
        ("es/ack.txt", "Subject: [$ref] $subject\n\nCoste: $5\n", "invalid placeholder"),
        ("es/reply.txt", "Subject: [$ref] $subject\n\n$respond_by\n", "unknown placeholder"),
        ("es/acuse.txt", "Subject: [$ref] $subject\n\nHola\n", "unknown kind"),
        ("fr/ack.txt", "Subject: [$ref] $subject\n\nBonjour\n", "unknown language"),
    ],
)
def test_bad_override_fails_at_load(tmp_path: Path, name: str, text: str, problem: str) -> None:
    """Malformed, untagged or misnamed override files are refused at start, not ignored."""
    lang, _, file = name.partition("/")
    _override(tmp_path, lang, file.removesuffix(".txt"), text)
    with pytest.raises(TemplateError, match=problem):
        Templates.load(tmp_path)


def test_missing_override_directory_fails_at_load(tmp_path: Path) -> None:
    """A configured directory that does not exist is a configuration error."""
    with pytest.raises(TemplateError, match="does not exist"):
        Templates.load(tmp_path / "nope")


def test_translations_use_the_same_placeholders() -> None:
    """No language's template silently drops a value the others show."""
    for kind in KINDS:
        used = {
            lang: {
                name
                for part in (TEMPLATES.get(kind, lang).subject, TEMPLATES.get(kind, lang).body)
                for name in string.Template(part).get_identifiers()
            }
            for lang in LANGUAGES
        }
        assert used["es"] == used["en"] == used["bg"], kind
        assert used["es"] >= FIELDS[kind] - {"customer_name", "desk_name"}, kind


def test_composed_at_utc_has_plus_zero_date() -> None:
    """The Date header is the given instant with its offset."""
    done = compose(
        _out(), sender=SENDER, message_id=MESSAGE_ID, templates=TEMPLATES, now=NOW.astimezone(UTC)
    )
    assert _parse(done.raw)["Date"].datetime == NOW


# -- Times as customers read them ------------------------------------------------------------


def test_a_deadline_reads_as_local_wall_time_with_its_zone() -> None:
    t = datetime(2026, 12, 24, 16, 30, tzinfo=UTC)
    assert when(t, "Europe/Madrid", "es") == "24/12/2026 17:30 (Europe/Madrid)"
    assert when(t, "Europe/Sofia", "bg") == "24/12/2026 18:30 (Europe/Sofia)"
    assert when(t, "America/Mexico_City", "en") == "2026-12-24 10:30 (America/Mexico_City)"


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.sampled_from(["Europe/Madrid", "Europe/Sofia", "America/Mexico_City", "UTC"]),
    st.sampled_from(["es", "bg", "en", "fr"]),
)
def test_a_deadline_reads_as_strftime_would_write_it(t: datetime, zone: str, language: str) -> None:
    local = t.astimezone(ZoneInfo(zone))
    day = local.strftime("%d/%m/%Y" if language in ("es", "bg") else "%Y-%m-%d")
    assert when(t, zone, language) == f"{day} {local:%H:%M} ({zone})"


def test_message_id_nonces_drawn_in_bulk_are_64_random_bits_each() -> None:
    drawn = nonces(1000)
    assert len(drawn) == 1000 and len(set(drawn)) == 1000
    assert all(len(n) == 16 and int(n, 16) >= 0 for n in drawn)
    assert nonces(0) == []
