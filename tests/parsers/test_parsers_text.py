"""Text bodies: part choice, charsets, HTML rendering and PostgreSQL-safe cleaning (PARSE-06)."""

from __future__ import annotations

import pytest

from parsers import ParseLimits, parse_message


def _single(content_type: str, body: bytes, cte: str = "8bit") -> bytes:
    return (
        b"From: a@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
        + f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + body
    )


def test_first_plain_part_is_preferred_over_html() -> None:
    """In multipart/alternative the text/plain part is the body and HTML is not an attachment."""
    raw = (
        b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>html version</p>\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nplain version\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text == "plain version"
    assert parsed.text_from_html is False
    assert parsed.attachments == ()


def test_html_only_body_is_rendered_as_text() -> None:
    """Without text/plain, HTML becomes text: scripts dropped, blocks and <br> are line breaks."""
    html = (
        b"<html><head><title>T</title><style>p{color:red}</style></head><body>"
        b"<script>alert('x')</script><h1>Hello&nbsp;&amp; welcome</h1>"
        b"<p>First   line<br>second line</p><ul><li>one</li><li>two</li></ul>"
        b"<!-- a comment --><p>caf&eacute; &#8364;5</p></body></html>"
    )
    parsed = parse_message(_single("text/html; charset=utf-8", html))
    assert parsed.text_from_html is True
    assert parsed.text == "Hello & welcome\n\nFirst line\nsecond line\n\n- one\n- two\n\ncafé €5"


def test_html_with_thousands_of_unclosed_tags_is_fast() -> None:
    """Malformed HTML that makes 3.11's html.parser quadratic is rendered in linear time."""
    parsed = parse_message(_single("text/html", b"<a" * 200_000 + b" end"))
    assert parsed.text_from_html is True
    assert parsed.text.endswith("end")


@pytest.mark.parametrize(
    ("content_type", "body", "text", "defect"),
    [
        ("text/plain; charset=us-ascii", "Grüße".encode(), "Grüße", "8-bit text in 'us-ascii'"),
        ("text/plain", "Grüße".encode(), "Grüße", "8-bit text in 'us-ascii (default)'"),
        ("text/plain; charset=x-unknown-charset", "Grüße".encode(), "Grüße", "unknown charset"),
        ("text/plain; charset=iso-8859-1", "Grüße".encode("latin-1"), "Grüße", ""),
        ("text/plain; charset=iso-8859-1", "Grüße".encode(), "Grüße", "is utf-8"),
        ("text/plain; charset=utf-8", "Grüße €".encode("cp1252"), "Grüße €", "could not decode"),
        ("text/plain; charset=koi8-r", "Привет".encode("koi8-r"), "Привет", ""),
        ("text/plain; charset=unicode-escape", b"\\u0041", "\\u0041", "unknown charset"),
        ("text/plain; charset=iso-2022-jp", "日本".encode("iso-2022-jp"), "日本", ""),
    ],
)
def test_charset_labels_are_honoured_or_repaired(
    content_type: str, body: bytes, text: str, defect: str
) -> None:
    """Right labels decode; wrong, missing, unknown or dangerous labels fall back with a defect."""
    parsed = parse_message(_single(content_type, body))
    assert parsed.text == text
    if defect:
        assert any(defect in d for d in parsed.defects), parsed.defects
    else:
        assert not any("charset" in d or "8-bit" in d for d in parsed.defects)


def test_nul_controls_and_line_endings_are_cleaned() -> None:
    """NUL and other controls go, CRLF and CR become LF: the text fits PostgreSQL ``text``."""
    body = b"line1\r\nli\x00ne2\rline3\x1b\x7f\x0c end\t tab\r\n"
    parsed = parse_message(_single("text/plain; charset=utf-8", body))
    assert parsed.text == "line1\nline2\nline3 end\t tab\n"
    parsed.text.encode("utf-8")  # valid Unicode, no lone surrogates


def test_utf7_lone_surrogate_is_never_returned() -> None:
    """UTF-7 that encodes a lone surrogate is refused by the codec and read another way."""
    parsed = parse_message(_single("text/plain; charset=utf-7", b"a+2D3-b"))
    parsed.text.encode("utf-8")  # would raise on a lone surrogate
    assert any("could not decode" in d for d in parsed.defects)


def test_quoted_printable_and_base64_bodies_are_decoded() -> None:
    """Transfer encodings are undone, even base64 with bad padding or a padded CTE value."""
    qp = parse_message(
        _single("text/plain; charset=utf-8", b"caf=C3=A9 =\r\nsoft", "quoted-printable")
    )
    b64 = parse_message(_single("text/plain; charset=utf-8", b"Y2Fmw6k", "base64 "))
    assert qp.text == "café soft"
    assert b64.text == "café"


def test_text_is_capped_at_the_limit() -> None:
    """A body longer than ``max_text_chars`` is truncated, with a defect."""
    parsed = parse_message(
        _single("text/plain", b"x" * 5000), limits=ParseLimits(max_text_chars=100)
    )
    assert len(parsed.text) == 100
    assert "text longer than 100 characters; truncated" in parsed.defects


def test_blank_plain_part_falls_back_to_html() -> None:
    """An empty text/plain alternative does not hide a real HTML body."""
    raw = (
        b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\n \r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<b>real</b> text\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text == "real text"
    assert parsed.text_from_html is True


@pytest.mark.parametrize(
    "charset",
    ["idna", "undefined", "punycode", '"utf\x00-8"', "x\x00y", "unicode-escape"],
    ids=["idna", "undefined", "punycode", "nul-quoted", "nul-bare", "unicode-escape"],
)
def test_charset_labels_the_stdlib_chokes_on_still_give_the_body_and_attachments(
    charset: str,
) -> None:
    """A label whose codec refuses errors="replace" (idna, undefined, punycode), holds
    a NUL, or interprets backslashes (unicode-escape: a DeprecationWarning on an unknown
    escape) made compat32's ``get_payload()`` raise on 8-bit text (found by the fuzzer);
    the body and the other parts are still read, with no "could not read"."""
    raw = (
        b"From: a@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + f"--b\r\nContent-Type: text/plain; charset={charset}\r\n\r\n".encode()
        + b"\\q caf\xc3\xa9\r\n"
        b"--b\r\nContent-Type: application/pdf; name=a.pdf\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text == "\\q café"
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]
    assert not [d for d in parsed.defects if d.startswith("could not read")], parsed.defects
