"""PARSE-01 for the parser: every corpus file parses, quickly, without an exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import corpus_files
from parsers import ParsedMessage, parse_message

# Not RFC 5322 at all: an Outlook .msg file and mime4j's two "no header at all" samples.
_EXPECTED_FATAL = {
    "apache-james-mime4j/core/src/test/resources/testmsgs/malformedHeader-noheader.msg",
    "apache-james-mime4j/core/src/test/resources/testmsgs/malformedHeaderStartsBody-noheader.msg",
    "spamscope-mail-parser/tests/mails/mail_outlook_1",
}


def _assert_clean(parsed: ParsedMessage) -> None:
    for text in (parsed.text, parsed.subject, *(v for _, v in parsed.headers)):
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogates: storable in PostgreSQL
    assert not {"\r", "\n"} & set(parsed.subject)
    assert len(parsed.defects) <= 100


@pytest.mark.timeout(120)
def test_every_corpus_file_parses(corpus: Path) -> None:
    """All ~250 corpus files give a ParsedMessage; only the known non-messages are fatal."""
    files = corpus_files(corpus)
    assert len(files) >= 240, f"corpus looks incomplete: {len(files)} files"
    fatal: dict[str, str] = {}
    parsers: dict[str, int] = {}
    for path in files:
        parsed = parse_message(path.read_bytes())
        name = path.relative_to(corpus).as_posix()
        parsers[parsed.parser] = parsers.get(parsed.parser, 0) + 1
        if parsed.fatal:
            fatal[name] = parsed.fatal
        _assert_clean(parsed)
    assert set(fatal) == _EXPECTED_FATAL, fatal
    assert all(reason.startswith("not a message") for reason in fatal.values())
    assert parsers.get("compat32", 0) <= 5, parsers


def test_corpus_forwarded_messages_keep_their_bytes(corpus: Path) -> None:
    """Every message/* attachment in the corpus is a byte-exact slice of its raw file."""
    checked = 0
    for path in corpus_files(corpus):
        raw = path.read_bytes()
        for attachment in parse_message(raw).attachments:
            if attachment.content_type.startswith("message/") and attachment.size:
                assert attachment.content in raw or b"base64" in raw.lower(), path
                checked += 1
    assert checked > 50
