"""Voicemail detection: sound parts recognised by their bytes, PBX call metadata, never a raise."""

from __future__ import annotations

import base64
import hashlib
import pickle
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_files
from parsers import Attachment, ParsedMessage, Voicemail, VoicemailAudio, parse_message
from parsers.audiosniff import classify_audio
from parsers.voicemail import detect_voicemail, pbx_transcript

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "voicemail"


def _raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _parsed(raw: bytes) -> ParsedMessage:
    parsed = parse_message(raw)
    assert not parsed.fatal
    assert not [d for d in parsed.defects if "voicemail" in d], parsed.defects
    return parsed


def _voicemail(raw: bytes) -> Voicemail:
    found = _parsed(raw).voicemail
    assert found is not None
    return found


def _wav(tag: int, *, extensible_tag: int = 0, lead_chunk: bytes = b"") -> bytes:
    """A RIFF/WAVE header with format ``tag`` (and a little silence)."""
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 16000, 2, 16)
    if extensible_tag:
        fmt += struct.pack("<HHI", 22, 16, 4) + struct.pack("<H", extensible_tag) + bytes(14)
    chunks = lead_chunk + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", 64) + bytes(64)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _mp3_frames(count: int) -> bytes:
    """MPEG-1 layer III frames, 128 kbit/s, 44.1 kHz, no padding: 417 bytes each."""
    return (b"\xff\xfb\x90\x00" + bytes(413)) * count


def _attachment(content_type: str, data: bytes, content_id: str = "") -> Attachment:
    digest = hashlib.sha256(data).hexdigest()
    return Attachment("a.bin", content_type, len(data), digest, data, content_id, "attachment")


