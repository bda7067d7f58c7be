"""Two ingest workers store the mail of one conversation in arrival order, other mail side
by side (daemon/ordering.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from conftest import corpus_files
from daemon import pipeline
from daemon.config import PipelineConfig, load
from daemon.ingest import IngestProcessor, IngestRunner
from daemon.ordering import Turns, order_keys
from daemon.parsepool import ParserPool
from daemon.parts import Parts, open_parts
from daemon.work import Work
from parsers import parse_message
from storage.models import Message, Ticket
from support.daemon import free_port, wait_until, write_config
from support.mail import message, message_and_reply
from support.parsefns import hang_on_marker


def _in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, threading.Event]:
    finished = threading.Event()

    def run() -> None:
        fn()
        finished.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, finished


def test_a_turn_waits_for_an_earlier_one_sharing_a_key_until_it_is_done() -> None:
    turns = Turns()
    first, second = turns.take(), turns.take()
    turns.name(first, frozenset({"ana@cliente.es"}))
    turns.name(second, frozenset({"ana@cliente.es", "x@y"}))
    t, went = _in_thread(lambda: turns.wait(second))
    assert not went.wait(0.2)
    turns.done(first)
    assert went.wait(5)
    t.join()


def test_a_turn_waits_until_every_earlier_one_has_named_its_keys() -> None:
    """An earlier entry not yet read may belong to the same conversation."""
    turns = Turns()
    first, second = turns.take(), turns.take()
    turns.name(second, frozenset({"luis@otro.es"}))
    t, went = _in_thread(lambda: turns.wait(second))
    assert not went.wait(0.2)
    turns.name(first, frozenset({"ana@cliente.es"}))  # unrelated: the second may go now
    assert went.wait(5)
    t.join()
    assert turns.open() == 2
    turns.done(second)
    turns.done(first)
    assert turns.open() == 0


def test_later_and_finished_turns_never_hold_one_back() -> None:
    turns = Turns()
    first, second, third = turns.take(), turns.take(), turns.take()
    turns.done(first)  # e.g. claimed by another process: never worked on
    turns.name(second, frozenset({"ana@cliente.es"}))
    _, went = _in_thread(lambda: turns.wait(second))
    assert went.wait(5)  # the third is later and has named nothing: no wait
    turns.done(second)
    turns.name(third, frozenset({"ana@cliente.es"}))
    _, went = _in_thread(lambda: turns.wait(third))
    assert went.wait(5)
    turns.done(third)
    turns.name(third, frozenset({"late"}))  # naming a finished turn reopens nothing
    assert turns.open() == 0


def test_order_keys_name_the_senders_and_the_messages_referred_to() -> None:
    raw = message(
        "Re: web",
        sender="Ana@Cliente.es",
        message_id="<Reply@cliente.es>",
        headers=(
            "Sender: =?utf-8?q?Se=C3=B1or?= <agente@desk.es>\r\n"
            "In-Reply-To: <orig@cliente.es>\r\n"
            "References: <root@x>\r\n <orig@cliente.es>\r\n"
        ),
        body="From: <not-a-header@x.es>\nMessage-ID: <nor-this@x.es>\n",
    )
    keys = order_keys(b"\xef\xbb\xbf\r\n" + raw, {"mail_from": "bounce@lista.es"})
    # The envelope sender is a list's or a relay's as often as not: a header's counts.
    assert keys == {
        "ana@cliente.es",
        "agente@desk.es",
        "reply@cliente.es",
        "orig@cliente.es",
        "root@x",
    }
    assert order_keys(b"Subject: sin remitente\r\n\r\nx", {"mail_from": "<Eva@Z.es>"}) == {
        "eva@z.es"
    }
    assert order_keys(b"no header block at all", {"mail_from": ""}) == frozenset()
    assert order_keys(b"Message-ID: 102.1020\r\n\r\n", {}) == {"102.1020"}
    free_text = b"From: a@b.es\r\nIn-Reply-To: Your message of Tue, 1 Dec\r\n\r\n"
    assert order_keys(free_text, {}) == {"a@b.es"}  # "your" would tie unrelated mail


@pytest.mark.parametrize(
    "raw",
    [
        b"From: Ana " + b"(" * 600 + b" <ana@x.es>\r\n\r\n",  # Python's parser recurses
        b"From: " + b"a@b:" * 100_000 + b"\r\n\r\n",
        b"From: " + b"@" * 300_000,
        b"References: " + b"<a@b> " * 60_000 + b"\r\n\r\n",
        bytes(range(256)) * 2000,
    ],
    ids=["nested-comments", "colons", "ats", "references", "binary"],
)
def test_order_keys_take_any_bytes(raw: bytes) -> None:
    """No header makes naming keys fail: a failure would cost the message an attempt."""
    keys = order_keys(raw, {"mail_from": "x@y.es"})
    assert all(len(k) < 1300 for k in keys)


def test_order_keys_agree_with_the_parser_on_the_whole_corpus(corpus: Path) -> None:
    """Every sender, Message-ID and reference the parser finds in the shared corpus is a
    key: read from the raw header block, the keys do not wait for the parse."""
    missing = []
    for f in corpus_files(corpus):
        raw = f.read_bytes()
        parsed = parse_message(raw)
        keys = order_keys(raw, {})
        wanted = {r.lower() for r in (*parsed.in_reply_to, *parsed.references)}
        if parsed.sender is not None and parsed.sender.addr_spec:
            wanted.add(parsed.sender.addr_spec.lower())
        if parsed.message_id and not parsed.message_id_generated:
            wanted.add(parsed.message_id.lower())
        if not wanted <= keys:
            missing.append((f.name, sorted(wanted - keys)))
    assert missing == []


def test_a_message_hanging_its_parser_holds_back_only_its_own_conversation(
    parts: Parts,
) -> None:
    """Two workers: one stays on a message whose parse hangs until the time limit; the
    other stores the mail behind it from other senders meanwhile, and then waits with
    the hung sender's next mail until its first is settled (quarantined, here)."""
    pool = ParserPool(2, 10, parse=hang_on_marker)
    try:
        processor = IngestProcessor(parts.spool, parts.db, pool, parts.blobs)
        hung = message("Cuelga", sender="ana@x.es", headers="X-Hang-Parser: yes\r\n")
        parts.spool.put(hung, {"source": "smtp"})
        for i in range(5):
            parts.spool.put(message(f"Normal {i}", sender=f"c{i}@y{i}.es"), {"source": "smtp"})
        after = message("Otra", sender="ana@x.es", body="Y otra cosa.\n")
        parts.spool.put(after, {"source": "smtp"})
        runner = IngestRunner(processor, PipelineConfig(parse_workers=2, poll_interval=0.05))
        runner.start()
        try:
            # Inside the 10 s limit: without keys read before the parse, every entry
            # behind the hung one would wait for its parse to end.
            wait_until(lambda: _count(parts, Message) >= 5, 8, what="the other senders' mail")
            with parts.db.transaction() as s:
                froms = list(s.scalars(select(Message.from_addr)))
            assert "ana@x.es" not in froms
            wait_until(lambda: _count(parts, Message) == 7, 40, what="Ana's mail settled")
            with parts.db.transaction() as s:
                rows = s.execute(select(Message.id, Message.state, Message.subject)).all()
            (hung_row,) = [r for r in rows if r.state == "quarantined"]  # parse timed out
            (next_row,) = [r for r in rows if r.subject == "Otra"]
            assert next_row.state == "done" and hung_row.id < next_row.id
        finally:
            runner.stop(30)
        assert runner.turns.open() == 0
    finally:
        pool.close()


