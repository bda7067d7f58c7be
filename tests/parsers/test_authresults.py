"""SEC-02/SEC-04: Authentication-Results (RFC 8601) and whose DMARC verdict counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parsers import AuthResult, dmarc_fail_for, parse_message
from parsers.authresults import MAX_FIELDS, parse_field

NOBODY: frozenset[str] = frozenset()


def _results(*fields: str) -> tuple[AuthResult, ...]:
    head = "".join(f"Authentication-Results: {f}\r\n" for f in fields)
    parsed = parse_message(f"From: a@example.com\r\nSubject: x\r\n{head}\r\nbody".encode())
    assert parsed.fatal == ""
    return parsed.authentication


def test_gmail_pass_from_the_corpus(corpus_file: Callable[[str], bytes]) -> None:
    """crymap's DKIM sample: Google's folded field with comments gives dmarc=pass."""
    parsed = parse_message(corpus_file("crymap/src/test_data/dkim-lingl-rsa-sha1.eml"))
    assert parsed.authentication == (AuthResult("mx.google.com", "pass", "lin.gl"),)
    assert dmarc_fail_for(parsed.authentication, "lin.gl", NOBODY) is None


def test_gmail_fail_from_the_corpus(corpus_file: Callable[[str], bytes]) -> None:
    """nodemailer.eml: dmarc=fail (p=NONE dis=NONE) for kreata.ee, past an SRS mailfrom."""
    parsed = parse_message(corpus_file("nodemailer-mailparser/test/fixtures/nodemailer.eml"))
    fail = AuthResult("mx.google.com", "fail", "kreata.ee")
    assert parsed.authentication == (fail,)
    assert dmarc_fail_for(parsed.authentication, "Kreata.EE", NOBODY) == fail
    assert dmarc_fail_for(parsed.authentication, "kreata.ee", frozenset({"MX.google.com"})) == fail
    assert dmarc_fail_for(parsed.authentication, "other.example", NOBODY) is None


def test_microsoft_field_without_authserv_id(corpus_file: Callable[[str], bytes]) -> None:
    """bounce.txt: Microsoft 365 writes no authserv-id; methods still parse.

    ``Authentication-Results-Original`` below it (Proofpoint's copy) is not read.
    """
    parsed = parse_message(corpus_file("mimekit/UnitTests/TestData/messages/bounce.txt"))
    assert parsed.authentication == (AuthResult("", "fail", "hmail.jitbit.com"),)
    assert dmarc_fail_for(parsed.authentication, "hmail.jitbit.com", NOBODY) is not None
    assert dmarc_fail_for(parsed.authentication, "hmail.jitbit.com", frozenset({"mx"})) is None


def test_fields_without_dmarc_and_fields_inside_reports(
    corpus_file: Callable[[str], bytes],
) -> None:
    """SPF-only fields have dmarc ""; the field inside an ARF report part is not top-level."""
    spf_only = parse_message(corpus_file("spamscope-mail-parser/tests/mails/mail_test_17"))
    assert spf_only.authentication == (AuthResult("mailb.triara.com"),)
    arf = parse_message(corpus_file("mimekit/UnitTests/TestData/messages/feedback-report.txt"))
    assert arf.authentication == ()


def test_comments_quoted_strings_and_folding() -> None:
    """Nested comments vanish, quoted values and CFWS around '=' are read, folds unfolded."""
    (result,) = _results(
        'mx.buzon.example (Postfix; "v1") 1;\r\n\tspf=pass (sender (ok)) smtp.mailfrom=a@b;'
        '\r\n dkim = pass reason="good \\"sig\\"" header.d=b;\r\n'
        " dmarc (policy) = FAIL (p=reject dis=none) header.from = Example.COM."
    )
    assert result == AuthResult("mx.buzon.example", "fail", "example.com")


def test_quoted_authserv_id_and_address_in_header_from() -> None:
    """A quoted authserv-id is a value; an address in header.from gives its domain."""
    (result,) = _results('"mx.example.net"; dmarc=pass header.from="<ana@Cliente.ES>"')
    assert result == AuthResult("mx.example.net", "pass", "cliente.es")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example.net; none", AuthResult("mx.example.net")),
        ("mx.example.net", AuthResult("mx.example.net")),
        ("", AuthResult("")),
        (";;;", AuthResult("")),
        ("((((unterminated", AuthResult("")),
        ('"unterminated quote; dmarc=fail', AuthResult("unterminated quote; dmarc=fail")),
        ("mx; dmarc", AuthResult("mx")),
        ("mx; dmarc=", AuthResult("mx")),
        ("mx; =fail header.from=x.es", AuthResult("mx")),
        ("mx; dkim=pass; dmarc/1=temperror", AuthResult("mx", "temperror", "")),
        ("mx dmarc=fail header.from=x.es", AuthResult("mx", "fail", "x.es")),  # ";" missing
        ("mx; dmarc=fail) header.from=x.es", AuthResult("mx", "fail", "x.es")),  # stray ")"
        ("mx;\x00dmarc=fail", AuthResult("mx")),  # "\x00dmarc" is no method name
        ("mx; dmarc=\x1bfail\x7f header.from=\x00x.es", AuthResult("mx", "fail", "x.es")),
    ],
)
def test_garbage_never_raises(value: str, expected: AuthResult) -> None:
    """Hostile or truncated values give empty fields, never an exception."""
    assert parse_field(value) == expected


def test_untrusted_ids_only_the_topmost_field_counts() -> None:
    """Without trusted ids, a dmarc=fail below the topmost field (another hop's) is ignored."""
    results = _results(
        "mx.buzon.example; dmarc=pass header.from=cliente.es",
        "relay.cliente.es; dmarc=fail header.from=cliente.es",
    )
    assert [r.authserv_id for r in results] == ["mx.buzon.example", "relay.cliente.es"]
    assert dmarc_fail_for(results, "cliente.es", NOBODY) is None


def test_forged_pass_below_our_fail_does_not_help() -> None:
    """A sender-forged dmarc=pass below our MTA's dmarc=fail changes nothing."""
    results = _results(
        "mx.buzon.example; dmarc=fail (p=reject) header.from=cliente.es",
        "mx.buzon.example; dmarc=pass header.from=cliente.es",
    )
    assert dmarc_fail_for(results, "cliente.es", NOBODY) == results[0]
    trusted = frozenset({"mx.buzon.example"})
    assert dmarc_fail_for(results, "cliente.es", trusted) == results[0]


def test_trusted_ids_are_found_below_other_fields() -> None:
    """With trusted ids, our MTA's field counts wherever it is; others never do."""
    results = _results(
        "filter.local; dmarc=pass header.from=cliente.es",
        "MX.Buzon.Example; dmarc=fail header.from=cliente.es",
        "forged.example; dmarc=fail header.from=cliente.es",
    )
    trusted = frozenset({"mx.buzon.example"})
    assert dmarc_fail_for(results, "cliente.es", trusted) == results[1]
    assert dmarc_fail_for(results, "cliente.es", frozenset({"other.example"})) is None
    assert dmarc_fail_for(results, "cliente.es", NOBODY) is None  # the topmost says pass


def test_forged_fail_below_for_the_victim_domain_is_ignored() -> None:
    """A sender cannot get a customer's domain distrusted by adding a fail field below ours."""
    results = _results("mx.buzon.example; spf=pass", "mx.buzon.example; dmarc=fail")
    assert dmarc_fail_for(results, "cliente.es", NOBODY) is None


def test_header_from_must_match_or_be_absent() -> None:
    """A fail for another domain is not a fail for this one; no header.from counts for any."""
    other = _results("mx; dmarc=fail header.from=otro.es")
    assert dmarc_fail_for(other, "cliente.es", NOBODY) is None
    unnamed = _results("mx; dmarc=fail (p=reject)")
    assert dmarc_fail_for(unnamed, "cliente.es", NOBODY) == unnamed[0]
    assert dmarc_fail_for(unnamed, "", NOBODY) is None  # nothing to judge
    quarantine = _results("mx; dmarc=quarantine header.from=cliente.es")
    assert quarantine[0].dmarc == "quarantine"
    assert dmarc_fail_for(quarantine, "cliente.es", NOBODY) is None  # only "fail" is a fail


def test_arc_authentication_results_are_not_read() -> None:
    """ARC-Authentication-Results is an intermediary's view: never in ``authentication``."""
    parsed = parse_message(
        b"ARC-Authentication-Results: i=1; lists.example; dmarc=fail header.from=cliente.es\r\n"
        b"From: a@cliente.es\r\nSubject: x\r\n\r\nbody"
    )
    assert parsed.authentication == ()
    assert dmarc_fail_for(parsed.authentication, "cliente.es", NOBODY) is None


def test_number_and_size_of_fields_are_bounded() -> None:
    """At most 20 fields are read, topmost first; a 1 MB field is cut, not choked on."""
    fields = [f"mx{i}; dmarc=pass" for i in range(30)]
    results = _results(*fields)
    assert len(results) == MAX_FIELDS
    assert results[0].authserv_id == "mx0" and results[-1].authserv_id == f"mx{MAX_FIELDS - 1}"
    (huge,) = _results("mx; " + "spf=pass (" + "x" * 1_000_000 + ") ; dmarc=fail")
    assert huge == AuthResult("mx")  # dmarc lies past the bytes read
