"""Fuzzing: random headers with control characters and random MIME trees never raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import ParsedMessage, parse_message

_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Subject", "Date", "Message-ID", "References", "Content-Type",
     "Content-Disposition", "Content-Transfer-Encoding", "Return-Path", "Auto-Submitted",
     "X-Random", "from", "SUBJECT"]
)  # fmt: skip
_PIECES = st.sampled_from(
    [*'abc@<>"(),;:.=?\\ \t\r\n\x00\x01\x1b\x7f\x85é日', "=?utf-8?q?", "=?x?b?", "?=", "=0D=0A"]
)
_VALUE = st.lists(_PIECES, max_size=40).map("".join)
_CTYPES = st.sampled_from(
    ["text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/digest",
     "message/rfc822", "message/delivery-status", "application/pdf", "audio/wav",
     "text/plain; charset=x-bogus"]
)  # fmt: skip
_CTE = st.sampled_from(["", "base64", "quoted-printable", "x-uuencode", "8bit", "base64 (x)"])


@st.composite
def _mime_tree(draw: st.DrawFn, depth: int = 0) -> bytes:
    ctype = draw(_CTYPES)
    headers = [f"Content-Type: {ctype}"]
    if cte := draw(_CTE):
        headers.append(f"Content-Transfer-Encoding: {cte}")
    if draw(st.booleans()):
        headers.append(f'Content-Disposition: attachment; filename="{draw(_VALUE)}"')
    if ctype.startswith("multipart/") and depth < 3:
        boundary = draw(st.sampled_from(["b", "b" * depth, "x y", "=_"])) or "z"
        headers[0] += f'; boundary="{boundary}"'
        children = draw(st.lists(_mime_tree(depth + 1), max_size=3))
        closing = draw(st.sampled_from(["", f"--{boundary}--\r\n"]))
        body = b"".join(f"--{boundary}\r\n".encode() + child + b"\r\n" for child in children)
        body += closing.encode()
    elif ctype == "message/rfc822" and depth < 3:
        body = draw(_mime_tree(depth + 1))
    else:
        body = draw(st.binary(max_size=80))
    head = "".join(f"{h}\r\n" for h in headers).encode("utf-8", "surrogateescape")
    return head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(st.tuples(_NAMES, _VALUE), max_size=12))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields).encode("utf-8")
    if draw(st.booleans()):
        head = b"From sender@example.com Mon Jan  1 00:00:00 2024\n" + head
    return head + draw(_mime_tree())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message())
def test_random_messages_never_raise(raw: bytes) -> None:
    """Random headers and MIME trees give a ParsedMessage with a one-line, NUL-free subject."""
    parsed = parse_message(raw)
    assert isinstance(parsed, ParsedMessage)
    assert not {"\r", "\n", "\x00"} & set(parsed.subject)
    assert "\x00" not in parsed.text
    parsed.text.encode("utf-8")
    for attachment in parsed.attachments:
        assert "/" not in attachment.filename and "\\" not in attachment.filename
        assert attachment.filename and not attachment.filename.startswith(".")
    assert bool(parsed.fatal) == (parsed.parser == "none")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(raw: bytes) -> None:
    """Arbitrary bytes are either parsed or refused with a reason, never an exception."""
    parsed = parse_message(raw)
    assert isinstance(parsed, ParsedMessage)
    assert parsed.message_id
