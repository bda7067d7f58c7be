"""The ingest pipeline: one message row per message, one ticket per matter, nothing lost."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from daemon.config import PipelineConfig
from daemon.ingest import IngestProcessor, IngestRunner
from daemon.parsepool import ParserPool
from daemon.parts import Parts
from storage import repository as repo
from storage.models import Attachment, Delivery, Message, Ticket
from support.daemon import wait_until
from support.ingest import ingest_raw
from support.mail import message
from support.parsefns import crash_on_marker, hang_on_marker
from triage.durations import Duration
from triage.policy import DEFAULT_CALENDARS


def count(parts: Parts, model: type) -> int:
    with parts.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_new_message_opens_stamped_ticket(parts: Parts) -> None:
    """A first message opens a ticket with its ref, deadlines and audit events."""
    out = ingest_raw(parts, message("Mi web no carga"))
    assert out.outcome == "stored" and out.ticket_ref == "B-1"
    with parts.db.transaction() as s:
        t = repo.ticket(s, "B-1")
        assert t is not None
        assert (t.status, t.subject, t.customer, t.channel) == (
            "open",
            "Mi web no carga",
            "ana@cliente.es",
            "email",
        )
        # Seed 000's support clocks in the office's business hours, whenever the test runs.
        office, hour = DEFAULT_CALENDARS["office"], Duration(1, "bh")
        assert t.assign_by == hour.add(t.created_at, office)
        assert t.respond_by == hour.add(t.assign_by, office)
        kinds = [e.kind for e in t.events]
        assert kinds == ["created", "classified", "stamped", "ack_queued"]
        assert t.events[2].data["result"]["respond_by"] == t.respond_by.isoformat()
        assert t.events[2].data["policy"] == t.sla_policy == "support"
        assert t.messages[0].text.startswith("Hola")


@pytest.mark.parametrize("header", ["In-Reply-To", "References"])
def test_reply_joins_by_header(parts: Parts, header: str) -> None:
    """A reply naming the first message joins its ticket and records the rule."""
    ingest_raw(parts, message(message_id="<first@cliente.es>"))
    out = ingest_raw(parts, message("Re: Mi web", headers=f"{header}: <first@cliente.es>\r\n"))
    assert out.ticket_ref == "B-1"
    with parts.db.transaction() as s:
        t = repo.ticket(s, "B-1")
        assert t is not None and t.message_count == 2
        added = [e for e in t.events if e.kind == "message_added"]
        assert len(added) == 1 and added[0].data["rule"] == header.lower()
        assert t.events[-1].kind == "customer_message"  # and the reply clock re-stamped


def test_reply_joins_by_subject_tag(parts: Parts) -> None:
    """A subject carrying [#B-1] from the requester joins B-1."""
    ingest_raw(parts, message())
    out = ingest_raw(parts, message("Re: [#B-1] sigue sin funcionar"))
    assert out.ticket_ref == "B-1"


def test_sec04_stranger_quoting_a_ticket_gets_own_ticket(parts: Parts) -> None:
    """SEC-04: another sender using B-1's tag and Message-ID opens B-2, and B-2 says why."""
    ingest_raw(parts, message(message_id="<first@cliente.es>"))
    out = ingest_raw(
        parts,
        message(
            "Re: [#B-1] dame acceso",
            sender="mallory@evil.example",
            headers="In-Reply-To: <first@cliente.es>\r\n",
        ),
    )
    assert out.ticket_ref == "B-2"
    with parts.db.transaction() as s:
        t = repo.ticket(s, "B-2")
        assert t is not None
        assert "mallory@evil.example is not the requester" in t.events[0].data["reason"]


def test_same_bytes_twice_is_one_message_two_deliveries(parts: Parts) -> None:
    """DUR-05 at the pipeline: the same raw bytes again make no new row, only a delivery."""
    raw = message()
    assert ingest_raw(parts, raw).outcome == "stored"
    assert ingest_raw(parts, raw, source="imap:test/INBOX").outcome == "duplicate"
    assert count(parts, Message) == 1 and count(parts, Delivery) == 2 and count(parts, Ticket) == 1


def test_same_message_relayed_with_extra_headers_is_duplicate(parts: Parts) -> None:
    """Same Message-ID, sender and body but an extra Received line: one message."""
    raw = message(message_id="<same@cliente.es>")
    ingest_raw(parts, raw)
    relayed = b"Received: from mx by relay; Fri, 20 Nov 2026 10:00:05 +0100\r\n" + raw
    assert ingest_raw(parts, relayed).outcome == "duplicate"
    assert count(parts, Message) == 1
    with parts.db.transaction() as s:
        kept = s.scalars(select(Delivery.raw).order_by(Delivery.id)).all()
    assert kept == [None, relayed]  # the differing copy's bytes are kept too


def test_reused_message_id_with_other_content_is_kept(parts: Parts) -> None:
    """A mailer that reuses one Message-ID for different mail does not lose the second one,
    even when the subject and date are the same too."""
    ingest_raw(parts, message("Uno", message_id="<constant@broken.example>", body="a\n"))
    out = ingest_raw(parts, message("Uno", message_id="<constant@broken.example>", body="b\n"))
    assert out.outcome == "stored"
    assert count(parts, Message) == 2


def test_line_ending_conversion_is_still_the_same_message(parts: Parts) -> None:
    """A copy whose line endings were converted (LF mbox vs CRLF SMTP) is the same message."""
    raw = message(message_id="<eol@cliente.es>")
    ingest_raw(parts, raw)
    assert ingest_raw(parts, raw.replace(b"\r\n", b"\n")).outcome == "duplicate"


def test_commit_before_spool_removal_is_recognised(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between commit and spool removal reprocesses the entry harmlessly."""
    entry = parts.spool.put(message(), {"source": "smtp"})
    monkeypatch.setattr(parts.spool, "complete", lambda e: None)  # "crash" before removal
    claimed = parts.spool.claim(entry.id)
    assert claimed is not None and parts.processor.process(claimed).outcome == "stored"
    parts.spool.release(claimed, count_attempt=False)
    monkeypatch.undo()
    again = parts.spool.claim(entry.id)
    assert again is not None and parts.processor.process(again).outcome == "already_stored"
    assert count(parts, Delivery) == 1 and parts.spool.pending() == []


@pytest.mark.parametrize(
    ("first", "outcome"),
    [
        (message("Otra copia", message_id="<same@cliente.es>", body="hola\n"), "duplicate"),
        (b"\x00\x01 not a message \xff", "quarantined"),
    ],
    ids=["duplicate-by-message-id", "quarantined"],
)
def test_a_recommitted_duplicate_or_quarantined_entry_is_recognised(
    parts: Parts, monkeypatch: pytest.MonkeyPatch, first: bytes, outcome: str
) -> None:
    """The crash between commit and spool removal, for an entry that stored no new copy of
    its bytes: one that matched a stored message by Message-ID, and one quarantined."""
    if outcome == "duplicate":
        ingest_raw(parts, message("Uno", message_id="<same@cliente.es>", body="hola\n"))
    entry = parts.spool.put(first, {"source": "smtp"})
    monkeypatch.setattr(parts.spool, "complete", lambda e: None)  # "crash" before removal
    claimed = parts.spool.claim(entry.id)
    assert claimed is not None and parts.processor.process(claimed).outcome == outcome
    parts.spool.release(claimed, count_attempt=False)
    monkeypatch.undo()
    again = parts.spool.claim(entry.id)
    assert again is not None and parts.processor.process(again).outcome == "already_stored"
    with parts.db.transaction() as s:
        spooled = s.scalars(select(Delivery).where(Delivery.spool_id == entry.id)).all()
    assert len(spooled) == 1 and parts.spool.pending() == []


def test_unparseable_message_is_quarantined_with_raw_bytes(parts: Parts) -> None:
    """Bytes that are not a message are stored raw, quarantined with a reason, and listed."""
    junk = b"\x00\x01\x02 not a message at all \xff\xfe"
    out = ingest_raw(parts, junk)
    assert out.outcome == "quarantined"
    with parts.db.transaction() as s:
        (m,) = repo.quarantined_messages(s)
        assert m.raw == junk and m.state_reason and m.ticket_id is None
    assert count(parts, Ticket) == 0


def test_attachments_stored_by_hash_never_by_name(parts: Parts) -> None:
    """SEC-03: a hostile attachment name is sanitised and the bytes live under their hash."""
    raw = (
        b"From: ana@cliente.es\r\nSubject: adjunto\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: text/plain\r\n\r\nver adjunto\r\n--XX\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="../../etc/passwd"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\ncm9vdDp4OjA6MA==\r\n--XX--\r\n"
    )
    ingest_raw(parts, raw)
    with parts.db.transaction() as s:
        (att,) = s.scalars(select(Attachment)).all()
        assert "/" not in att.filename and ".." not in att.filename
    root = parts.blobs.root.resolve()
    stored = [p for p in root.rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [b"root:x:0:0"]
    assert all(p.resolve().is_relative_to(root) and p.name == att.sha256 for p in stored)


def test_transient_database_failure_does_not_spend_attempts(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DUR-10 in small: the database being down puts the entry back, uncounted, for later."""

    def down() -> None:
        raise OperationalError("connect", {}, Exception("connection refused"))

    entry = parts.spool.put(message(), {"source": "smtp"})
    monkeypatch.setattr(parts.db, "transaction", down)
    claimed = parts.spool.claim(entry.id)
    assert claimed is not None and parts.processor.process(claimed).outcome == "retry"
    monkeypatch.undo()
    again = parts.spool.claim(entry.id)
    assert again is not None and again.attempts == 0
    assert parts.processor.process(again).outcome == "stored"


def run_until_drained(runner: IngestRunner, parts: Parts, timeout: float = 60) -> None:
    runner.start()
    try:
        wait_until(
            lambda: not parts.spool.pending() and not parts.spool.depth()["cur"],
            timeout,
            interval=0.1,
            what="spool to drain",
        )
    finally:
        runner.stop(10)


def test_dur06_crashing_message_is_quarantined_and_others_flow(parts: Parts) -> None:
    """DUR-06: a message that kills its parser process is tried 3 times, then quarantined
    with raw bytes; the messages queued behind it are stored."""
    pool = ParserPool(1, 30, parse=crash_on_marker)
    try:
        processor = IngestProcessor(parts.spool, parts.db, pool, parts.blobs)
        poison = message("veneno", headers="X-Crash-Parser: yes\r\n")
        parts.spool.put(poison, {"source": "smtp"})
        for i in range(3):
            parts.spool.put(message(f"normal {i}"), {"source": "smtp"})
        runner = IngestRunner(processor, PipelineConfig(parse_workers=1, poll_interval=0.05))
        run_until_drained(runner, parts)
    finally:
        pool.close()
    (bad,) = list(parts.spool.quarantined())
    assert bad.read() == poison and bad.attempts == 3
    assert "parser process died (exit code 70)" in bad.meta["quarantine_reason"]
    assert count(parts, Message) == 3


def test_parse_timeout_quarantines_and_frees_the_worker(parts: Parts) -> None:
    """A message that makes the parser hang is killed at the time limit and quarantined
    in the database with the reason; the next message parses normally."""
    pool = ParserPool(1, 1.0, parse=hang_on_marker)
    try:
        processor = IngestProcessor(parts.spool, parts.db, pool, parts.blobs)
        parts.processor = processor
        out = ingest_raw(parts, message("cuelga", headers="X-Hang-Parser: yes\r\n"))
        assert out.outcome == "quarantined"
        assert ingest_raw(parts, message("normal")).outcome == "stored"
    finally:
        pool.close()
    with parts.db.transaction() as s:
        (m,) = repo.quarantined_messages(s)
        assert "parse_timeout" in m.state_reason


def test_quarantine_retry_tickets_a_message_that_now_parses(parts: Parts) -> None:
    """An admin's retry re-parses the stored raw bytes and, when it works now, tickets it."""
    pool = ParserPool(1, 0.5, parse=hang_on_marker)
    raw = message("reintento", headers="X-Hang-Parser: yes\r\n")
    try:
        parts.processor = IngestProcessor(parts.spool, parts.db, pool, parts.blobs)
        assert ingest_raw(parts, raw).outcome == "quarantined"
    finally:
        pool.close()
    real = ParserPool(1, 30)
    try:
        processor = IngestProcessor(parts.spool, parts.db, real, parts.blobs)
        with parts.db.transaction() as s:
            (m,) = repo.quarantined_messages(s)
        out = processor.retry_message(m.id)
    finally:
        real.close()
    assert out.outcome == "stored" and out.ticket_ref == "B-1"
    with parts.db.transaction() as s:
        assert repo.quarantined_messages(s) == []


def test_runner_processes_concurrent_arrivals_exactly_once(parts: Parts) -> None:
    """Two ingest workers racing over 40 entries store each exactly once."""
    pool = ParserPool(2, 30)
    try:
        processor = IngestProcessor(parts.spool, parts.db, pool, parts.blobs)
        runner = IngestRunner(processor, PipelineConfig(parse_workers=2, poll_interval=0.05))
        feeder = threading.Thread(
            target=lambda: [
                parts.spool.put(message(f"m{i}"), {"source": "smtp"}) for i in range(40)
            ]
        )
        feeder.start()
        feeder.join()
        run_until_drained(runner, parts)
    finally:
        pool.close()
    assert count(parts, Message) == 40 and count(parts, Delivery) == 40