def _mail(*headers: str, body: str = "Hi.\n", parts: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """A multipart message: a text/plain body and base64 parts (Content-Type, bytes)."""
    head = (
        "\r\n".join(headers)
        + "\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
    )
    out = (head + "\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
    for ctype, data in parts:
        out += f"\r\n--b\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n".encode()
        out += b"Content-Disposition: attachment\r\n\r\n" + base64.encodebytes(data)
    return out + b"\r\n--b--\r\n"


# --- the fixtures, one PBX shape each ------------------------------------------------


def test_asterisk_wav_with_lf_endings_and_trailing_dot() -> None:
    """Asterisk's sendmail shape (LF, a lone "." after the closing boundary) parses cleanly."""
    raw = _raw("asterisk_wav.eml")
    assert b"\r\n" not in raw and raw.endswith(b"--\n.\n")
    parsed = _parsed(raw)
    assert parsed.defects == ()
    vm = parsed.voicemail
    assert vm is not None
    assert vm.audio == (VoicemailAudio(0, "wav", "content-type"),)
    assert parsed.attachments[0].filename == "msg0000.wav"
    assert parsed.attachments[0].content.startswith(b"RIFF")
    assert (vm.caller_number, vm.caller_name) == ("34600111222", "Maria Lopez")
    assert (vm.duration_seconds, vm.mailbox, vm.message_number) == (8, "1000", 1)
    assert (vm.urgent, vm.orig_time, vm.pbx, vm.pbx_transcript) == (False, None, "asterisk", "")
    assert dict(vm.source_fields) == {
        "caller_number": "X-Asterisk-CallerID",
        "caller_name": "X-Asterisk-CallerID",
        "duration_seconds": "body (Asterisk layout)",
        "mailbox": "body (Asterisk layout)",
        "message_number": "body (Asterisk layout)",
        "pbx": "X-Asterisk-*",
    }


def test_asterisk_wav49_upper_case_type_is_gsm_in_riff() -> None:
    """``msg0000.WAV`` typed ``audio/x-WAV`` is RIFF with format tag 49: wav49."""
    vm = _voicemail(_raw("asterisk_wav49.eml"))
    assert vm.audio == (VoicemailAudio(0, "wav49", "content-type"),)
    assert (vm.caller_number, vm.caller_name, vm.duration_seconds) == ("34600111222", "", 12)


def test_asterisk_raw_gsm_and_unknown_caller() -> None:
    """Headerless ``msg0000.gsm`` counts by its type; "an unknown caller" gives no caller."""
    vm = _voicemail(_raw("asterisk_gsm.eml"))
    assert vm.audio == (VoicemailAudio(0, "gsm", "content-type"),)
    assert (vm.caller_number, vm.caller_name) == ("", "")
    assert (vm.duration_seconds, vm.mailbox, vm.message_number) == (65, "1000", 1)
    assert vm.pbx == "asterisk"  # from the Message-ID: no X-Asterisk header without a caller


def test_asterisk_ogg_is_application_ogg() -> None:
    """Asterisk types Ogg Vorbis ``application/ogg``; a subject without "[PBX]:" still reads."""
    vm = _voicemail(_raw("asterisk_ogg.eml"))
    assert vm.audio == (VoicemailAudio(0, "ogg", "content-type"),)
    assert (vm.caller_number, vm.caller_name, vm.mailbox) == ("+34911222333", "Pedro Ruiz", "2000")


def test_asterisk_imap_storage_headers() -> None:
    """The X-Asterisk-VM-* set gives duration in seconds, mailbox, number and origin time."""
    vm = _voicemail(_raw("asterisk_imap.eml"))
    assert (vm.duration_seconds, vm.mailbox, vm.message_number) == (21, "1000", 5)
    assert vm.orig_time == datetime(2026, 3, 3, 9, 15, 2, tzinfo=UTC)
    assert vm.urgent is False
    sources = dict(vm.source_fields)
    assert sources["duration_seconds"] == sources["orig_time"] == "X-Asterisk-VM-*"
    assert sources["caller_number"] == "X-Asterisk-CallerID"


def test_asterisk_urgent_subject() -> None:
    """ "New Urgent message" in the subject sets the urgent flag."""
    vm = _voicemail(_raw("asterisk_urgent.eml"))
    assert vm.urgent is True
    assert dict(vm.source_fields)["urgent"] == "Subject"
    assert vm.message_number == 6


def test_latin1_label_over_utf8_body_keeps_accents() -> None:
    """A UTF-8 body labelled ISO-8859-1 decodes as UTF-8, and its accented name wins
    over the header Asterisk stripped of non-ASCII bytes."""
    parsed = _parsed(_raw("asterisk_latin1_utf8.eml"))
    assert "José Núñez" in parsed.text
    vm = parsed.voicemail
    assert vm is not None
    assert (vm.caller_number, vm.caller_name) == ("34600333444", "José Núñez")
    assert dict(vm.source_fields)["caller_name"] == "body (Asterisk layout)"


def test_freepbx_default_template() -> None:
    """FreePBX's ``Length:\\t0:08 seconds`` is M:SS; its subject and body name FreePBX."""
    vm = _voicemail(_raw("freepbx.eml"))
    assert vm.pbx == "freepbx"
    assert (vm.duration_seconds, vm.mailbox) == (8, "1000")
    assert dict(vm.source_fields)["duration_seconds"] == "body Length:"


def test_freepbx_body_alone_gives_the_caller() -> None:
    """Without X-Asterisk headers the ``From:`` line's ``"Name" <number>`` is read."""
    raw = _raw("freepbx.eml").replace(b"X-Asterisk-CallerID", b"X-Other")
    vm = _voicemail(raw)
    assert (vm.caller_number, vm.caller_name) == ("34600111222", "Maria Lopez")
    assert dict(vm.source_fields)["caller_number"] == "body From:"
    assert vm.pbx == "freepbx"


def test_freeswitch_alternative_body_and_content_id() -> None:
    """FreeSWITCH: text+HTML alternative, ``msg_<uuid>.wav`` with Content-ID, X-Voicemail-Length."""
    parsed = _parsed(_raw("freeswitch.eml"))
    vm = parsed.voicemail
    assert vm is not None
    assert len(parsed.attachments) == 1
    assert parsed.attachments[0].content_id == "ATTACHED@freeswitch.org"
    assert parsed.attachments[0].filename.startswith("msg_")
    assert vm.audio == (VoicemailAudio(0, "wav", "content-type"),)
    assert vm.pbx == "freeswitch"
    assert (vm.caller_number, vm.caller_name) == ("34600111222", "Maria Lopez")
    assert (vm.duration_seconds, vm.mailbox, vm.urgent) == (8, "1000@pbx.example.com", False)
    assert dict(vm.source_fields)["duration_seconds"] == "X-Voicemail-Length"


@pytest.mark.parametrize(
    ("subject", "seconds"),
    [
        ("8 sec Voicemail from Maria Lopez 34600111222", 8),
        ("00:01:08 sec Voicemail from Maria Lopez 34600111222", 68),  # newer mod_voicemail
        ("Voicemail from Maria Lopez 34600111222", None),  # no template: the built-in subject
    ],
)
def test_freeswitch_subject_alone(subject: str, seconds: int | None) -> None:
    """With no FreeSWITCH header or body, the subject still gives caller and duration."""
    raw = _mail("From: pbx@example.org", f"Subject: {subject}", parts=(("audio/x-wav", _wav(1)),))
    vm = _voicemail(raw)
    assert (vm.caller_number, vm.caller_name, vm.duration_seconds) == (
        "34600111222",
        "Maria Lopez",
        seconds,
    )


def test_freeswitch_urgent_is_x_priority_1() -> None:
    """mod_voicemail marks an urgent message ``X-Priority: 1``."""
    raw = _raw("freeswitch.eml").replace(b"X-Priority: 3", b"X-Priority: 1")
    assert _voicemail(raw).urgent is True


def test_octet_stream_mp3_with_id3() -> None:
    """An octet-stream part whose bytes open with an ID3 tag is an MP3 recording."""
    vm = _voicemail(_raw("octet_mp3_id3.eml"))
    assert vm.audio == (VoicemailAudio(0, "mp3", "bytes"),)
    assert vm.pbx == "" and vm.source_fields == ()


def test_octet_stream_riff_named_bin() -> None:
    """RIFF/WAVE bytes count whatever the name (``grabacion.bin``)."""
    assert _voicemail(_raw("octet_riff_bin.eml")).audio == (VoicemailAudio(0, "wav", "bytes"),)


def test_wav_named_pdf_is_not_a_voicemail() -> None:
    """A ``msg0000.wav`` that holds PDF bytes is a document, not a recording."""
    parsed = _parsed(_raw("pdf_named_wav.eml"))
    assert parsed.attachments[0].filename == "msg0000.wav"
    assert parsed.voicemail is None


def test_plain_email_is_not_a_voicemail() -> None:
    """A text-only email, even one mentioning "From:" and "Transcripción:", is no voicemail."""
    assert _parsed(_raw("plain.eml")).voicemail is None


def test_hosted_pbx_transcript_is_kept() -> None:
    """A hosted PBX's ``Transcription:`` paragraph is kept; Caller/Duration lines are read."""
    vm = _voicemail(_raw("hosted_transcript.eml"))
    assert vm.audio == (VoicemailAudio(0, "mp3", "content-type"),)
    assert vm.pbx_transcript == (
        "Hi, this is Dana from Acme. Our web site has been down since nine this "
        "morning and customers cannot log in. Please call me back."
    )
    assert (vm.caller_number, vm.caller_name, vm.duration_seconds) == (
        "+15550104477",
        "Acme Corp",
        21,
    )
    assert vm.pbx == ""
    assert dict(vm.source_fields)["pbx_transcript"] == "body"


def test_unknown_template_leaves_fields_empty() -> None:
    """A body and subject in no known layout still make a voicemail, with empty metadata."""
    vm = _voicemail(_raw("unmatched_template.eml"))
    assert vm == Voicemail(audio=(VoicemailAudio(0, "wav", "content-type"),))


def test_voicemail_survives_pickling() -> None:
    """The parsed message crosses a process boundary: it pickles and compares equal."""
    parsed = _parsed(_raw("asterisk_imap.eml"))
    copy = pickle.loads(pickle.dumps(parsed))  # noqa: S301 - our own bytes, just pickled
    assert copy == parsed


# --- what counts as sound ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "data", "expected"),
    [
        ("audio/x-wav", _wav(1), ("wav", "content-type")),
        ("audio/x-wav", _wav(3), ("wav", "content-type")),
        ("audio/x-WAV", _wav(49), ("wav49", "content-type")),
        ("audio/wav", _wav(7), ("mulaw", "content-type")),
        ("audio/wav", _wav(6), ("alaw", "content-type")),
        ("audio/wav", _wav(0xFFFE, extensible_tag=1), ("wav", "content-type")),
        (
            "audio/wav",
            _wav(1, lead_chunk=b"LIST\x05\x00\x00\x00INFOx\x00"),
            ("wav", "content-type"),
        ),
        ("audio/wav", _wav(0x11), ("unknown", "content-type")),  # IMA ADPCM
        ("audio/x-wav", b"RIFF\x00\x00\x00\x00WAVE", ("unknown", "content-type")),  # truncated
        ("audio/mpeg", _mp3_frames(1), ("mp3", "content-type")),
        (
            "audio/x-gsm",
            bytes([0xD5]) + bytes(32) + bytes([0xDA]) + bytes(32),
            ("gsm", "content-type"),
        ),
        ("audio/x-gsm", b"\x00" * 66, ("unknown", "content-type")),
        ("audio/x-ulaw", b"\xff\x7e" * 40, ("mulaw", "content-type")),
        ("audio/basic", b"\xff\x7e" * 40, ("mulaw", "content-type")),
        ("audio/basic", b".snd\x00\x00\x00\x18" + bytes(40), ("unknown", "content-type")),
        ("audio/x-alaw", b"\xd5" * 40, ("alaw", "content-type")),
        ("audio/mp4", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp42", ("m4a", "content-type")),
        ("audio/anything", b"", ("unknown", "content-type")),
        ("application/ogg", b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", ("ogg", "content-type")),
        ("application/octet-stream", _wav(1), ("wav", "bytes")),
        (
            "application/octet-stream",
            b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10),
            ("mp3", "bytes"),
        ),
        ("application/octet-stream", _mp3_frames(2), ("mp3", "bytes")),
        ("application/octet-stream", b"OggS\x00\x02" + bytes(22) + b"OpusHead", ("ogg", "bytes")),
        (
            "application/octet-stream",
            b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A isom",
            ("m4a", "bytes"),
        ),
        ("application/octet-stream", b"#!AMR\n" + bytes(31), ("amr", "bytes")),
        ("application/octet-stream", b"#!AMR-WB\n" + bytes(31), ("amr", "bytes")),
        ("text/plain", _wav(1), ("wav", "bytes")),  # a missing Content-Type reads as text/plain
    ],
)
def test_sound_is_recognised(content_type: str, data: bytes, expected: tuple[str, str]) -> None:
    """Typed audio gets its format from its bytes; generic types need a magic number."""
    assert classify_audio(content_type, data) == expected


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("audio/x-wav", b"%PDF-1.4\n%%EOF\n"),  # typed audio, but a PDF
        ("audio/mpeg", b"PK\x03\x04" + bytes(30)),
        ("audio/x-mpegurl", b"#EXTM3U\nhttp://radio.example/stream\n"),  # a playlist
        ("application/octet-stream", b"%PDF-1.4\n%%EOF\n"),
        ("application/octet-stream", _mp3_frames(1)),  # one frame header alone is chance
        ("application/octet-stream", b"\xff\xfb\x90\x00" + bytes(500)),
        ("application/octet-stream", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp42"),  # video?
        ("application/octet-stream", b"OggS\x00\x02" + bytes(22) + b"\x80theora"),
        ("application/octet-stream", bytes([0xD5]) + bytes(32)),  # raw GSM has no magic
        ("application/pdf", _wav(1)),  # a specific non-audio type is not second-guessed
        ("image/png", _wav(1)),
        ("video/mp4", b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A isom"),
        ("message/rfc822", _wav(1)),
    ],
)
def test_not_sound(content_type: str, data: bytes) -> None:
    """Documents, playlists, lone frame-sync bytes and non-audio types are not recordings."""
    assert classify_audio(content_type, data) is None


def test_audio_index_points_into_attachments() -> None:
    """With a PDF first and two recordings after, ``audio`` lists indexes 1 and 2."""
    raw = _mail(
        "From: pbx@example.org",
        "Subject: New message 1 in mailbox 7",
        parts=(("application/pdf", b"%PDF-1.4\n"), ("audio/x-wav", _wav(1)), ("audio/x-gsm", b"")),
    )
    parsed = _parsed(raw)
    assert parsed.voicemail is not None
    assert parsed.voicemail.audio == (
        VoicemailAudio(1, "wav", "content-type"),
        VoicemailAudio(2, "unknown", "content-type"),
    )
    assert parsed.voicemail.mailbox == "7"


# --- metadata precedence and parsing -------------------------------------------------

_AUDIO = (_attachment("audio/x-wav", _wav(1)),)


def _detect(
    headers: tuple[tuple[str, str], ...] = (), subject: str = "", text: str = ""
) -> Voicemail:
    found = detect_voicemail(headers=headers, subject=subject, text=text, attachments=_AUDIO)
    assert found is not None
    return found


def test_callerid_headers_come_before_the_vm_set() -> None:
    """X-Asterisk-CallerID* win over X-Asterisk-VM-Caller-ID-*; the VM set fills the rest."""
    vm = _detect(
        (
            ("X-Asterisk-VM-Caller-ID-Num", "111"),
            ("X-Asterisk-VM-Caller-ID-Name", "VM Name"),
            ("X-Asterisk-VM-Flag", "Urgent"),
            ("X-Asterisk-CallerID", "222"),
            ("X-Asterisk-CallerIDName", "Header Name"),
        )
    )
    assert (vm.caller_number, vm.caller_name, vm.urgent) == ("222", "Header Name", True)
    assert dict(vm.source_fields)["urgent"] == "X-Asterisk-VM-*"


def test_vm_set_alone() -> None:
    """Without X-Asterisk-CallerID the VM set's caller id is used."""
    vm = _detect(
        (("X-Asterisk-VM-Caller-ID-Num", "600 11 12 13"), ("X-Asterisk-VM-Extension", "42"))
    )
    assert (vm.caller_number, vm.mailbox) == ("600111213", "42")


def test_asterisk_greeting_notice_is_not_a_voicemail() -> None:
    """A greeting-change email (X-Asterisk-VM-Message-Type: unavail) carries no call."""
    headers = (("X-Asterisk-VM-Message-Type", "unavail"),)
    assert detect_voicemail(headers=headers, subject="", text="", attachments=_AUDIO) is None


@pytest.mark.parametrize(
    ("caller", "number", "name"),
    [
        ('"Maria Lopez" <34600111222>', "34600111222", "Maria Lopez"),
        ("Maria Lopez <+34 600-111-222>", "+34600111222", "Maria Lopez"),
        ("+1 (555) 010-4477", "+15550104477", ""),
        ("Maria Lopez", "", "Maria Lopez"),
        ("an unknown caller", "", ""),
        ('"" <anonymous>', "", ""),
        ("<sip:+34600111222@trunk.example>", "+34600111222", ""),
        ("Asterisk PBX <asterisk@pbx.example.com>", "", ""),
    ],
)
def test_asterisk_body_caller_forms(caller: str, number: str, name: str) -> None:
    """The body's CALLER may be ``"Name" <number>``, a number, a name or unknown."""
    body = (
        "Dear Soporte:\n\n\tJust wanted to let you know you were just left a 2:05 long message "
        f"(number 3)\nin mailbox 1000 from {caller}, on Tuesday, March 03, 2026 at 10:15 AM so\n"
    )
    vm = _detect(text=body)
    assert (vm.caller_number, vm.caller_name, vm.duration_seconds) == (number, name, 125)
    assert (vm.mailbox, vm.message_number, vm.pbx) == ("1000", 3, "asterisk")


def test_forwarded_asterisk_body() -> None:
    """Asterisk's "you were just forwarded a …" variant reads like the left one."""
    body = (
        "Dear A:\n\n\tJust wanted to let you know you were just forwarded a 0:09 long message "
        "(number 2)\nin mailbox 1001 from 600111222, on Monday\n(originally sent by x on y)\n"
    )
    vm = _detect(text=body)
    assert (vm.caller_number, vm.duration_seconds, vm.mailbox) == ("600111222", 9, "1001")


def test_subject_gives_the_mailbox_when_the_body_does_not() -> None:
    """A custom body leaves the mailbox to the subject's "in mailbox MBOX"."""
    vm = _detect(subject="Voicemail in mailbox 2040 (sales)", text="Listen to the attachment.")
    assert vm.mailbox == "2040"
    assert dict(vm.source_fields)["mailbox"] == "Subject"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Transcript: Please call me back about the invoice.\n",
            "Please call me back about the invoice.",
        ),
        (
            "Transcripción:\n\nHola, no funciona el correo.\nGracias.\n\nEnviado por X",
            "Hola, no funciona el correo. Gracias.",
        ),
        ("Voicemail Transcription: hello\nDuration: 0:05\n", "hello"),
        ("Transcription: (not available)\n", ""),
        ("Transcription: {{{{TRANSCRIPTION}}}}\n", ""),
        ("A transcription: will follow later", ""),  # not a label at the start of a line
        ("No label here.", ""),
    ],
)
def test_pbx_transcript_sections(body: str, expected: str) -> None:
    """Only a clear labelled section is a transcript; it ends at a blank or field line."""
    assert pbx_transcript(body) == expected


