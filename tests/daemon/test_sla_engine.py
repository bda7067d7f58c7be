"""The SLA engine in the daemon: stamping at intake, agent actions, replies, reopening, the
scheduler's follow-ups, auto-close and alarms, acknowledgements and their suppression.

Time is a fake clock handed to the ingest processor and the scheduler, so a week of
deadlines runs in milliseconds; the database, spool, parser and templates are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from sqlalchemy import event, select

from daemon import sla
from daemon.config import Config
from daemon.ingest import Outcome
from daemon.outbox import OutboxSender
from daemon.parts import Parts, open_parts
from daemon.scheduler import Scheduler
from storage import repository as repo
from storage.models import OutboxMail, Ticket
from support.daemon import serving
from support.mail import message

MADRID = ZoneInfo("Europe/Madrid")
POLICIES = """
[agents]
"luis@desk.example.com" = "Luis"

[sla]
reopen_within = "7d"

[sla.notify]
"*" = "jefes@desk.example.com"

[[sla.policies]]
name = "support"
calendar = "office"
assign_within = "1bh"
respond_within = "1bh"
followup_response_within = "24h"
customer_followup_every = "4bd"
max_customer_followups = 3
auto_close_after = "20bd"
"""


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def at(self, wall: str) -> datetime:
        self.now = datetime.fromisoformat(wall).replace(tzinfo=MADRID).astimezone(UTC)
        return self.now


@pytest.fixture
def desk(config_factory: Callable[..., Config]) -> Iterator[tuple[Parts, Config, Clock]]:
    cfg = config_factory(POLICIES)
    clock = Clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    with open_parts(cfg, recover=True) as parts:
        parts.processor.clock = clock
        yield parts, cfg, clock


def ingest(parts: Parts, clock: Clock, raw: bytes, mail_from: str = "ana@cliente.es") -> str:
    out = deliver(parts, clock, raw, mail_from)
    assert out.ticket_ref, out
    return out.ticket_ref


def deliver(parts: Parts, clock: Clock, raw: bytes, mail_from: str) -> Outcome:
    entry = parts.spool.put(
        raw,
        {
            "source": "smtp",
            "received_at": clock.now.isoformat(),
            "envelope": {"mail_from": mail_from, "rcpt_tos": ["support@example.com"]},
        },
    )
    claimed = parts.spool.claim(entry.id)
    assert claimed is not None
    return parts.processor.process(claimed)


def ticket(parts: Parts, ref: str) -> Ticket:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        s.expunge_all()
        return t


def events(parts: Parts, ref: str, kind: str) -> list[dict[str, Any]]:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        return [e.data for e in t.events if e.kind == kind]


def outbox(parts: Parts, kind: str | None = None) -> list[OutboxMail]:
    """The outbox rows, each composed as the sender would at its first claim."""
    with parts.db.transaction() as s:
        q = select(OutboxMail).order_by(OutboxMail.id)
        if kind:
            q = q.where(OutboxMail.kind == kind)
        rows = list(s.scalars(q))
        for row in rows:
            if row.raw is None and parts.outbound is not None:
                parts.outbound.compose_row(s, row, row.created_at)
        s.expunge_all()
        return rows


def act(parts: Parts, cfg: Config, clock: Clock, ref: str, what: str, **kw: Any) -> None:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        getattr(sla, what)(s, t, cfg.desk.sla, clock.now, **kw)


def scheduler(parts: Parts, cfg: Config, clock: Clock) -> Scheduler:
    return Scheduler(parts.db, cfg.desk.sla, parts.outbound, clock=clock)


def explain_agrees(parts: Parts, cfg: Config, ref: str) -> bool:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        history = sla.history_of(sla.clock_rows(s, t))
        clocks, _, calendar = sla.replay(history, cfg.desk.sla)
        return not sla.differences(t, clocks, calendar, cfg.desk.sla)  # columns and snapshot


def local(t: datetime | None) -> str:
    assert t is not None
    return t.astimezone(MADRID).strftime("%Y-%m-%d %H:%M")


# -- Stamping and agent actions -----------------------------------------------------------


def test_a_new_ticket_is_stamped_with_its_policy_in_business_hours(desk: Any) -> None:
    """Seed 000 on the office calendar: Thursday 24 Dec 16:30 + 1bh = Monday 28 Dec 09:30."""
    parts, cfg, clock = desk
    clock.at("2026-12-24T16:30")
    ref = ingest(parts, clock, message("La web no carga"))
    t = ticket(parts, ref)
    assert (t.sla_policy, t.sla_calendar) == ("support", "office")
    assert local(t.assign_by) == "2026-12-28 09:30"
    assert local(t.respond_by) == "2026-12-28 10:30"  # provisional: assign_by + 1bh
    (stamped,) = events(parts, ref, "stamped")
    assert stamped["policy"] == "support" and stamped["facts"]["channel"] == "email"
    assert stamped["selection"]
    assert explain_agrees(parts, cfg, ref)


def test_assignment_starts_the_response_clock_and_a_reply_re_stamps_it(desk: Any) -> None:
    parts, cfg, clock = desk
    clock.at("2026-12-01T10:00")
    ref = ingest(parts, clock, message("La web no carga", message_id="<a1@cliente.es>"))
    clock.at("2026-12-01T10:20")
    act(parts, cfg, clock, ref, "assign", agent="Luis", by="test")
    t = ticket(parts, ref)
    assert t.assign_by is None and local(t.respond_by) == "2026-12-01 11:20"
    assert t.assigned_to == "Luis"
    clock.at("2026-12-01T10:30")
    act(parts, cfg, clock, ref, "respond", agent="Luis", via="test")
    assert ticket(parts, ref).respond_by is None
    # The customer writes again: the follow-up response clock (24 h) starts.
    clock.at("2026-12-02T09:00")
    again = message(
        "Re: La web no carga",
        body="Sigue sin funcionar, ahora da error 500.\n",
        headers="In-Reply-To: <a1@cliente.es>\r\n",
    )
    assert ingest(parts, clock, again) == ref
    assert local(ticket(parts, ref).respond_by) == "2026-12-03 09:00"
    assert [e["chase"] for e in events(parts, ref, "customer_message")] == [False]
    assert explain_agrees(parts, cfg, ref)


def test_mail_from_an_agent_on_the_thread_is_a_response(desk: Any) -> None:
    parts, _, clock = desk
    clock.at("2026-12-01T10:00")
    ref = ingest(parts, clock, message("La web no carga", message_id="<a2@cliente.es>"))
    clock.at("2026-12-01T10:40")
    answer = message(
        "Re: La web no carga",
        sender="luis@desk.example.com",
        body="Hola Ana, ya lo miramos.\n",
        headers="In-Reply-To: <a2@cliente.es>\r\n",
    )
    assert ingest(parts, clock, answer, "luis@desk.example.com") == ref
    t = ticket(parts, ref)
    assert t.assign_by is None and t.respond_by is None
    (responded,) = events(parts, ref, "responded")
    assert responded["agent"] == "Luis" and responded["via"] == "mail"
    assert t.assigned_to == "Luis"
    # The agent's mail is no customer message: no acknowledgement, no re-stamp.
    assert len(outbox(parts, "ack")) == 1


def test_a_reply_reopens_a_recently_closed_ticket_and_not_an_old_one(desk: Any) -> None:
    parts, cfg, clock = desk
    clock.at("2026-12-01T10:00")
    ref = ingest(parts, clock, message("Factura duplicada", message_id="<c1@cliente.es>"))
    act(parts, cfg, clock, ref, "close", reason="solved", by="test")
    assert ticket(parts, ref).status == "closed"
    clock.at("2026-12-04T10:00")
    reply = message(
        "Re: Factura duplicada",
        body="Me han vuelto a cobrar dos veces.\n",
        headers="In-Reply-To: <c1@cliente.es>\r\n",
    )
    assert ingest(parts, clock, reply) == ref
    t = ticket(parts, ref)
    assert t.status == "open" and t.closed_at is None
    assert local(t.respond_by) == "2026-12-05 10:00"
    assert len(events(parts, ref, "reopened")) == 1
    act(parts, cfg, clock, ref, "close", reason="solved", by="test")
    clock.at("2026-12-20T10:00")  # 16 days later: past reopen_within = 7d
    late = message(
        "Re: Factura duplicada",
        body="Otra vez el mismo problema con el cobro.\n",
        headers="In-Reply-To: <c1@cliente.es>\r\n",
    )
    assert ingest(parts, clock, late) != ref
    assert ticket(parts, ref).status == "closed"


# -- The scheduler ------------------------------------------------------------------------


def test_follow_ups_every_four_business_days_then_auto_close(desk: Any) -> None:
    """Waiting from Tue 1 Dec 12:00 (8 and 25 Dec are holidays in Spain), a pass every hour:
    follow-ups on 7, 14 and 18 Dec, at most 3, then closed 20 business days on, 31 Dec."""
    parts, cfg, clock = desk
    clock.at("2026-12-01T11:00")
    ref = ingest(parts, clock, message("Alta de dominio"))
    clock.at("2026-12-01T12:00")
    act(parts, cfg, clock, ref, "wait", by="Luis")
    assert local(ticket(parts, ref).followup_due_at) == "2026-12-07 12:00"
    assert local(ticket(parts, ref).close_due_at) == "2026-12-31 12:00"
    run = scheduler(parts, cfg, clock)
    while clock.now < datetime(2027, 1, 8, tzinfo=UTC):
        clock.now += timedelta(hours=1)
        run.run_once()
    sent = [local(datetime.fromisoformat(e["at"])) for e in events(parts, ref, "followup_sent")]
    assert sent == ["2026-12-07 12:00", "2026-12-14 12:00", "2026-12-18 12:00"]
    assert len(outbox(parts, "followup")) == 3
    (closed,) = events(parts, ref, "closed")
    assert closed["reason"] == "auto" and local(datetime.fromisoformat(closed["at"])) == (
        "2026-12-31 12:00"
    )
    t = ticket(parts, ref)
    assert t.status == "closed" and t.next_due_at is None
    (notice,) = outbox(parts, "last_notice")
    assert notice.state == "pending"  # closing cancels follow-ups, never its own last notice
    assert explain_agrees(parts, cfg, ref)


def test_a_ticket_that_cannot_be_mailed_never_stops_the_others(desk: Any) -> None:
    """A requester the composer refuses (a non-ASCII address) gets no mail, the pass goes
    on for every other ticket, and that ticket's clocks still move."""
    parts, cfg, clock = desk
    clock.at("2026-12-01T11:00")
    refs = [
        ingest(
            parts,
            clock,
            message(f"Alta {i}", body=f"Caso número {i * 13}.\n", sender=f"c{i}@cliente.es"),
            f"c{i}@cliente.es",
        )
        for i in range(3)
    ]
    with parts.db.transaction() as s:
        t = repo.ticket(s, refs[1])
        assert t is not None
        t.requester = "josé@empresa.es"
    for ref in refs:
        act(parts, cfg, clock, ref, "wait", by="Luis")
    clock.now = ticket(parts, refs[0]).followup_due_at  # type: ignore[assignment]
    report = scheduler(parts, cfg, clock).run_once()
    assert (report.followups, report.mails, report.errors) == (3, 2, 0)
    assert sorted(m.recipient for m in outbox(parts, "followup")) == [
        "c0@cliente.es",
        "c2@cliente.es",
    ]
    assert [e["outbox"] for e in events(parts, refs[1], "followup_sent")] == [None]


