"""Two instances given the same message, or one sender's two mails, at the same moment
(PostgreSQL): stored once, and in one ticket.

The same mail often reaches a desk twice with different bytes: once by SMTP and once by
IMAP, or through two MX hosts that each add a ``Received:`` line. Dedupe then matches it by
Message-ID, sender and body, a look-up no unique index backs. Two instances processing the
two copies at once must not both find nothing and both store it: the look-up holds a
transaction lock on the sender, so the second waits for the first's commit and finds it.
The same lock lets a reply reaching another instance while its original is being stored
find the original's ticket instead of opening one of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from daemon import config as config_mod
from daemon import pipeline
from daemon.ingest import Outcome
from daemon.parts import Parts, open_parts
from daemon.work import Work
from storage.models import Delivery, Message, Ticket
from support.daemon import free_port, write_config
from support.mail import message, message_and_reply

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


def test_a_reply_reaching_another_instance_mid_original_joins_its_ticket(
    two_instances: tuple[Parts, Parts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance A holds the original's transaction open at its last step; B is given the
    reply meanwhile. B must wait for A's commit: without the sender's lock it finds no
    ticket (A's is uncommitted) and opens a second one."""
    a, b = two_instances
    paused, release = threading.Event(), threading.Event()
    last = pipeline.STEPS["count_incident"]

    def pause_original(work: Work) -> None:
        if work.parsed is not None and work.parsed.message_id == "orig@cliente.es":
            paused.set()
            release.wait(30)
        last(work)

    monkeypatch.setitem(pipeline.STEPS, "count_incident", pause_original)
    outcomes: dict[str, Outcome] = {}

    def store(name: str, parts: Parts, raw: bytes) -> None:
        entry = parts.spool.put(raw, {"source": "smtp", "envelope": {"mail_from": "ana@x.es"}})
        claimed = parts.spool.claim(entry.id)
        assert claimed is not None
        outcomes[name] = parts.processor.process(claimed)

    # A first mail on each instance, one of them Ana's: the database's one-time rows and
    # Ana's contact are written then, not under the race (a concurrent insert of either
    # would make B wait, or retry, by itself).
    store("warm-a", a, message("Factura de octubre", sender="ana@x.es", body="¿Y la factura?\n"))
    store("warm-b", b, message("Alta de usuario", sender="eva@z.es"))
    original, reply = message_and_reply(
        "Sin acceso al panel",
        sender="ana@x.es",
        message_id="<orig@cliente.es>",
        reply_sender="Ana@X.es",
    )
    first = threading.Thread(target=store, args=("original", a, original))
    first.start()
    assert paused.wait(30)
    second = threading.Thread(target=store, args=("reply", b, reply))
    second.start()
    # B waits on the sender's lock, before anything else it does (without it, B would
    # go on and wait later, on the acknowledgement's rate-limit row that A holds).
    waited = _waits_on_an_advisory_lock(a, 10) and second.is_alive()
    release.set()
    first.join(30)
    second.join(30)
    assert outcomes["original"].outcome == outcomes["reply"].outcome == "stored"
    assert outcomes["reply"].ticket_ref == outcomes["original"].ticket_ref
    assert waited
    with a.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 3


def _waits_on_an_advisory_lock(parts: Parts, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with parts.db.engine.connect() as conn:
            waiting = conn.scalar(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            )
        if waiting:
            return True
        time.sleep(0.05)
    return False
