"""The same daemon on PostgreSQL: one URL setting, the same outcomes as on SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text

from conftest import corpus_files
from daemon.config import Config
from daemon.parts import open_parts
from storage import repository as repo
from storage.models import OutboxMail
from support.daemon import Daemon, free_port, run_cli, wait_until, write_config
from support.ingest import ingest_raw
from support.mail import message, send
from triage.refs import ref_for


def test_daemon_on_postgresql_end_to_end(
    daemon_factory: Callable[..., Daemon], pg_url: str
) -> None:
    """Mail with NUL bytes, bad charsets and a reply becomes tickets in PostgreSQL."""
    d = daemon_factory("pg", database=pg_url)
    first = (
        b"From: Ana <ana@cliente.es>\r\nSubject: =?x-unknown?q?caf=E9?=\r\n"
        b"Message-ID: <pg1@cliente.es>\r\nContent-Type: text/plain; charset=latin-9000\r\n"
        b"\r\nnul\x00byte and \xff\xfe invalid utf-8\r\n"
    )
    reply = (
        b"From: ana@cliente.es\r\nSubject: Re: cafe\r\nIn-Reply-To: <pg1@cliente.es>\r\n"
        b"\r\nsigue\r\n"
    )
    send(d.port, first)
    send(d.port, reply)
    wait_until(lambda: d.count("message.stored") >= 2, 30, what="two messages stored")
    rows = json.loads(d.cli("tickets", "list", "--json").stdout)
    assert [(r["ref"], r["message_count"]) for r in rows] == [("B-1", 2)]
    shown = json.loads(d.cli("tickets", "show", "B-1", "--json").stdout)
    assert "\x00" not in shown["messages"][0]["text"]
    assert d.stop() == 0
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT raw FROM messages ORDER BY id LIMIT 1")).scalar_one()
    engine.dispose()
    assert bytes(raw) == first


def test_corpus_into_postgresql(corpus: Path, tmp_path: Path, pg_url: str) -> None:
    """PARSE-06 / DB-01 in small: the whole corpus ingests into PostgreSQL with no failure
    and the same counts as SQLite."""
    files = [str(f) for f in corpus_files(corpus)]
    results = {}
    for name, database in (("pg", pg_url), ("sqlite", None)):
        cfg = write_config(tmp_path / name, free_port(), database=database)
        results[name] = json.loads(run_cli("--config", str(cfg), "ingest", "--json", *files).stdout)
    assert results["pg"]["failed"] == 0
    assert results["pg"] == results["sqlite"]


def test_a_new_ticket_is_written_once_with_its_ref_and_clocks(
    config_factory: Callable[..., Config], pg_url: str
) -> None:
    """On PostgreSQL a new ticket's id is drawn first, so its row goes in once, at the
    flush, with its ref, its defaults and its SLA stamp: no INSERT to learn the id followed
    by an UPDATE of the same row. Its acknowledgement's outbox row, inserted before that
    flush, refers to it (the reference is checked at commit)."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.lstrip())

    with open_parts(config_factory(database=pg_url), recover=True) as parts:
        event.listen(parts.db.engine, "before_cursor_execute", seen)
        out = ingest_raw(parts, message("La web no carga desde ayer", sender="eva@cliente.es"))
        event.remove(parts.db.engine, "before_cursor_execute", seen)
        assert out.outcome == "stored" and out.ticket_ref
        with parts.db.transaction() as s:
            t = repo.ticket_alone(s, out.ticket_ref)
            assert t is not None and t.ref == ref_for(t.id)
            assert t.sla_policy and t.assign_by is not None and t.clocks is not None
            acks = s.scalars(select(OutboxMail).where(OutboxMail.kind == "ack")).all()
            assert [a.ticket_id for a in acks] == [t.id]
    assert len([s for s in statements if s.startswith("INSERT INTO tickets")]) == 1
    assert not [s for s in statements if s.startswith("UPDATE tickets")]