def _waiting(parts: Parts, cfg: Config, clock: Clock, n: int) -> list[str]:
    clock.at("2026-12-01T11:00")
    refs = [
        ingest(
            parts,
            clock,
            message(f"Alta {i}", body=f"Caso número {i * 13}.\n", sender=f"c{i}@cliente.es"),
            f"c{i}@cliente.es",
        )
        for i in range(n)
    ]
    for ref in refs:
        act(parts, cfg, clock, ref, "wait", by="Luis")
    clock.now = ticket(parts, refs[0]).followup_due_at  # type: ignore[assignment]
    return refs


def test_a_ticket_without_a_snapshot_is_replayed_and_gets_one(desk: Any) -> None:
    """Tickets stamped before the snapshot existed (NULL) are handled exactly as the others."""
    parts, cfg, clock = desk
    refs = _waiting(parts, cfg, clock, 2)
    with parts.db.transaction() as s:
        old = repo.ticket(s, refs[1])
        assert old is not None and old.clocks is not None
        old.clocks = None
    report = scheduler(parts, cfg, clock).run_once()
    assert (report.followups, report.errors) == (2, 0)
    done = [ticket(parts, ref) for ref in refs]
    assert done[1].clocks is not None
    assert {**done[0].clocks, "followup_due": 0} == {**done[1].clocks, "followup_due": 0}  # type: ignore[dict-item]
    assert [e["number"] for e in events(parts, refs[1], "followup_sent")] == [1]
    assert all(explain_agrees(parts, cfg, ref) for ref in refs)


