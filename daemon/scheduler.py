"""The SLA scheduler: a pass finds due tickets by index and does what is due, exactly once.

No timers live in memory: every ticket stores ``next_due_at`` (indexed), the
earliest moment it needs the scheduler, so a restart loses nothing and a pass
after downtime catches up. A pass claims due tickets in batches (``FOR UPDATE
SKIP LOCKED``: instances on one PostgreSQL share the work) and for each one
replays its clock events (``daemon.sla``) and, at ``now``:

* ``close_due`` passed: queue the last notice, close it (``closed``, reason ``auto``);
* else ``followup_due`` passed: queue a follow-up (``followup_sent``); one per pass,
  and the next is counted from now, so a long downtime never sends a burst;
* every at-risk or breach alarm whose moment passed and whose key is not yet in
  ``alarms_sent``: log ``sla.at_risk``/``sla.breached``, record an ``sla_alarm``
  event and the key; a breach also queues a notice to the team's ``[sla.notify]``
  address. An at-risk alarm found with its breach also due is marked, not logged.

Each mail is written in the transaction that records it, so a crash between the
two is impossible; the alarm keys make every warning once-only across replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon import sla
from daemon.config_desk import SlaConfig
from daemon.logging import get_logger
from daemon.outbound import Outbound, spoken, when
from daemon.outmail import Kind
from storage.engine import Database
from storage.models import Ticket, TicketEvent
from triage import clocks as ck
from triage.durations import Duration


@dataclass
class PassReport:
    """What one pass did."""

    tickets: int = 0
    followups: int = 0
    closed: int = 0
    at_risk: int = 0
    breached: int = 0
    mails: int = 0
    errors: int = 0
    seconds: float = 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs passes over due tickets; ``run`` repeats them every ``[sla] interval`` seconds."""

    def __init__(
        self,
        db: Database,
        cfg: SlaConfig,
        outbound: Outbound | None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.db, self.cfg, self.outbound, self.clock = db, cfg, outbound, clock
        self.log = get_logger(component="scheduler")

    def run_once(self) -> PassReport:
        """One pass: every ticket due at the pass's start, in batches of ``[sla] batch``."""
        started = time.perf_counter()
        now = self.clock()
        report = PassReport()
        done: set[int] = set()
        while True:
            with self.db.transaction() as session:
                tickets = self._claim(session, now, done)
                for ticket in tickets:
                    done.add(ticket.id)
                self._handle_batch(session, tickets, now, report)
            if len(tickets) < self.cfg.batch:
                break
        report.seconds = time.perf_counter() - started
        if report.tickets:
            self.log.info(
                "scheduler.pass",
                tickets=report.tickets,
                followups=report.followups,
                closed=report.closed,
                at_risk=report.at_risk,
                breached=report.breached,
                mails=report.mails,
                errors=report.errors,
                seconds=round(report.seconds, 3),
            )
        return report

    async def run(self, stop: asyncio.Event, on_mail: Callable[[], None] = lambda: None) -> None:
        """Pass after pass until ``stop``; ``on_mail`` wakes the sender when mail was queued."""
        while not stop.is_set():
            try:
                report = await asyncio.to_thread(self.run_once)
                if report.mails:
                    on_mail()
            except Exception as exc:  # a pass must never kill the daemon: the next one retries
                self.log.error(
                    "scheduler.failed",
                    error=f"{type(exc).__name__}: {exc}",
                    fix="the next pass retries; see the database's availability",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.cfg.interval)

    def _claim(self, session: Session, now: datetime, done: set[int]) -> list[Ticket]:
        query = (
            select(Ticket)
            .where(Ticket.next_due_at <= now)
            .order_by(Ticket.next_due_at, Ticket.id)
            .limit(self.cfg.batch)
            .with_for_update(skip_locked=True)
        )
        if done:  # a ticket whose work is done stays due only if replay says so; skip it
            query = query.where(Ticket.id.not_in(done))
        return list(session.scalars(query))

    def _handle_batch(
        self, session: Session, tickets: list[Ticket], now: datetime, report: PassReport
    ) -> None:
        rows: dict[int, list[TicketEvent]] = defaultdict(list)
        ids = [t.id for t in tickets]
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            for row in session.scalars(
                select(TicketEvent)
                .where(TicketEvent.ticket_id.in_(chunk), TicketEvent.kind.in_(sla.CLOCK_KINDS))
                .order_by(TicketEvent.id)
            ):
                rows[row.ticket_id].append(row)
        for ticket in tickets:
            report.tickets += 1
            try:
                with session.begin_nested():
                    self._handle(session, ticket, rows[ticket.id], now, report)
            except sla.SlaError as exc:
                report.errors += 1
                ticket.next_due_at = None  # not retried every pass; explain says why
                self.log.error("scheduler.ticket_failed", ticket=ticket.ref, error=str(exc))

    def _handle(
        self,
        session: Session,
        ticket: Ticket,
        rows: list[TicketEvent],
        now: datetime,
        report: PassReport,
    ) -> None:
        history = sla.history_of(rows)
        clocks, policy, calendar = sla.replay(history, self.cfg)
        log = self.log.bind(ticket=ticket.ref, policy=policy.name)
        self._alarms(session, ticket, clocks, now, report)
        tz = calendar.timezone.key
        if clocks.close_due is not None and clocks.close_due <= now:
            values = {
                "close_on": when(now, tz, ticket.language),
                "reopen_within": spoken(Duration.parse(self.cfg.reopen_within), ticket.language),
            }
            mail = self._mail(session, ticket, "last_notice", now, values)
            sla.close(session, ticket, self.cfg, now, reason="auto", by="scheduler")
            report.closed += 1
            log.info("ticket.auto_closed", waited_since=_iso(ticket.waiting_since), mail=mail)
            return
        if clocks.followup_due is not None and clocks.followup_due <= now:
            number = clocks.followups_sent + 1
            values = {
                "followup_number": str(number),
                "waiting_since": when(ticket.waiting_since or now, tz, ticket.language),
                "close_on": when(clocks.close_due, tz, ticket.language) if clocks.close_due else "",
            }
            mail = self._mail(session, ticket, "followup", now, values)
            sla.record(
                session,
                ticket,
                "followup_sent",
                self.cfg,
                now,
                data={"number": number, "outbox": mail or None},
            )
            report.followups += 1
            log.info("ticket.followup_queued", number=number, mail=mail)
            return
        sla.cache(ticket, history, self.cfg)  # alarms_sent moved next_due_at

    def _alarms(
        self,
        session: Session,
        ticket: Ticket,
        clocks: ck.Clocks,
        now: datetime,
        report: PassReport,
    ) -> None:
        calendar = self.cfg.calendar(ticket.sla_calendar)
        sent = list(ticket.alarms_sent or [])
        due = [
            a
            for a in ck.alarms(clocks, calendar, self.cfg.at_risk)
            if a.at <= now and a.key not in sent
        ]
        breached = {a.clock for a in due if a.kind == "breached"}
        for alarm in due:
            sent.append(alarm.key)
            quiet = alarm.kind == "at_risk" and alarm.clock in breached
            data = {
                "clock": alarm.clock,
                "kind": alarm.kind,
                "deadline": alarm.deadline.isoformat(),
                "logged": not quiet,
            }
            if not quiet:
                if alarm.kind == "breached":
                    report.breached += 1
                    data["notice"] = self._notify(session, ticket, alarm, now)
                else:
                    report.at_risk += 1
                self.log.warning(
                    f"sla.{alarm.kind}",
                    ticket=ticket.ref,
                    clock=alarm.clock,
                    deadline=alarm.deadline.isoformat(),
                    team=ticket.team,
                    assigned_to=ticket.assigned_to,
                )
            session.add(TicketEvent(ticket=ticket, kind="sla_alarm", at=now, data=data))
        if due:
            ticket.alarms_sent = sent

    def _notify(self, session: Session, ticket: Ticket, alarm: ck.Alarm, now: datetime) -> int:
        """Queue a breach notice to the team's address; the outbox id (0 when none is set)."""
        address = self.cfg.notify_for(ticket.team)
        if not address or self.outbound is None:
            return 0
        values = {
            "clock": alarm.clock,
            "deadline": alarm.deadline.isoformat(timespec="minutes"),
            "team": ticket.team or "-",
            "ticket_link": ticket.ref or "",
        }
        mail = self.outbound.write(session, ticket, "breach", now, values=values, to=address)
        session.flush()
        return mail.id

    def _mail(
        self, session: Session, ticket: Ticket, kind: Kind, now: datetime, values: dict[str, str]
    ) -> int:
        """Queue ``kind`` to the requester; its outbox id, 0 when there is no address."""
        if self.outbound is None or "@" not in ticket.requester:
            return 0
        mail = self.outbound.write(session, ticket, kind, now, values=values)
        session.flush()
        return mail.id


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
