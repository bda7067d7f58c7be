"""MAIL FROM and RCPT TO paths read by daemon.smtp's fast path mean what aiosmtpd reads."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from daemon.smtp import IntakeSMTP

# The characters a path's parse turns on: atext, specials, encoded words' "=?", space,
# tab and other whitespace, 8-bit text.
ALPHABET = "aZ9.-_+=?!#'`~{}@<>()[]\\\",:; \t\x0b\xa0é"


def _protocols(limit: int) -> tuple[IntakeSMTP, SMTP]:
    ours, theirs = IntakeSMTP.__new__(IntakeSMTP), SMTP.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    return ours, theirs


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<ana@example.com>", ("ana@example.com", "")),
        (
            "<ana.b+tag@mail.example.com> SIZE=100 BODY=8BITMIME",
            ("ana.b+tag@mail.example.com", "SIZE=100 BODY=8BITMIME"),
        ),
        ("<>", ("<>", "")),
        ('<"ana b"@example.com>', ('"ana b"@example.com', "")),
        ("<ana@example.com> (comment) SIZE=1", ("ana@example.com", "SIZE=1")),
        ("<@relay.example:ana@example.com>", ("ana@example.com", "")),
        ("<ana@[192.0.2.1]>", ("ana@[192.0.2.1]", "")),
        ("<josé@ejemplo.es>", ("josé@ejemplo.es", "")),
        ("<ana..b@example.com>", ("ana..b@example.com", "")),
    ],
)
def test_paths_read_as_aiosmtpd_reads_them(
    arg: str, expected: tuple[str | None, str | None]
) -> None:
    """Plain paths (the fast path) and every other kind (aiosmtpd's parser) alike."""
    ours, theirs = _protocols(0)
    assert ours._getaddr(arg) == expected == theirs._getaddr(arg)


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet=ALPHABET, max_size=40).map(lambda s: "<" + s)
    | st.text(alphabet=ALPHABET, max_size=40),
    st.sampled_from([0, 3, 64]),
)
@example("<ana@example.com>\tSIZE=1", 0)
@example("<ana@example.com> ", 0)
@example("<abcd@example.com>", 3)
@example("<", 0)
@example("<9@[", 0)
@example("<=?utf-8?q?a?=@example.com>", 0)  # aiosmtpd decodes it as RFC 2047: a@example.com
@example("<a@b.example> \x0bSIZE=1", 0)
def test_any_path_reads_as_aiosmtpd_reads_it(arg: str, limit: int) -> None:
    """The same address and parameters, or the same refusal (None), for any text,
    ``local_part_limit`` included."""
    ours, theirs = _protocols(limit)
    try:
        expected = theirs._getaddr(arg)
    except (IndexError, AttributeError):  # CPython's parser crashed: malformed for us
        expected = (None, None)
    assert ours._getaddr(arg) == expected
