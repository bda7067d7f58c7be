"""Fuzzing: random headers with control characters and random MIME trees never raise.

CI runs a bounded number of examples. The long run is a soak test that keeps drawing
fresh examples for ``BUZON_FUZZ_SECONDS`` (default 600):

    BUZON_SOAK=1 BUZON_FUZZ_SECONDS=600 .venv/bin/pytest tests/parsers/test_parsers_fuzz.py -k soak
"""

from __future__ import annotations

import hashlib
import os
import re
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parsers import ParsedMessage, parse_message

FUZZ_SECONDS = float(os.environ.get("BUZON_FUZZ_SECONDS", "600"))
SLOW_PARSE = 5.0  # seconds; inputs here are a few KB, so a slower parse is a pathology

_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To",
     "References", "Content-Type", "Content-Disposition", "Content-Transfer-Encoding",
     "Return-Path", "Auto-Submitted", "Precedence", "List-Id", "Authentication-Results",
     "X-Asterisk-CallerID", "X-Random", "from", "SUBJECT"]
)  # fmt: skip
_PIECES = st.sampled_from(
    [*'abc@<>"(),;:.=?\\ \t\r\n\x00\x01\x1b\x7f\x85é日', "\ud800", "😀", "=?utf-8?q?",
     "=?x?b?", "=?utf-7?b?", "?=", "=0D=0A", "=00", "charset=", "boundary=", "dmarc=fail",
     "header.from="]
)  # fmt: skip
_VALUE = st.lists(_PIECES, max_size=40).map("".join)
_CTYPES = st.sampled_from(
    ["text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/digest",
     "multipart/report", "message/rfc822", "message/global", "message/delivery-status",
     "message/disposition-notification", "text/rfc822-headers", "application/pdf",
     "application/octet-stream", "audio/wav", ""]
)  # fmt: skip
_CHARSETS = st.sampled_from(
    ["utf-8", "us-ascii", "x-bogus", "utf-7", "iso-2022-jp", "gb18030", "gb2312", "utf-16",
     "shift_jis", "unicode-escape", "idna", "undefined", "punycode", "rot13", '"utf-8"', ""]
)  # fmt: skip
_CTE = st.sampled_from(
    ["", "base64", "quoted-printable", "x-uuencode", "8bit", "binary", "base64 (x)", "BASE64"]
)
_LEAF = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b"=\r\n", b"begin 644 x\r\n#86)C\r\n`\r\nend\r\n", b"+AGEAcgBv-", b"\x1b$B$3\x1b(B",
         b"RIFF\x00\x00\x00\x00WAVEfmt ", b"Action: failed\r\nStatus: 5.1.1\r\n"]
    ),
)  # fmt: skip


@st.composite
def _mime_tree(draw: st.DrawFn, depth: int = 0, max_depth: int = 3) -> bytes:
    ctype = draw(_CTYPES)
    value = ctype
    if ctype.startswith("text/") and draw(st.booleans()):
        value += f"; charset={draw(_CHARSETS)}"
    if draw(st.booleans()):
        value += f"; {draw(_VALUE)}"  # parameters with control characters
    headers = [f"Content-Type: {value}"] if value or draw(st.booleans()) else []
    if cte := draw(_CTE):
        headers.append(f"Content-Transfer-Encoding: {cte}")
    if draw(st.booleans()):
        disposition = draw(st.sampled_from(["attachment", "inline", ""]))
        headers.append(f'Content-Disposition: {disposition}; filename="{draw(_VALUE)}"')
    if draw(st.booleans()):
        headers.append(f"{draw(_NAMES)}: {draw(_VALUE)}")
    if ctype.startswith("multipart/") and depth < max_depth:
        boundary = draw(st.sampled_from(["b", "b" * depth, "x y", "=_", "", "b\x00"])) or "z"
        headers[0] += draw(st.sampled_from([f'; boundary="{boundary}"', f"; boundary={boundary}"]))
        children = draw(st.lists(_mime_tree(depth + 1, max_depth), max_size=4))
        eol = draw(st.sampled_from([b"\r\n", b"\n", b""]))
        body = draw(st.sampled_from([b"", b"preamble\r\n"]))
        body += b"".join(f"--{boundary}\r\n".encode() + child + eol for child in children)
        body += draw(st.sampled_from(["", f"--{boundary}--\r\n", f"--{boundary}--"])).encode()
    elif ctype.startswith("message/") and depth < max_depth:
        body = draw(_mime_tree(depth + 1, max_depth))
    else:
        body = draw(_LEAF)
    head = "".join(f"{h}\r\n" for h in headers).encode("utf-8", "surrogatepass")
    return head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body