def test_a_reply_to_a_ticket_without_a_snapshot_replays_with_its_own_event(desk: Any) -> None:
    """The ingest writes its events at the commit (``storage.eventlog``): a reply that
    must replay its ticket's history still counts the event it is adding, and that event
    keeps the result it set."""
    parts, cfg, clock = desk
    clock.at("2026-12-01T10:00")
    ref = ingest(parts, clock, message("La web no carga", message_id="<n1@cliente.es>"))
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        t.clocks = None  # as a ticket stamped before snapshots existed
    clock.at("2026-12-02T09:00")
    again = message(
        "Re: La web no carga",
        body="Sigue sin funcionar.\n",
        headers="In-Reply-To: <n1@cliente.es>\r\n",
    )
    assert ingest(parts, clock, again) == ref
    t = ticket(parts, ref)
    assert t.clocks is not None
    [reply] = events(parts, ref, "customer_message")
    assert t.respond_by is not None
    assert reply["result"]["respond_by"] == t.respond_by.isoformat()
    assert explain_agrees(parts, cfg, ref)


def test_explain_and_verify_see_a_snapshot_that_disagrees_with_the_events(desk: Any) -> None:
    parts, cfg, clock = desk
    (ref,) = _waiting(parts, cfg, clock, 1)
    assert explain_agrees(parts, cfg, ref)
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None and t.clocks is not None
        t.clocks = {**t.clocks, "followups_sent": 3}
    assert not explain_agrees(parts, cfg, ref)


