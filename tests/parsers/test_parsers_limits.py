"""PARSE-05: hostile sizes are cut by ParseLimits before the real parse, with a defect."""

from __future__ import annotations

import pytest

from parsers import ParseLimits, parse_message

HEAD = b"From: a@example.com\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n"


@pytest.mark.timeout(30)
def test_one_megabyte_to_header_is_truncated() -> None:
    """A 1 MB To: header is cut to 64 KiB before parsing and the address list is capped."""
    to = b", ".join(b"user%d@example.com" % i for i in range(50_000))
    parsed = parse_message(b"From: a@example.com\r\nTo: " + to + b"\r\nSubject: big\r\n\r\nbody")
    assert len(to) > 1_000_000
    assert "header field to over 65536 bytes; truncated" in parsed.defects
    assert "to has more than 1000 addresses; rest dropped" in parsed.defects
    assert len(parsed.to) == 1000
    assert parsed.subject == "big"


@pytest.mark.timeout(30)
def test_oversized_header_block_keeps_the_fields_buzon_needs() -> None:
    """Past max_header_bytes other fields are dropped, but Subject and Content-Type survive."""
    raw = (
        b"From: a@example.com\r\n"
        + b"X-Filler: 0123456789012345678901234567890123456789\r\n" * 20_000
        + b"Subject: still here\r\nContent-Type: text/html\r\n\r\n<b>bold</b>"
    )
    parsed = parse_message(raw)
    assert "header block over 262144 bytes; later fields dropped" in parsed.defects
    assert parsed.subject == "still here"
    assert parsed.text == "bold"


@pytest.mark.timeout(30)
def test_hundred_thousand_parts_are_cut_at_the_parts_limit() -> None:
    """100,000 MIME parts are cut at max_parts; the parts before the cut are parsed."""
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n%d\r\n" % i for i in range(100_000)
    )
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    parsed = parse_message(raw)
    assert "parts limit 1000 exceeded; remaining parts not parsed" in parsed.defects
    assert len(parsed.attachments) == 999  # the root multipart counts as a part
    assert parsed.attachments[0].content == b"0"


@pytest.mark.timeout(30)
def test_ten_thousand_deep_multipart_nesting_is_cut_at_the_depth_limit() -> None:
    """10,000 nested multiparts are cut at max_depth without recursing."""
    levels = [HEAD + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"]
    levels += [
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
        for i in range(1, 10_000)
    ]
    parsed = parse_message(
        b"".join(levels) + b"--b9999\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
    )
    assert "depth limit 50 exceeded; remaining parts not parsed" in parsed.defects
    assert parsed.fatal == ""
    assert parsed.subject == "bomb"


@pytest.mark.timeout(30)
def test_ten_thousand_nested_rfc822_messages_are_cut_at_the_depth_limit() -> None:
    """message/rfc822 nested 10,000 times (no boundaries at all) is cut at max_depth."""
    raw = HEAD + b"Content-Type: message/rfc822\r\n\r\n" * 10_000 + b"\r\ninnermost\r\n"
    parsed = parse_message(raw)
    assert "depth limit 50 exceeded; remaining parts not parsed" in parsed.defects
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


@pytest.mark.timeout(30)
def test_reused_boundary_nesting_is_cut_at_the_parts_limit() -> None:
    """Nested multiparts that all reuse one boundary are siblings, and are counted."""
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 10_000 + b"x\r\n"
    parsed = parse_message(raw)
    assert "parts limit 1000 exceeded; remaining parts not parsed" in parsed.defects


@pytest.mark.timeout(30)
def test_delivery_status_blocks_count_as_parts() -> None:
    """A message/delivery-status with 100,000 header blocks is cut at max_parts."""
    blocks = b"Final-Recipient: rfc822; x@example.com\r\n\r\n" * 100_000
    raw = HEAD + b"Content-Type: message/delivery-status\r\n\r\n" + blocks
    parsed = parse_message(raw)
    assert "parts limit 1000 exceeded; remaining parts not parsed" in parsed.defects


@pytest.mark.timeout(30)
def test_semicolon_bomb_in_content_type_is_shortened() -> None:
    """A Content-Type with 100,000 ``;`` (quadratic in the stdlib) is shortened first."""
    raw = HEAD + b'Content-Type: text/plain; x="' + b";" * 100_000 + b'"\r\n\r\nbody'
    parsed = parse_message(raw)
    assert "content-type field shortened" in parsed.defects
    assert parsed.text == "body"


@pytest.mark.timeout(30)
def test_limits_beyond_the_interpreter_give_a_fatal_result_not_a_crash() -> None:
    """With max_depth raised past Python's recursion limit, deep nesting is fatal, not an error."""
    raw = HEAD + b"Content-Type: message/rfc822\r\n\r\n" * 3000 + b"\r\ninnermost\r\n"
    parsed = parse_message(raw, limits=ParseLimits(max_depth=100_000, max_parts=100_000))
    assert parsed.fatal == "message nested too deeply to parse (RecursionError)"
    assert parsed.parser == "none"


@pytest.mark.timeout(30)
def test_part_with_a_million_header_fields_keeps_only_its_mime_fields() -> None:
    """A part header of 1,000,000 fields (each lookup linear in compat32) is reduced first."""
    raw = (
        HEAD
        + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        + b"Content-Type: text/html\r\n"
        + b"X-Junk: y\r\n" * 1_000_000
        + b"\r\n<p>kept</p>\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert "part header block too large; only Content-* fields kept" in parsed.defects
    assert parsed.text == "kept"