@st.composite
def _message(draw: st.DrawFn, max_depth: int = 3) -> bytes:
    fields = draw(st.lists(st.tuples(_NAMES, _VALUE), max_size=12))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields).encode(
        "utf-8", "surrogatepass"
    )
    if draw(st.booleans()):
        head = b"From sender@example.com Mon Jan  1 00:00:00 2024\n" + head
    if draw(st.booleans()):
        head = head.replace(b"\r\n", b"\n")
    return head + draw(_mime_tree(0, max_depth))


_CONTROLS = {"\r", "\n", "\x00"}
_PLAIN_ADDRESS = re.compile(r"[^\x00-\x20\x7f-\x9f]+@[^\x00-\x20\x7f-\x9f]+")


def _check(raw: bytes) -> None:
    """What every parse must give, whatever the input (the ``ParsedMessage`` contract)."""
    started = time.perf_counter()
    parsed = parse_message(raw)
    took = time.perf_counter() - started
    assert took < SLOW_PARSE, f"parse took {took:.1f} s"
    assert isinstance(parsed, ParsedMessage)
    assert bool(parsed.fatal) == (parsed.parser == "none")
    # An extraction step or the parser itself raising is a bug caught by a safety net.
    assert not parsed.fatal.startswith("parser failed"), parsed.fatal
    assert not [d for d in parsed.defects if d.startswith("could not read")], parsed.defects
    for line in (parsed.subject, parsed.message_id, *parsed.defects):
        assert not _CONTROLS & set(line)
        line.encode("utf-8")  # no lone surrogates
    assert "\x00" not in parsed.text
    parsed.text.encode("utf-8")
    for name, value in parsed.headers:
        assert not _CONTROLS & set(name + value)
        (name + value).encode("utf-8")
    for address in (parsed.sender, *parsed.to, *parsed.cc, *parsed.reply_to):
        if address is None:
            continue
        assert not _CONTROLS & set(address.display_name)
        address.display_name.encode("utf-8")
        if address.verified:
            assert _PLAIN_ADDRESS.fullmatch(address.addr_spec), address
    for attachment in parsed.attachments:
        assert "/" not in attachment.filename and "\\" not in attachment.filename
        assert attachment.filename and not attachment.filename.startswith(".")
        attachment.filename.encode("utf-8")
        assert attachment.size == len(attachment.content)
        assert attachment.sha256 == hashlib.sha256(attachment.content).hexdigest()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message())
@example(b"Content-Type: text/plain; charset=idna\r\n\r\n\x80")  # compat32 raised
@example(b"Content-Type: charset=\x00\r\r\nContent-Type: text/plain\r\nFrom: \xc2\x85\r\n\r\n")
@example(b"Content-Type: text/plain; charset=unicode-escape\r\n\r\n\\\xc2\x85")
def test_random_messages_never_raise(raw: bytes) -> None:
    """Random headers (control characters included) and MIME trees parse without any
    step failing, into one-line, NUL-free, valid Unicode fields."""
    _check(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(raw: bytes) -> None:
    """Arbitrary bytes are either parsed or refused with a reason, never an exception."""
    parsed = parse_message(raw)
    assert isinstance(parsed, ParsedMessage)
    assert parsed.message_id
    _check(raw)


_SOAK = settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.soak
@pytest.mark.timeout(FUZZ_SECONDS + 900)
def test_fuzz_soak_for_a_time_budget() -> None:
    """The long run: fresh random messages (trees up to 6 deep) and bytes, in rounds of
    2,000 examples each, until ``BUZON_FUZZ_SECONDS`` have passed; any failure stops it
    with Hypothesis's shrunk example."""
    trees = _SOAK(given(_message(max_depth=6))(_check))
    blobs = _SOAK(given(st.binary(max_size=4000))(_check))
    deadline = time.monotonic() + FUZZ_SECONDS
    rounds = 0
    while time.monotonic() < deadline:
        trees()
        if rounds % 4 == 3:
            blobs()
        rounds += 1
    print(f"fuzz soak: {rounds} rounds of {_SOAK.max_examples} messages")
