"""PARSE-06: wrong, unknown and exotic charsets and NUL bytes are stored on both backends.

Each message goes through the real spool, parser pool and ingest transaction, then is
read back over a new connection: the raw bytes byte-exact, the subject and body as
the reader should see them (decoded, no NUL, no lone surrogate), on SQLite and on
PostgreSQL (whose ``text`` rejects NUL and invalid UTF-8).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from daemon import config as config_mod
from daemon.parts import Parts, open_parts
from storage.engine import Database
from storage.models import Message
from support.ingest import ingest_raw
from support.invariants import assert_invariants


def _b64(text: str, charset: str) -> str:
    return base64.b64encode(text.encode(charset)).decode("ascii")


_HEAD = "From: Ana <ana@cliente.es>\r\nMessage-ID: <{}@cliente.es>\r\n"

# name: (what follows From and Message-ID, subject read back, text read back)
CASES: dict[str, tuple[bytes, str, str]] = {
    "unknown-label": (
        b"Subject: =?x-klingon?q?caf=C3=A9?=\r\n"
        b"Content-Type: text/plain; charset=x-klingon\r\n\r\ncaf\xc3\xa9 con leche\r\n",
        "café",
        "café con leche\n",
    ),
    "ascii-label-over-utf8": (
        b"Subject: Espa\xc3\xb1ol\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nNi\xc3\xb1o peque\xc3\xb1o\r\n",
        "Español",
        "Niño pequeño\n",
    ),
    "utf8-label-over-latin1": (
        b"Subject: =?utf-8?q?=E9t=E9?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xe9t\xe9 \xe0 Paris\r\n",
        "été",
        "été à Paris\n",
    ),
    "utf-7": (
        b"Subject: =?utf-7?q?Hi_Mom_-+Jjo--!?=\r\n"
        b"Content-Type: text/plain; charset=utf-7\r\n\r\n"
        + "Café ☺ 日本".encode("utf-7")
        + b"\r\n",
        "Hi Mom -☺-!",
        "Café ☺ 日本\n",
    ),
    "utf-7-lone-surrogates": (
        b"Subject: =?utf-7?q?half_+2D3YAA-_emoji?=\r\n"
        b"Content-Type: text/plain; charset=utf-7\r\n\r\nlone +2D3YAA- surrogate\r\n",
        "half emoji",
        "lone  surrogate\n",
    ),
    "iso-2022-jp": (
        f"Subject: =?iso-2022-jp?b?{_b64('日本語の件名', 'iso-2022-jp')}?=\r\n".encode()
        + b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
        + "日本語のメールです。\r\n".encode("iso-2022-jp"),
        "日本語の件名",
        "日本語のメールです。\n",
    ),
    "gb18030-labelled-gb2312": (
        ("Subject: =?gb18030?b?" + _b64("中文邮件 \U00020000", "gb18030") + "?=\r\n").encode()
        + b"Content-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "中文邮件、扩展字 \U00020000 和 €\r\n".encode("gb18030"),
        "中文邮件 \U00020000",
        "中文邮件、扩展字 \U00020000 和 €\n",
    ),
    "nul-in-header-and-body": (
        b"Subject: nul\x00byte\r\nX-Nul: a\x00b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nbefore\x00after\r\n",
        "nul byte",
        "beforeafter\n",
    ),
    "invalid-utf8-kept-as-surrogateescape": (
        b"Subject: caf\xe9 \xed\xa0\x80\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nz\xed\xb2\x80w\r\n",
        "café í €",
        "zí²€w\n",
    ),
    "non-bmp-emoji": (
        f"Subject: =?utf-8?b?{_b64('¡Gracias! 😀', 'utf-8')}?= 🎉\r\n".encode()
        + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + "hola 😀 👩\u200d👩\u200d👧 𝄞\r\n".encode(),
        "¡Gracias! 😀 🎉",
        "hola 😀 👩\u200d👩\u200d👧 𝄞\n",
    ),
}


def _raw(name: str) -> bytes:
    return _HEAD.format(name).encode() + CASES[name][0]


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def backend_parts(
    request: pytest.FixtureRequest, config_factory: Callable[..., config_mod.Config]
) -> Iterator[tuple[config_mod.Config, Parts]]:
    """Spool, parser pool and ingest on SQLite or on a scratch PostgreSQL database."""
    database = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    cfg = config_factory(database=database)
    with open_parts(cfg, recover=True) as parts:
        yield cfg, parts


def test_parse06_exotic_charsets_and_nul_are_stored_and_read_back(
    backend_parts: tuple[config_mod.Config, Parts],
) -> None:
    """Every case is stored (not quarantined); read back over a new connection, its raw
    bytes are byte-exact and its subject and text are the decoded, NUL-free reading."""
    cfg, parts = backend_parts
    outcomes = {name: ingest_raw(parts, _raw(name)).outcome for name in CASES}
    assert outcomes == dict.fromkeys(CASES, "stored")

    db = Database(cfg.storage.database)
    try:
        with db.session() as session:
            rows = {
                m.message_id.split("@", 1)[0]: (bytes(m.raw), m.subject, m.text, m.state)
                for m in session.scalars(select(Message))
            }
    finally:
        db.dispose()
    expected = {
        name: (_raw(name), subject, text, "done") for name, (_, subject, text) in CASES.items()
    }
    wrong = {name: rows.get(name) for name in CASES if rows.get(name) != expected[name]}
    assert wrong == {}, f"read back differently (raw, subject, text, state): {wrong}"
    assert_invariants(cfg)
