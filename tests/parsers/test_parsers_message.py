"""Message-level fields: ids, subject, date, headers, fallbacks and fatal results."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from parsers import ParsedMessage, parse_message


def _mail(*headers: str, body: str = "Hello.\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


SIMPLE = _mail(
    "From: Alice <alice@example.com>",
    "To: support@example.org",
    "Subject: Printer on fire",
    "Date: Tue, 3 Mar 2026 10:15:00 +0100",
    "Message-ID: <abc.123@example.com>",
)


def test_simple_message_fields() -> None:
    """A plain message yields its id, sender, subject, date, body and parser name."""
    parsed = parse_message(SIMPLE)
    assert isinstance(parsed, ParsedMessage)
    assert parsed.fatal == ""
    assert parsed.parser == "mail-parser"
    assert parsed.message_id == "abc.123@example.com"
    assert parsed.message_id_generated is False
    assert parsed.subject == "Printer on fire"
    assert parsed.text == "Hello.\n"
    assert parsed.sender is not None
    assert parsed.sender.addr_spec == "alice@example.com"
    assert [a.addr_spec for a in parsed.to] == ["support@example.org"]
    assert ("Subject", "Printer on fire") in parsed.headers


def test_missing_message_id_is_generated_from_sha256() -> None:
    """Without a Message-ID the id is the first 32 hex digits of SHA-256(raw) @generated."""
    raw = _mail("From: alice@example.com", "Subject: no id")
    parsed = parse_message(raw)
    digest = hashlib.sha256(raw).hexdigest()[:32]
    assert parsed.message_id == f"{digest}@generated.buzon.invalid"
    assert parsed.message_id_generated is True
    assert parse_message(raw).message_id == parsed.message_id


def test_empty_message_id_is_generated() -> None:
    """A Message-ID header holding only ``<>`` or spaces counts as missing."""
    parsed = parse_message(_mail("From: alice@example.com", "Message-ID: < >"))
    assert parsed.message_id_generated is True
    assert parsed.message_id.endswith("@generated.buzon.invalid")


def test_message_id_loses_brackets_and_folding_whitespace() -> None:
    """Angle brackets and whitespace (folded long ids) are removed from the Message-ID."""
    parsed = parse_message(_mail("From: a@example.com", "Message-ID:\r\n <part1.\r\n part2@x>"))
    assert parsed.message_id == "part1.part2@x"


def test_in_reply_to_and_references_are_bare_unique_and_ordered() -> None:
    """In-Reply-To and References give bracket-free ids, duplicates dropped, order kept."""
    parsed = parse_message(
        _mail(
            "From: a@example.com",
            "In-Reply-To: <b@x> (comment)",
            "References: <a@x> <b@x>\r\n <a@x> <c@x>",
        )
    )
    assert parsed.in_reply_to == ("b@x",)
    assert parsed.references == ("a@x", "b@x", "c@x")


def test_references_are_capped_at_100_keeping_root_and_latest() -> None:
    """Past 100 References the first id and the last 99 are kept."""
    ids = " ".join(f"<id{i}@x>" for i in range(250))
    parsed = parse_message(_mail("From: a@example.com", f"References: {ids}"))
    assert len(parsed.references) == 100
    assert parsed.references[0] == "id0@x"
    assert parsed.references[1] == "id151@x"
    assert parsed.references[-1] == "id249@x"


def test_mbox_from_line_is_skipped() -> None:
    """A leading mbox ``From `` line is not a header and does not break mail-parser."""
    parsed = parse_message(b"From alice@example.com Mon Jan  1 00:00:00 2024\n" + SIMPLE)
    assert parsed.fatal == ""
    assert parsed.parser == "mail-parser"
    assert parsed.subject == "Printer on fire"
    assert parsed.sender is not None and parsed.sender.verified


def test_leading_byte_order_mark_is_skipped() -> None:
    """A UTF-8 BOM before the headers (seen in the corpus) does not hide them."""
    parsed = parse_message(b"\xef\xbb\xbf" + SIMPLE)
    assert parsed.subject == "Printer on fire"
    assert "leading byte order mark skipped" in parsed.defects


def test_dsn_unlisted_recipients_group_does_not_crash() -> None:
    """``To: unlisted-recipients:; (no To-header on input)`` (cpython gh-83281) is no address."""
    parsed = parse_message(
        _mail(
            "From: MAILER-DAEMON@example.com",
            "To: unlisted-recipients:; (no To-header on input)",
            "Subject: Undelivered Mail Returned to Sender",
        )
    )
    assert parsed.fatal == ""
    assert parsed.to == ()


def test_encoded_crlf_in_subject_becomes_a_space() -> None:
    """SEC-01/SEC-05: an RFC 2047 subject hiding CR LF cannot carry a second header line."""
    parsed = parse_message(_mail("From: a@example.com", "Subject: =?utf-8?q?Hi=0D=0ABcc:_evil@x?="))
    assert parsed.subject == "Hi Bcc: evil@x"
    assert not {"\r", "\n", "\x00"} & set(parsed.subject)


def test_subject_controls_are_spaces_and_length_is_capped() -> None:
    """NUL, tabs and C1 controls become single spaces; the subject stops at 998 characters."""
    raw = b"From: a@example.com\r\nSubject: a\x00b\tc\xc2\x85d " + b"x" * 2000 + b"\r\n\r\nbody"
    parsed = parse_message(raw)
    assert parsed.subject.startswith("a b c d xxx")
    assert len(parsed.subject) == 998


def test_subject_with_unknown_charset_and_bad_base64_is_tolerated() -> None:
    """An encoded-word in an unknown charset or with broken base64 still decodes."""
    parsed = parse_message(
        _mail("From: a@example.com", "Subject: =?x-bogus?q?caf=C3=A9?= =?utf-8?b?w6l0w6k?=")
    )
    assert parsed.subject == "caféété"
    assert any("unknown charset" in d for d in parsed.defects)


def test_headers_are_decoded_one_line_and_capped() -> None:
    """Every header is listed decoded, without control characters, each value capped."""
    raw = _mail(
        "From: a@example.com",
        "X-Long: " + "y" * 5000,
        "X-Encoded: =?utf-8?q?=C3=BCber=0Anext?=",
    )
    headers = dict(parse_message(raw).headers)
    assert headers["X-Encoded"] == "über next"
    assert len(headers["X-Long"]) == 4096


def test_date_is_aware_utc() -> None:
    """A Date with an offset becomes the same instant in UTC."""
    parsed = parse_message(SIMPLE)
    assert parsed.date == datetime(2026, 3, 3, 9, 15, tzinfo=UTC)


def test_date_minus_zero_zone_is_utc() -> None:
    """``-0000`` means UTC (RFC 5322 3.3), not an unknown zone."""
    parsed = parse_message(_mail("From: a@example.com", "Date: 1 Jan 2024 12:00:00 -0000"))
    assert parsed.date == datetime(2024, 1, 1, 12, tzinfo=UTC)


def test_date_without_zone_or_garbage_is_none_with_defect() -> None:
    """A date without a time zone, or not a date at all, gives None and a defect."""
    naive = parse_message(_mail("From: a@example.com", "Date: 1 Jan 2024 12:00:00"))
    garbage = parse_message(_mail("From: a@example.com", "Date: next tuesday-ish"))
    out_of_range = parse_message(_mail("From: a@example.com", "Date: 31 Feb 2024 25:61:00 +0000"))
    assert naive.date is None and "Date has no usable time zone" in naive.defects
    assert garbage.date is None and "Date unparseable" in garbage.defects
    assert out_of_range.date is None and out_of_range.defects


def test_mail_parser_failure_falls_back_to_compat32() -> None:
    """When mail-parser raises (4.8.0 on this broken epilogue), compat32 parses and says so."""
    raw = (
        b"From: a@example.com\nSubject: broken\nContent-Type: multipart/mixed; boundary=x\n\n"
        b"--x\nContent-Type: multipart/alternative; boundary=never\n\nhello\n"
    )
    parsed = parse_message(raw)
    assert parsed.parser == "compat32"
    assert parsed.fatal == ""
    assert parsed.subject == "broken"
    assert any(d.startswith("mail-parser failed: AttributeError") for d in parsed.defects)


def test_mbox_corpus_file_falls_back_to_compat32(corpus_file: Callable[[str], bytes]) -> None:
    """The corpus mbox that crashes mail-parser 4.8.0 is read by compat32 instead."""
    parsed = parse_message(corpus_file("mimekit/UnitTests/TestData/mbox/simple.mbox.txt"))
    assert parsed.parser == "compat32"
    assert parsed.subject == "this'll probably break a lot of mime parsers"


def test_obsolete_space_before_colon_is_accepted(corpus_file: Callable[[str], bytes]) -> None:
    """``Subject :`` (RFC 822 obsolete syntax) is read as a header, not as body text."""
    parsed = parse_message(
        corpus_file("apache-james-mime4j/core/src/test/resources/testmsgs/obsolete.msg")
    )
    assert parsed.fatal == ""
    assert parsed.subject.startswith("The obsolete syntax allow spaces before the colon")


def test_empty_and_binary_inputs_are_fatal_with_generated_id() -> None:
    """Empty input, text without any header line and binary junk are fatal, with a reason."""
    for raw in (b"", b" \r\n\r\n", b"just some words\nand more words\n", bytes(range(256)) * 64):
        parsed = parse_message(raw)
        assert parsed.fatal, raw[:20]
        assert parsed.parser == "none"
        assert parsed.sender is None
        assert parsed.message_id_generated
        assert (
            parsed.message_id == f"{hashlib.sha256(raw).hexdigest()[:32]}@generated.buzon.invalid"
        )


def test_outlook_msg_file_is_fatal_with_a_clear_reason() -> None:
    """An Outlook .msg (OLE2) file is named as such in the fatal reason."""
    parsed = parse_message(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    assert "Outlook .msg" in parsed.fatal


def test_non_bytes_input_is_fatal_not_an_exception() -> None:
    """A caller passing str by mistake gets a fatal result instead of an exception."""
    parsed = parse_message("From: a@example.com\r\n\r\nhi")  # type: ignore[arg-type]
    assert parsed.fatal == "input is str, not bytes"


def test_message_without_headers_but_with_header_lines_later_is_not_fatal() -> None:
    """Broken mail is parsed with defects, not refused: a first non-header line is body."""
    parsed = parse_message(b"garbage first line\nFrom: a@example.com\n\nbody\n")
    assert parsed.fatal == ""
    assert "MissingHeaderBodySeparatorDefect" in parsed.defects
    assert "garbage first line" in parsed.text