def test_a_retried_message_keeps_its_turn(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original fails once with a transient error (a deadlock, a killed session):
    its reply, waiting behind it, must not be stored first and open a ticket of its own."""
    thread = pipeline.STEPS["thread"]
    failed: list[str] = []

    def fail_once(work: Work) -> None:
        if work.parsed is not None and work.parsed.message_id == "o@x.es" and not failed:
            failed.append(work.spool_id)
            raise OperationalError("SELECT 1", {}, Exception("injected: server closed"))
        thread(work)

    monkeypatch.setitem(pipeline.STEPS, "thread", fail_once)
    original, reply = message_and_reply(
        "Sin acceso al panel", sender="ana@x.es", message_id="<o@x.es>"
    )
    parts.spool.put(original, {"source": "smtp"})
    parts.spool.put(reply, {"source": "smtp"})
    runner = IngestRunner(parts.processor, PipelineConfig(parse_workers=2, poll_interval=0.05))
    runner.start()
    try:
        wait_until(lambda: _count(parts, Message) == 2, 30, what="both stored")
    finally:
        runner.stop(10)
    assert failed
    with parts.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 1


def _count(parts: Parts, model: type) -> int:
    with parts.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_replies_join_their_original_with_two_workers_on_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    """Each customer's message and reply, spooled back to back, make one ticket: without
    ordering the reply is often stored while its original's ticket is uncommitted, and
    opens a second ticket (seen in test_daemon_on_postgresql_end_to_end)."""
    cfg = load(str(write_config(tmp_path / "cfg", free_port(), database=pg_url)))
    assert cfg.pipeline.parse_workers == 2  # the PostgreSQL default
    pairs = 80
    with open_parts(cfg, recover=True) as parts:
        for i in range(pairs):
            who = f"c{i}@cliente{i}.es"
            pair = message_and_reply(f"Problema {i}", sender=who, message_id=f"<o{i}@c{i}.es>")
            for raw in pair:
                parts.spool.put(raw, {"source": "smtp", "envelope": {"mail_from": who}})
        runner = IngestRunner(parts.processor, cfg.pipeline)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while parts.spool.pending() or parts.spool.depth()["cur"]:
                assert time.monotonic() < deadline, "spool did not drain"
                time.sleep(0.05)
        finally:
            runner.stop(10)
        assert runner.turns.open() == 0
        with parts.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Message)) == 2 * pairs
            per_ticket = s.execute(
                select(func.count(Message.id))
                .join(Ticket, Message.ticket_id == Ticket.id)
                .group_by(Ticket.id)
            ).scalars()
            assert sorted(per_ticket) == [2] * pairs


def test_one_worker_stays_the_sqlite_default(tmp_path: Path) -> None:
    cfg = load(str(write_config(tmp_path / "cfg", free_port())))
    assert cfg.pipeline.parse_workers == 1
    assert PipelineConfig().parse_workers == 0  # "automatic" until the database is known
