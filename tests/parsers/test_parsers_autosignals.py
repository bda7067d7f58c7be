"""LOOP-01..04: signals that a machine sent the message, from headers and reports."""

from __future__ import annotations

from collections.abc import Callable

from parsers import AutoSignals, parse_message

MESSAGES = "mimekit/UnitTests/TestData/messages/"


def test_postfix_bounce_is_a_dsn_bounce_from_a_null_sender(
    corpus_file: Callable[[str], bytes],
) -> None:
    """MimeKit's bounce.txt: DSN report, bounce, Auto-Submitted auto-replied, Return-Path <>."""
    auto = parse_message(corpus_file(MESSAGES + "bounce.txt")).auto
    assert auto.is_dsn and auto.is_bounce and not auto.is_mdn
    assert auto.auto_submitted == "auto-replied"
    assert auto.null_sender
    assert auto.is_automatic


def test_delivery_status_reports_are_dsns(corpus_file: Callable[[str], bytes]) -> None:
    """Every MimeKit delivery-status sample is recognised, including the DSN-header ones."""
    for name in (
        "delivery-status.txt",
        "delivery-status2.txt",
        "delivery-status-no-blank-line.txt",
        "delivery-status-multiple-blank-lines.txt",
        "delivery-status.anonymized.eml",
    ):
        parsed = parse_message(corpus_file(MESSAGES + name))
        assert parsed.fatal == "", name
        assert parsed.auto.is_dsn and parsed.auto.is_bounce, name
    sprynet = parse_message(corpus_file(MESSAGES + "delivery-status.txt"))
    assert sprynet.auto.precedence == "junk"


def test_disposition_notifications_are_mdns(corpus_file: Callable[[str], bytes]) -> None:
    """MimeKit's read receipts are MDNs, automatic, and not bounces."""
    for name in ("disposition-notification.txt", "disposition-notification.anonymized.eml"):
        auto = parse_message(corpus_file(MESSAGES + name)).auto
        assert auto.is_mdn and not auto.is_dsn and not auto.is_bounce, name
        assert auto.is_automatic


def test_loop_headers_are_read_and_normalised() -> None:
    """Auto-Submitted is lower-cased up to ``;``; Precedence, suppression and List-Id are kept."""
    raw = (
        b"From: robot@example.com\r\nAuto-Submitted: Auto-Replied; owner-email=x@y\r\n"
        b"Precedence: Bulk\r\nX-Auto-Response-Suppress: OOF, AutoReply\r\n"
        b"List-Id: Support news <news.example.com>\r\n\r\nbody"
    )
    auto = parse_message(raw).auto
    assert auto == AutoSignals(
        auto_submitted="auto-replied",
        precedence="bulk",
        auto_response_suppress="OOF, AutoReply",
        list_id="Support news <news.example.com>",
        kind="out_of_office",
        reason="Auto-Submitted: auto-replied",
    )


def test_classic_bounce_without_report_is_recognised() -> None:
    """A MAILER-DAEMON message with a bounce subject is a bounce even without a DSN part."""
    raw = (
        b"From: MAILER-DAEMON@mx.example.com\r\nSubject: failure notice\r\n"
        b"Return-Path: < >\r\n\r\nSorry, we were unable to deliver your message.\r\n"
    )
    auto = parse_message(raw).auto
    assert auto.is_bounce and not auto.is_dsn and auto.null_sender


def test_customer_mail_is_not_automatic() -> None:
    """A person's mail, even with a bounce-like subject, carries no machine signal."""
    raw = (
        b"From: Alice <alice@example.com>\r\nSubject: Re: undelivered parcel\r\n"
        b"Return-Path: <alice@example.com>\r\nAuto-Submitted: no\r\n\r\nWhere is it?\r\n"
    )
    auto = parse_message(raw).auto
    assert not auto.is_automatic
    assert auto.auto_submitted == "no"
