"""Sender verification (SEC-02, CVE-2023-27043) and tolerant recipient lists."""

from __future__ import annotations

import pytest

from parsers import Address, parse_message


def _sender(*from_headers: str) -> Address:
    head = "".join(f"From: {value}\r\n" for value in from_headers)
    parsed = parse_message(f"{head}To: support@example.org\r\n\r\nbody\r\n".encode())
    assert parsed.sender is not None
    return parsed.sender


@pytest.mark.parametrize(
    ("header", "addr_spec", "display"),
    [
        ("Alice <alice@example.com>", "alice@example.com", "Alice"),
        ('"Smith, Alice" <Alice.Smith@Example.COM>', "Alice.Smith@example.com", "Smith, Alice"),
        ("alice@example.com", "alice@example.com", ""),
        ("alice@example.com (Alice in comment)", "alice@example.com", "Alice in comment"),
        ("=?utf-8?q?J=C3=B6rg?= <jorg+tag@mail.example.de>", "jorg+tag@mail.example.de", "Jörg"),
        ('"alice@example.com" <alice@example.com>', "alice@example.com", "alice@example.com"),
        ("user@[192.0.2.1]", "user@[192.0.2.1]", ""),
        ("Ünïcode <ünï@exämple.com>", "ünï@exämple.com", "Ünïcode"),
        ("Folded\r\n\t<folded@example.com>", "folded@example.com", "Folded"),
    ],
)
def test_one_valid_mailbox_is_verified(header: str, addr_spec: str, display: str) -> None:
    """One well-formed mailbox is verified; domain lower-cased, local part kept as written."""
    sender = _sender(header)
    assert sender == Address(addr_spec, display, True, "")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("alice@example.com, bob@example.com", "From has 2 addresses"),
        ('"alice@bank.com" <mallory@evil.com>', "display name contains a different address"),
        ("alice@bank.com <mallory@evil.com>", "display name contains a different address"),
        ("=?utf-8?q?alice=40bank=2Ecom?= <mallory@evil.com>", "different address"),
        ("Alice (alice@bank.com) <mallory@evil.com>", "different address"),
        ("mallory@evil.com (alice@bank.com)", "different address"),
        ("=?utf-8?b?YWxpY2VAYmFuay5jb20=?=", "encoded-word in address"),
        ("=?utf-8?q?alice?=@bank.com", "encoded-word in address"),
        ("alice@example.org)<bob@example.org>", "malformed"),
        ("<alice@example.org> <bob@example.org>", "malformed angle address"),
        ('"alice@bank.com"@evil.com', "quoted local part"),
        ("alice@(comment)example.com", "comment inside address"),
        ("alice smith@example.com", "whitespace inside address"),
        ("alice@@example.com", "several '@'"),
        ("alice@localhost", "domain without a dot"),
        ("alice@exa_mple.com", "invalid domain label"),
        ("alice..smith@example.com", "empty label in local part"),
        ("<@route.example:alice@example.com>", "obsolete route"),
        ("Alice <alice@example.com", "malformed angle address"),
        ("friends: alice@example.com;", "group syntax in From"),
        ("undisclosed-recipients:;", "From has no address"),
        ("Alice", "no '@' in address"),
        ("a\x01lice@example.com", "control character"),
    ],
)
def test_ambiguous_or_malformed_sender_is_unverified(header: str, problem: str) -> None:
    """Anything ambiguous or malformed keeps an address but is unverified, with the reason."""
    sender = _sender(header)
    assert sender.verified is False
    assert problem in sender.problem


def test_two_from_headers_are_unverified() -> None:
    """Two From fields are ambiguous even when each holds one valid address."""
    sender = _sender("alice@example.com", "bob@example.com")
    assert sender.verified is False
    assert "2 From headers" in sender.problem


def test_missing_from_is_an_unverified_empty_address() -> None:
    """Without a From header the sender is an empty, unverified Address saying so."""
    parsed = parse_message(b"To: support@example.org\r\nSubject: hi\r\n\r\nbody")
    assert parsed.sender == Address("", "", False, "no From header")


def test_non_utf8_8bit_from_is_unverified() -> None:
    """Raw 8-bit bytes in From that are not UTF-8 make the sender unverified."""
    parsed = parse_message(b"From: J\xf6rg <joerg@example.com>\r\n\r\nbody")
    assert parsed.sender is not None
    assert parsed.sender.verified is False
    assert parsed.sender.display_name == "Jörg"
    assert "not valid UTF-8" in parsed.sender.problem


def test_deeply_nested_comments_do_not_crash() -> None:
    """Parentheses that make ``email.utils.getaddresses`` recurse are handled linearly."""
    sender = _sender("(" * 50_000 + "alice@example.com")
    assert sender.verified is False


def test_recipient_lists_are_tolerant_and_report_validity() -> None:
    """To and Cc keep every mailbox, groups contribute members, validity shows in ``verified``."""
    raw = (
        b"From: a@example.com\r\n"
        b"To: Bob <bob@example.com>, broken@@x, team: carol@example.com, dave@example.com;\r\n"
        b"Cc: undisclosed-recipients:;\r\n"
        b"Reply-To: <help@example.com>\r\n\r\nbody"
    )
    parsed = parse_message(raw)
    assert [(a.addr_spec, a.verified) for a in parsed.to] == [
        ("bob@example.com", True),
        ("broken@@x", False),
        ("carol@example.com", True),
        ("dave@example.com", True),
    ]
    assert parsed.cc == ()
    assert [a.addr_spec for a in parsed.reply_to] == ["help@example.com"]


def test_recipient_list_is_capped_at_1000_addresses() -> None:
    """A To list of 1500 addresses keeps 1000 and says the rest were dropped."""
    to = ", ".join(f"u{i}@example.com" for i in range(1500))
    parsed = parse_message(f"From: a@example.com\r\nTo: {to}\r\n\r\nbody".encode())
    assert len(parsed.to) == 1000
    assert "to has more than 1000 addresses; rest dropped" in parsed.defects
