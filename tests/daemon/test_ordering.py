"""Two ingest workers store the mail of one conversation in arrival order, other mail side
by side (daemon/ordering.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from daemon.config import PipelineConfig, load
from daemon.ingest import IngestRunner
from daemon.ordering import Turns, order_keys
from daemon.parts import open_parts
from parsers import parse_message
from storage.models import Message, Ticket
from support.daemon import free_port, write_config
from support.mail import message


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
    turns.wait(first, frozenset({"ana@cliente.es"}))
    t, went = _in_thread(lambda: turns.wait(second, frozenset({"ana@cliente.es", "x@y"})))
    assert not went.wait(0.2)
    turns.done(first)
    assert went.wait(5)
    t.join()


def test_a_turn_waits_until_every_earlier_one_has_named_its_keys() -> None:
    """An earlier entry still parsing may belong to the same conversation."""
    turns = Turns()
    first, second = turns.take(), turns.take()
    t, went = _in_thread(lambda: turns.wait(second, frozenset({"luis@otro.es"})))
    assert not went.wait(0.2)
    turns.wait(first, frozenset({"ana@cliente.es"}))  # unrelated: the second may go now
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
    turns.wait(second, frozenset({"ana@cliente.es"}))  # the third is later: no wait
    turns.done(second)
    turns.wait(third, frozenset({"ana@cliente.es"}))
    turns.done(third)
    assert turns.open() == 0


def test_order_keys_name_the_sender_and_the_messages_referred_to() -> None:
    raw = message(
        "Re: web",
        sender="Ana@Cliente.es",
        message_id="<Reply@cliente.es>",
        headers="In-Reply-To: <orig@cliente.es>\r\nReferences: <root@x> <orig@cliente.es>\r\n",
    )
    keys = order_keys(parse_message(raw), {"mail_from": "bounce@lista.es"})
    assert keys == {
        "ana@cliente.es",
        "bounce@lista.es",
        "reply@cliente.es",
        "orig@cliente.es",
        "root@x",
    }
    assert order_keys(None, {"mail_from": ""}) == frozenset()


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
            parts.spool.put(
                message(f"Problema {i}", sender=who, message_id=f"<o{i}@cliente{i}.es>"),
                {"source": "smtp", "envelope": {"mail_from": who}},
            )
            parts.spool.put(
                message(
                    f"Re: Problema {i}",
                    sender=who,
                    body="Sigue igual.\n",
                    headers=f"In-Reply-To: <o{i}@cliente{i}.es>\r\n",
                ),
                {"source": "smtp", "envelope": {"mail_from": who}},
            )
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