# --- robustness --------------------------------------------------------------------

_PIECES = st.sampled_from(
    [*"0123456789:<>\"'(),.+- \t\n@aAé", "left a ", " long message ", "(number ",
     ") in mailbox ", " from ", ", on ", "From:", "Length:", "Duration:", "Transcription:",
     "sec Voicemail from ", "New Urgent message ", "Asterisk-", "\x00", "\u2028"]
)  # fmt: skip
_TEXT = st.lists(_PIECES, max_size=40).map("".join)
_HEADER_NAMES = st.sampled_from(
    ["X-Asterisk-CallerID", "X-Asterisk-CallerIDName", "X-Asterisk-VM-Duration",
     "X-Asterisk-VM-Orig-time", "X-Asterisk-VM-Message-Num", "X-Asterisk-VM-Flag",
     "X-Asterisk-VM-Message-Type", "X-Voicemail-Length", "X-Mailer", "X-Priority", "Message-ID"]
)  # fmt: skip
_PARTS = st.tuples(
    st.sampled_from(["audio/x-wav", "audio/x-gsm", "application/octet-stream", "text/plain"]),
    st.one_of(st.binary(max_size=64), st.sampled_from([_wav(49), _mp3_frames(2), b"RIFF"])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_HEADER_NAMES, _TEXT), max_size=8),
    _TEXT,
    st.lists(_TEXT, max_size=6).map("\n".join),
    st.lists(_PARTS, min_size=1, max_size=3),
)
def test_random_metadata_never_raises(
    headers: list[tuple[str, str]], subject: str, text: str, parts: list[tuple[str, bytes]]
) -> None:
    """Random PBX-ish headers, subjects and bodies give a Voicemail or None, never a raise."""
    attachments = [_attachment(ctype, data) for ctype, data in parts]
    found = detect_voicemail(headers=headers, subject=subject, text=text, attachments=attachments)
    if found is not None:
        assert found.audio and all(0 <= a.index < len(parts) for a in found.audio)
        assert found.duration_seconds is None or 0 < found.duration_seconds <= 24 * 3600
        assert found.orig_time is None or found.orig_time.tzinfo is not None
        assert all(c.isdigit() for c in found.caller_number.removeprefix("+"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.binary(max_size=200))
def test_random_parts_never_raise(content_type: str, data: bytes) -> None:
    """Any content type and bytes classify without an exception."""
    classify_audio(content_type, data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _TEXT,
    st.lists(_TEXT, max_size=6).map("\n".join),
    st.sampled_from([_wav(1), _wav(49), _mp3_frames(1), b"", b"\x00" * 40]),
)
def test_random_voicemail_mails_parse(subject: str, body: str, audio: bytes) -> None:
    """Whole messages with random PBX-ish text and an audio part parse to a voicemail."""
    subject = " ".join(subject.replace("\x00", "").split())
    raw = _mail(
        "From: pbx@example.org", f"Subject: {subject}", body=body, parts=(("audio/x-wav", audio),)
    )
    assert _voicemail(raw).audio[0].index == 0


# --- the shared corpus -------------------------------------------------------------

# Both are typed audio/basic (8 kHz µ-law, RFC 2046): the RFC's own example and
# the "Flint phone" part of Crispin's MIME torture test. By the rule, sound.
_CORPUS_VOICEMAILS = {
    "crymap/src/test_data/torture-test.eml",
    "mimekit/UnitTests/TestData/partial/rfc2046.eml",
}


@pytest.mark.timeout(120)
def test_corpus_parses_and_few_are_voicemails(corpus: Path) -> None:
    """Every corpus file still parses without a voicemail defect; only known ones are flagged."""
    flagged: set[str] = set()
    for path in corpus_files(corpus):
        parsed = parse_message(path.read_bytes())
        assert not [d for d in parsed.defects if "voicemail" in d], path
        if parsed.voicemail is not None:
            flagged.add(path.relative_to(corpus).as_posix())
            assert {a.format for a in parsed.voicemail.audio} == {"mulaw"}
    assert flagged == _CORPUS_VOICEMAILS