def test_a_batch_whose_write_fails_is_done_one_ticket_at_a_time(
    desk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ticket whose mail cannot be written (here: a bug) fails alone, retried in 15 min;
    the rest of its batch is written, each once."""
    parts, cfg, clock = desk
    refs = _waiting(parts, cfg, clock, 3)
    real = parts.outbound.row

    def broken(*a: Any, **k: Any) -> dict[str, Any]:
        if k["ref"] == refs[1]:
            raise RuntimeError("simulated bug")
        return real(*a, **k)  # type: ignore[no-any-return]

    monkeypatch.setattr(parts.outbound, "row", broken)
    with structlog.testing.capture_logs() as logs:
        report = scheduler(parts, cfg, clock).run_once()
    assert (report.tickets, report.followups, report.errors, report.mails) == (3, 2, 1, 2)
    said = [x["event"] for x in logs]
    assert said.count("scheduler.batch_failed") == 1 and said.count("scheduler.ticket_failed") == 1
    assert sorted(m.recipient for m in outbox(parts, "followup")) == [
        "c0@cliente.es",
        "c2@cliente.es",
    ]
    broken_one = ticket(parts, refs[1])
    assert broken_one.next_due_at == clock.now + timedelta(minutes=15)
    assert events(parts, refs[1], "followup_sent") == []
    monkeypatch.undo()
    clock.now += timedelta(minutes=15)
    again = scheduler(parts, cfg, clock).run_once()
    assert (again.followups, again.errors) == (1, 0)
    assert all(explain_agrees(parts, cfg, ref) for ref in refs)


def test_out_06_a_reply_one_second_before_the_follow_up_cancels_it(desk: Any) -> None:
    parts, cfg, clock = desk
    clock.at("2026-12-01T11:00")
    ref = ingest(parts, clock, message("Alta de dominio", message_id="<w1@cliente.es>"))
    act(parts, cfg, clock, ref, "wait", by="Luis")
    due = ticket(parts, ref).followup_due_at
    assert due is not None
    clock.now = due - timedelta(seconds=1)
    reply = message(
        "Re: Alta de dominio",
        body="Perdón, aquí tienen los datos del dominio.\n",
        headers="In-Reply-To: <w1@cliente.es>\r\n",
    )
    assert ingest(parts, clock, reply) == ref
    clock.now = due
    assert scheduler(parts, cfg, clock).run_once().followups == 0
    assert outbox(parts, "followup") == []
    t = ticket(parts, ref)
    assert t.followup_due_at is None and t.waiting_since is None
    assert local(t.respond_by) == local(due - timedelta(seconds=1) + timedelta(hours=24))


def test_a_queued_follow_up_is_cancelled_by_the_reply(desk: Any) -> None:
    """The follow-up was queued but the relay had not taken it yet: the reply cancels it."""
    parts, cfg, clock = desk
    clock.at("2026-12-01T11:00")
    ref = ingest(parts, clock, message("Alta de dominio", message_id="<w2@cliente.es>"))
    act(parts, cfg, clock, ref, "wait", by="Luis")
    clock.now = ticket(parts, ref).followup_due_at  # type: ignore[assignment]
    assert scheduler(parts, cfg, clock).run_once().followups == 1
    clock.now += timedelta(seconds=5)
    reply = message(
        "Re: Alta de dominio",
        body="Ya está, gracias por esperar.\n",
        headers="In-Reply-To: <w2@cliente.es>\r\n",
    )
    ingest(parts, clock, reply)
    (mail,) = outbox(parts, "followup")
    assert mail.state == "cancelled" and "replied" in mail.last_error


def test_alarms_are_logged_once_and_catch_up_without_duplicates(desk: Any) -> None:
    parts, cfg, clock = desk
    clock.at("2026-12-01T10:00")
    ref = ingest(parts, clock, message("El correo no funciona"))
    run = scheduler(parts, cfg, clock)
    clock.at("2026-12-01T10:48")  # 80 % of the 1bh assign window
    with structlog.testing.capture_logs() as logs:
        assert run.run_once().at_risk == 1
        assert run.run_once().at_risk == 0
    assert [x["event"] for x in logs if x["event"].startswith("sla.")] == ["sla.at_risk"]
    # Down for two days: one pass finds both clocks breached; each is reported once.
    clock.at("2026-12-03T10:00")
    with structlog.testing.capture_logs() as logs:
        report = run.run_once()
        again = run.run_once()
    told = sorted((x["event"], x["clock"]) for x in logs if x["event"].startswith("sla."))
    assert told == [("sla.breached", "assign"), ("sla.breached", "respond")]
    assert (report.breached, again.breached, report.at_risk) == (2, 0, 0)
    (notice,) = outbox(parts, "breach")  # both breaches in one digest
    assert notice.recipient == "jefes@desk.example.com" and notice.raw is not None
    text = _body(notice.raw)
    assert f"{ref}  assign  " in text and f"{ref}  respond  " in text
    alarms = [e for e in events(parts, ref, "sla_alarm") if e["kind"] == "breached"]
    assert [e["notice"] for e in alarms] == [notice.id, notice.id]
    # The respond clock's at-risk moment passed in the downtime too: its key is kept, so it
    # is never told later, and its breach's event says so; it has no event of its own.
    assert [(e["clock"], e.get("at_risk_passed", False)) for e in alarms] == [
        ("assign", False),
        ("respond", True),
    ]
    at_risk = [e["clock"] for e in events(parts, ref, "sla_alarm") if e["kind"] == "at_risk"]
    assert at_risk == ["assign"]
    assert any(k.startswith("respond:at_risk:") for k in ticket(parts, ref).alarms_sent)
    assert explain_agrees(parts, cfg, ref)


def _body(raw: bytes) -> str:
    part = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_breaches_are_one_digest_per_address_and_batch(desk: Any) -> None:
    """After downtime the admins get a list per batch, every breach on it exactly once."""
    parts, cfg, clock = desk
    clock.at("2026-12-01T10:00")
    refs = [
        ingest(parts, clock, message(f"Caso {n}", sender=f"c{n}@cliente.es"), f"c{n}@cliente.es")
        for n in range(5)
    ]
    clock.at("2026-12-03T10:00")
    run = Scheduler(parts.db, replace(cfg.desk.sla, batch=3), parts.outbound, clock=clock)
    report = run.run_once()
    notices = outbox(parts, "breach")
    assert report.breached == 10 and len(notices) == 2  # two clocks each; batches of 3 and 2
    lines = [line for n in notices if n.raw for line in _body(n.raw).splitlines() if "  " in line]
    assert sorted(line.split("  ")[:2] for line in lines) == sorted(
        [ref, clock_name] for ref in refs for clock_name in ("assign", "respond")
    )
    assert all(n.ticket_id is None for n in notices)
    counts = [int(n.subject.split(": ")[1].split()[0]) for n in notices]  # "SLA incumplido: 6 …"
    assert counts == [6, 4]


# -- Acknowledgements ---------------------------------------------------------------------


def test_a_new_ticket_is_acknowledged_with_its_ref_and_promised_time(desk: Any) -> None:
    parts, _, clock = desk
    clock.at("2026-12-24T16:30")
    ref = ingest(parts, clock, message("La web no carga", message_id="<k1@cliente.es>"))
    (ack,) = outbox(parts, "ack")
    assert ack.recipient == "ana@cliente.es" and ack.state == "pending"
    assert ack.envelope_from == ""  # the null sender: a bounce of an ack never loops
    m = email.message_from_bytes(ack.raw, policy=email.policy.default)
    assert f"[{ref}]" in str(m["Subject"])
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["In-Reply-To"] == "<k1@cliente.es>"
    body = m.get_body(("plain",))
    assert body is not None and "28/12/2026 10:30" in body.get_content()


@pytest.mark.parametrize(
    ("headers", "mail_from", "reason"),
    [
        ("Auto-Submitted: auto-replied\r\n", "ana@cliente.es", "automatic"),
        ("List-Id: <clientes.lists.example>\r\n", "ana@cliente.es", "list"),
        ("", "", "null"),
    ],
)
def test_machines_lists_and_null_senders_are_never_acknowledged(
    desk: Any, headers: str, mail_from: str, reason: str
) -> None:
    """Parked as machine mail, or ticketed with the reason it got no acknowledgement."""
    parts, _, clock = desk
    out = deliver(parts, clock, message("Informe", headers=headers), mail_from)
    assert outbox(parts, "ack") == []
    if out.ticket_ref:
        (suppressed,) = events(parts, out.ticket_ref, "ack_suppressed")
        assert reason in suppressed["reason"]
    else:
        assert out.outcome == "parked"


def test_loop_05_a_dumb_auto_responder_stays_within_the_rate(desk: Any) -> None:
    """It answers every mail with a new subject and no Auto-Submitted: 40 mails in 20 h.

    The bucket holds 5 and refills 5 a day: 5 at once, then one every 4.8 h.
    """
    parts, _, clock = desk
    clock.at("2026-12-01T08:00")
    robot = "robot@otro.example"

    def mail() -> bytes:
        words = " ".join(uuid.uuid4().hex[:8] for _ in range(4))
        return message(f"Asunto {words}", sender=robot, body=f"Texto {words}.\n")

    refs = set()
    for _ in range(40):
        clock.now += timedelta(minutes=30)
        refs.add(ingest(parts, clock, mail(), robot))
    assert len(refs) == 40  # each its own ticket: the rate limit, not dedupe, holds acks back
    acks = outbox(parts, "ack")
    assert 5 <= len(acks) <= 5 + 5 * 20 / 24
    with parts.db.transaction() as s:
        reasons = [
            e.data["reason"]
            for t in s.scalars(select(Ticket).where(Ticket.requester == robot))
            for e in t.events
            if e.kind == "ack_suppressed"
        ]
    assert len(reasons) == 40 - len(acks) and all(r.startswith("rate limit") for r in reasons)
    clock.now += timedelta(days=1)
    for _ in range(6):
        ingest(parts, clock, mail(), robot)
    assert len(outbox(parts, "ack")) == len(acks) + 5  # full again after a day, never more


# -- OUT-05: many follow-ups across restarts and a DST change -----------------------------


def _waiting_tickets(parts: Parts, cfg: Config, clock: Clock, n: int) -> dict[int, datetime]:
    """``n`` tickets put to wait on Thu 22 Oct 2026 between 09:00 and 16:59 Madrid (CEST);
    each one's follow-up is due Wed 28 Oct at the same wall time, after the clocks go back
    on Sun 25 Oct: an hour later in UTC than 6 x 24 h would say."""
    expected: dict[int, datetime] = {}
    with parts.db.transaction() as s:
        for i in range(n):
            minute = (i * 479) // n  # spread over the open day
            wall = datetime(2026, 10, 22, 9 + minute // 60, minute % 60, tzinfo=MADRID)
            t = Ticket(
                status="open",
                subject=f"Caso {i}",
                customer=f"c{i}@cliente.es",
                requester=f"c{i}@cliente.es",
                channel="email",
                message_count=0,
                created_at=wall.astimezone(UTC),
                updated_at=wall.astimezone(UTC),
                flags=[],
                language="es",
            )
            s.add(t)
            s.flush()
            t.ref = f"B-{t.id}"
            sla.stamp(s, t, cfg.desk.sla, wall.astimezone(UTC))
            sla.wait(s, t, cfg.desk.sla, wall.astimezone(UTC), by="Luis")
            expected[t.id] = datetime(2026, 10, 28, wall.hour, wall.minute, tzinfo=MADRID)
    return expected


class Crash(BaseException):
    """The process dies half-way through a pass (not an error a pass may catch)."""


def test_out_05_a_thousand_follow_ups_across_restarts_and_dst(
    config_factory: Callable[..., Config],
) -> None:
    cfg = config_factory(POLICIES)
    clock = Clock(datetime(2026, 10, 22, 7, 0, tzinfo=UTC))
    with open_parts(cfg, recover=True) as parts:
        expected = _waiting_tickets(parts, cfg, clock, 1000)
    step = timedelta(minutes=10)
    clock.now = datetime(2026, 10, 27, 23, 0, tzinfo=UTC)
    restarts = crashes = 0
    while clock.now < datetime(2026, 10, 29, 0, 0, tzinfo=UTC):
        # A "restart" every few passes: new engine, new scheduler, nothing kept in memory.
        with open_parts(cfg, recover=True) as parts:
            run = scheduler(parts, cfg, clock)
            if crashes == 0 and clock.now >= datetime(2026, 10, 28, 9, 0, tzinfo=UTC):
                written = 0

                def dying(*a: Any, real: Any = parts.outbound.row, **k: Any) -> dict[str, Any]:
                    nonlocal written
                    written += 1
                    if written == 5:
                        raise Crash
                    return real(*a, **k)  # type: ignore[no-any-return]

                parts.outbound.row = dying  # type: ignore[method-assign]
                with pytest.raises(Crash):
                    run.run_once()
                del parts.outbound.row  # the class's method again
                crashes += 1
            for _ in range(6):
                run.run_once()
                clock.now += step
            restarts += 1
    with open_parts(cfg, recover=False) as parts:
        mails = outbox(parts, "followup")
        with parts.db.transaction() as s:
            sent = {
                e.ticket_id: datetime.fromisoformat(e.data["at"])
                for t in s.scalars(select(Ticket))
                for e in t.events
                if e.kind == "followup_sent"
            }
    assert crashes == 1 and restarts > 5
    assert len(mails) == 1000 and len({m.ticket_id for m in mails}) == 1000  # each once
    early = [tid for tid, at in sent.items() if at < expected[tid]]
    late = [tid for tid, at in sent.items() if at >= expected[tid] + step]
    assert early == [] and late == []  # none early; each within one pass of its due time
    assert all(m.created_at >= expected[m.ticket_id] for m in mails if m.ticket_id)


def test_a_late_classification_re_selects_the_policy_and_replays(parts: Parts) -> None:
    """A voicemail is stamped before its transcript says what it is about: when the
    transcript puts it in the setup team, the setup policy's clocks replace the default's."""
    from support.ingest import ingest_raw

    ref = ingest_raw(parts, message("Mensaje de voz")).ticket_ref
    assert ref is not None
    cfg = parts.processor.desk.sla
    now = datetime.now(UTC)
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None and t.sla_policy == "support"
        assert sla.reselect(s, t, cfg, now, "classified from the transcript") is False
        t.category = "setup"
        assert sla.reselect(s, t, cfg, now, "classified from the transcript") is True
        assert t.sla_policy == "setup" and t.team == "setup"
        assert t.assign_by == t.created_at + timedelta(hours=24)  # setup: 24h, not 1h
        restamp = [e.data for e in t.events if e.kind == "stamped"][-1]
        assert restamp["previous"] == "support" and restamp["restamp"] is True
        history = sla.history_of(sla.clock_rows(s, t))
        clocks, _, calendar = sla.replay(history, cfg)
        assert sla.columns(clocks, calendar, t.alarms_sent, cfg.at_risk) == sla.stored_columns(t)


def test_schedulers_of_several_instances_do_each_due_item_once_on_postgresql(
    config_factory: Callable[..., Config], pg_url: str
) -> None:
    """Three instances' schedulers (their own engines, passes at the same moment, small
    batches) over one PostgreSQL database: SKIP LOCKED hands each due ticket to one of them,
    so every follow-up is queued once and the work is shared, not repeated."""
    import threading

    cfg = config_factory(POLICIES, database=pg_url)
    clock = Clock(datetime(2026, 10, 22, 7, 0, tzinfo=UTC))
    with open_parts(cfg, recover=True) as parts:
        expected = _waiting_tickets(parts, cfg, clock, 300)
    clock.now = datetime(2026, 10, 29, 0, 0, tzinfo=UTC)  # every follow-up is due
    small = replace(cfg.desk.sla, batch=10)
    start = threading.Barrier(3)
    handled: list[int] = [0, 0, 0]
    failures: list[BaseException] = []

    def instance(i: int, run: Scheduler) -> None:
        try:
            start.wait(30)
            for _ in range(3):  # a pass finds nothing left once the others are done
                handled[i] += run.run_once().tickets
        except BaseException as exc:
            failures.append(exc)

    with contextlib.ExitStack() as stack, structlog.testing.capture_logs() as logs:
        # Opened one after the other: opening runs Alembic, whose context is process-wide.
        instances = [stack.enter_context(open_parts(cfg, recover=False)) for _ in range(3)]
        threads = [
            threading.Thread(
                target=instance, args=(i, Scheduler(p.db, small, p.outbound, clock=clock))
            )
            for i, p in enumerate(instances)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not failures, failures
    # The first batches of all three create the desk's reply-token key at once: one wins,
    # the others read its key; no batch may fail over it.
    assert [e for e in logs if e["log_level"] == "error"] == []
    assert sum(handled) == 300, handled  # each due ticket handled by exactly one pass
    assert sum(1 for n in handled if n) >= 2, handled  # and the instances shared them
    with open_parts(cfg, recover=False) as parts:
        mails = outbox(parts, "followup")
        with parts.db.transaction() as s:
            sent = [
                e.ticket_id
                for t in s.scalars(select(Ticket))
                for e in t.events
                if e.kind == "followup_sent"
            ]
    assert sorted(m.ticket_id for m in mails) == sorted(expected)  # one mail per ticket
    assert sorted(sent) == sorted(expected)  # one event per ticket


class _Keep:
    """A relay that accepts and keeps every mail."""

    def __init__(self) -> None:
        self.got: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.got.append(msg)
        return "250 2.0.0 queued"


def test_one_claim_threads_each_mail_on_its_own_ticket(
    desk: tuple[Parts, Config, Clock],
) -> None:
    """The sender reads the threads of a claim's mails in one query: each mail still
    answers its own ticket's newest message and names that ticket's thread, in order."""
    parts, cfg, clock = desk
    threads: dict[str, list[str]] = {}
    for who in ("ana", "bea", "eva"):
        mid = f"<{who}-1@cliente.es>"
        body = f"Hola,\n{who} no recibe la factura de noviembre {who}.\n"
        raw = message(f"Factura {who}", sender=f"{who}@{who}.example", message_id=mid, body=body)
        threads[f"{who}@{who}.example"] = [mid]
        ingest(parts, clock, raw, f"{who}@{who}.example")
    # A second message on ana's ticket before anything is sent: her ack answers that one.
    reply = message(
        "Re: Factura ana",
        sender="ana@ana.example",
        message_id="<ana-2@cliente.es>",
        headers="In-Reply-To: <ana-1@cliente.es>\r\n",
    )
    ingest(parts, clock, reply, "ana@ana.example")
    threads["ana@ana.example"].append("<ana-2@cliente.es>")
    keep = _Keep()
    with serving(keep) as port:
        relay = replace(cfg.desk.outbound, relay=f"127.0.0.1:{port}", timeout=5.0)
        sender = OutboxSender(parts.db, relay, clock=clock, holder="test:1")
        assert asyncio.run(sender.run_once()) == 3
    got = {m["To"].addresses[0].addr_spec: m for m in keep.got}
    assert sorted(got) == sorted(threads)
    for to, thread in threads.items():
        assert got[to]["In-Reply-To"] == thread[-1]
        assert str(got[to]["References"]).split() == thread


def test_clock_events_fold_into_the_snapshot_as_a_replay_would(desk: Any) -> None:
    """A reply or an agent's action folds its one event into the ticket's clocks snapshot
    instead of reading the whole history back (nor the earlier mails' bytes); after every
    step a replay of the events from the start gives the same deadlines and snapshot."""
    parts, cfg, clock = desk
    clock.at("2026-12-01T10:00")
    ref = ingest(parts, clock, message("El correo no llega", message_id="<f1@cliente.es>"))
    read_back: list[str] = []
    current = [""]  # the reply being ingested (``act`` loads the ticket with its events)

    def seen(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if current[0] != "reply":
            return
        if "FROM ticket_events" in statement:
            read_back.append(statement)
        if "messages.raw," in statement and "= messages.ticket_id" in statement:
            read_back.append(statement)  # every earlier mail's bytes, to learn one time

    def reply(wall: str, n: int) -> None:
        clock.at(wall)
        raw = message(
            "Re: El correo no llega",
            body=f"Sigue igual, intento {n}: no llega nada a la bandeja.\n",
            headers="In-Reply-To: <f1@cliente.es>\r\n",
        )
        assert ingest(parts, clock, raw) == ref

    steps: list[tuple[str, Callable[[], None]]] = [
        ("reply", lambda: reply("2026-12-01T10:30", 1)),
        ("assign", lambda: act(parts, cfg, clock, ref, "assign", agent="Luis", by="t")),
        ("reply", lambda: reply("2026-12-01T12:10", 2)),
        ("respond", lambda: act(parts, cfg, clock, ref, "respond", agent="Luis", via="t")),
        ("wait", lambda: act(parts, cfg, clock, ref, "wait", by="Luis")),
        ("reply", lambda: reply("2026-12-04T16:55", 3)),  # Friday: a business-day cadence
        ("close", lambda: act(parts, cfg, clock, ref, "close", reason="solved", by="t")),
        ("reply", lambda: reply("2026-12-08T09:00", 4)),  # a holiday in Madrid: reopens
    ]
    event.listen(parts.db.engine, "before_cursor_execute", seen)
    try:
        for name, step in steps:
            current[0] = name
            step()
            current[0] = ""
            assert explain_agrees(parts, cfg, ref), f"snapshot and replay differ after {name}"
    finally:
        event.remove(parts.db.engine, "before_cursor_execute", seen)
    t = ticket(parts, ref)
    assert t.status == "open" and t.respond_by is not None
    assert len(events(parts, ref, "reopened")) == 1
    assert read_back == [], "a reply read its ticket's history or mail back"
