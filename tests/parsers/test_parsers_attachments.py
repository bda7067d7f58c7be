"""Attachments: exact decoded bytes, hashes and display-safe file names (SEC-03)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from parsers import Attachment, parse_message


def _with_part(part_headers: str, part_body: bytes) -> bytes:
    return (
        b"From: a@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\n"
        + part_headers.replace("\n", "\r\n").encode()
        + b"\r\n\r\n"
        + part_body
        + b"\r\n--b--\r\n"
    )


def _only_attachment(part_headers: str, part_body: bytes) -> Attachment:
    parsed = parse_message(_with_part(part_headers, part_body))
    assert parsed.text == "see attached"
    assert len(parsed.attachments) == 1
    return parsed.attachments[0]


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="..\\\\..\\\\win.ini"', "win.ini"),
        ('attachment; filename="C:\\\\Users\\\\x\\\\evil.exe"', "evil.exe"),
        ('attachment; filename=".htaccess"', "htaccess"),
        ('attachment; filename=".."', "attachment.pdf"),
        ('attachment; filename="=?utf-8?b?Li4vLi4vcmFwcG9ydC5wZGY=?="', "rapport.pdf"),
        ('attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="', "résumé.pdf"),
        ("attachment; filename*=utf-8''%E6%97%A5%E6%9C%AC.pdf", "日本.pdf"),
        ('attachment; filename="inv\u202eoice_fdp.exe"', "invoice_fdp.exe"),
        ('attachment; filename="a\tb  c.pdf"', "a b c.pdf"),
        ("attachment", "attachment.pdf"),
    ],
)
def test_file_names_are_sanitised_for_display(disposition: str, expected: str) -> None:
    """Paths, dot files, encoded traversal, bidi overrides and controls never survive in names."""
    attachment = _only_attachment(
        f"Content-Type: application/pdf\nContent-Disposition: {disposition}", b"%PDF-1.4"
    )
    assert attachment.filename == expected


def test_nul_and_newline_in_encoded_name_are_removed() -> None:
    """A NUL hidden in an RFC 2047 name is dropped; CR LF become a space."""
    attachment = _only_attachment(
        "Content-Type: text/csv\n"
        'Content-Disposition: attachment; filename="=?utf-8?q?a=00b=0D=0Ac.csv?="',
        b"x,y",
    )
    assert attachment.filename == "ab c.csv"


def test_long_names_are_cut_to_255_bytes_keeping_the_extension() -> None:
    """A 600-character name is shortened to at most 255 UTF-8 bytes and keeps ``.pdf``."""
    attachment = _only_attachment(f'Content-Type: application/pdf; name="{"ü" * 600}.pdf"', b"%PDF")
    assert len(attachment.filename.encode("utf-8")) <= 255
    assert attachment.filename.endswith("ü.pdf")


def test_base64_content_size_and_hash_are_exact() -> None:
    """The decoded bytes, their size and SHA-256 describe the attachment, bad padding or not."""
    payload = bytes(range(256)) * 10
    encoded = base64.b64encode(payload).rstrip(b"=")
    attachment = _only_attachment(
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="blob.bin"',
        encoded,
    )
    assert attachment.content == payload
    assert attachment.size == len(payload)
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    assert attachment.content_type == "application/octet-stream"
    assert attachment.disposition == "attachment"


def test_audio_voicemail_part_is_an_attachment_with_its_bytes() -> None:
    """An Asterisk-style audio part (``audio/x-WAV``) is an attachment with exact bytes."""
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64))
    attachment = _only_attachment(
        'Content-Type: audio/x-WAV; name="msg0000.WAV"\nContent-Transfer-Encoding: base64\n'
        "Content-Description: Voicemail sound attachment.\n"
        'Content-Disposition: attachment; filename="msg0000.WAV"',
        base64.encodebytes(wav),
    )
    assert attachment.content_type == "audio/x-wav"
    assert attachment.filename == "msg0000.WAV"
    assert attachment.content == wav


def test_inline_image_with_content_id_is_an_attachment() -> None:
    """An inline image is an attachment; its Content-ID loses the angle brackets."""
    attachment = _only_attachment(
        "Content-Type: image/png\nContent-Transfer-Encoding: base64\n"
        "Content-ID: <logo@example.com>\nContent-Disposition: inline",
        base64.b64encode(b"\x89PNG\r\n\x1a\n"),
    )
    assert attachment.filename == "attachment.png"
    assert attachment.content_id == "logo@example.com"
    assert attachment.disposition == "inline"
    assert attachment.content == b"\x89PNG\r\n\x1a\n"


def test_tnef_and_quoted_printable_parts_are_decoded() -> None:
    """application/ms-tnef is an attachment; a quoted-printable attachment is decoded."""
    tnef = _only_attachment(
        'Content-Type: application/ms-tnef; name="winmail.dat"\nContent-Transfer-Encoding: base64',
        base64.b64encode(b"\x78\x9f\x3e\x22"),
    )
    qp = _only_attachment(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n"
        'Content-Disposition: attachment; filename="notes.txt"',
        b"caf=C3=A9",
    )
    assert (tnef.filename, tnef.content) == ("winmail.dat", b"\x78\x9f\x3e\x22")
    assert qp.content == "café".encode()


def test_forwarded_message_keeps_its_raw_bytes() -> None:
    """A message/rfc822 part is one attachment whose content is the embedded message as sent."""
    inner = b"From: Bob <bob@example.com>\r\nSubject:  odd   spacing\r\n\r\ninner body\r\n"
    attachment = _only_attachment("Content-Type: message/rfc822", inner.rstrip(b"\r\n"))
    assert attachment.content_type == "message/rfc822"
    assert attachment.filename == "attachment.eml"
    assert attachment.content == inner.rstrip(b"\r\n")


def test_base64_encoded_forwarded_message_is_decoded() -> None:
    """A message/rfc822 part sent base64-encoded comes out as the decoded message."""
    raw = (
        b"From: a@example.com\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"From: x@example.com\r\nSubject: inner\r\n\r\nhi\r\n")
    )
    parsed = parse_message(raw)
    assert [a.content for a in parsed.attachments] == [
        b"From: x@example.com\r\nSubject: inner\r\n\r\nhi\r\n"
    ]
