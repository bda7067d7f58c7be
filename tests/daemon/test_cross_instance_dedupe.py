"""Two instances given the same message at the same moment store it once (PostgreSQL).

The same mail often reaches a desk twice with different bytes: once by SMTP and once by
IMAP, or through two MX hosts that each add a ``Received:`` line. Dedupe then matches it by
Message-ID, sender and body, a look-up no unique index backs. Two instances processing the
two copies at once must not both find nothing and both store it: the look-up holds a
transaction lock on the Message-ID, so the second waits for the first's commit and finds it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon import config as config_mod
from daemon.ingest import Outcome
from daemon.parts import Parts, open_parts
from storage.models import Delivery, Message
from support.daemon import free_port, write_config
from support.mail import message

PAIRS = 12


@pytest.fixture
def two_instances(tmp_path: Path, pg_url: str) -> Iterator[tuple[Parts, Parts]]:
    """Two instances' parts (a spool each) on one PostgreSQL database."""
    with ExitStack() as stack:
        out = []
        for name in ("mx1", "mx2"):  # one after the other: opening runs the migrations
            path = write_config(tmp_path / name, free_port(), database=pg_url)
            out.append(stack.enter_context(open_parts(config_mod.load(str(path)), recover=True)))
        yield out[0], out[1]


def deliver(parts: Parts, raw: bytes, start: threading.Barrier, results: list[Outcome]) -> None:
    entry = parts.spool.put(raw, {"source": "smtp", "envelope": {"mail_from": "ana@cliente.es"}})
    claimed = parts.spool.claim(entry.id)
    assert claimed is not None
    start.wait(30)
    results.append(parts.processor.process(claimed))


def test_one_message_reaching_two_instances_at_once_is_stored_once(
    two_instances: tuple[Parts, Parts],
) -> None:
    a, b = two_instances
    outcomes: list[Outcome] = []
    ids = []
    for i in range(PAIRS):
        mid = f"<{uuid.uuid4().hex}@cliente.es>"
        ids.append(mid.strip("<>"))
        body = f"Hola,\nel servidor {i} no responde desde las 9.\n"
        copies = [
            message(f"Caso {i}", message_id=mid, body=body, headers=f"Received: from {mx}\n")
            for mx in ("mx1.desk.example", "mx2.desk.example")
        ]
        assert copies[0] != copies[1]  # different bytes: only the Message-ID look-up joins them
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=deliver, args=(p, raw, start, outcomes))
            for p, raw in zip((a, b), copies, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    kinds = sorted(o.outcome for o in outcomes)
    assert kinds == ["duplicate"] * PAIRS + ["stored"] * PAIRS, kinds
    with a.db.transaction() as s:
        per_id = dict(
            s.execute(
                select(Message.message_id, func.count())
                .where(Message.message_id.in_(ids))
                .group_by(Message.message_id)
            ).all()
        )
        duplicates = s.scalar(select(func.count()).where(Delivery.duplicate.is_(True)))
    assert per_id == {mid: 1 for mid in ids}  # one message row per Message-ID
    assert duplicates == PAIRS  # and the other copy a duplicate delivery of it
