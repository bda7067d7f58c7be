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
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, defer

from daemon import sla
from daemon.config_desk import SlaConfig
from daemon.logging import get_logger
from daemon.outbound import Outbound, spoken, when
from daemon.outmail import Kind
from storage.engine import Database
from storage.models import Ticket, TicketEvent
from triage import clocks as ck
from triage.calendar import Calendar
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


RETRY_BROKEN = timedelta(minutes=15)  # a ticket whose handling failed unexpectedly


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
        after: tuple[datetime, int] | None = None
        while True:
            with self.db.transaction() as session:
                tickets = self._claim(session, now, after)
                if tickets:
                    last = tickets[-1]
                    after = (last.next_due_at or now, last.id)  # read before it is handled
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

    def _claim(
        self, session: Session, now: datetime, after: tuple[datetime, int] | None
    ) -> list[Ticket]:
        """The next batch of due tickets, in (next_due_at, id) order after ``after``.

        Keyset order, not a list of handled ids: a pass over 10,000 due tickets would
        otherwise send 10,000 parameters. A handled ticket that is due again (its next
        alarm passed during downtime) sorts after the key and is handled in this pass;
        one that did not move is behind the key and never loops.
        """
        query = (
            select(Ticket)
            .options(defer(Ticket.triage), defer(Ticket.flags), defer(Ticket.match_text))
            .where(Ticket.next_due_at <= now)
            .order_by(Ticket.next_due_at, Ticket.id)
            .limit(self.cfg.batch)
            .with_for_update(skip_locked=True)
        )
        if after is not None:
            due, last_id = after
            query = query.where(
                or_(Ticket.next_due_at > due, and_(Ticket.next_due_at == due, Ticket.id > last_id))
            )
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
                self.log.error(
                    "scheduler.ticket_failed",
                    ticket=ticket.ref,
                    error=str(exc),
                    fix="configure the policy or calendar again; `buzon sla explain` checks it",
                )
            except Exception as exc:  # one bad ticket must not stop every other deadline
                report.errors += 1
                ticket.next_due_at = now + RETRY_BROKEN
                self.log.error(
                    "scheduler.ticket_failed",
                    ticket=ticket.ref,
                    error=f"{type(exc).__name__}: {exc}",
                    fix=f"retried in {RETRY_BROKEN}; please report this with the ticket's events",
                )

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
        self._alarms(session, ticket, clocks, calendar=calendar, now=now, report=report)
        tz = calendar.timezone.key
        if clocks.close_due is not None and clocks.close_due <= now:
            values = {
                "close_on": when(now, tz, ticket.language),
                "reopen_within": spoken(Duration.parse(self.cfg.reopen_within), ticket.language),
            }
            # Closed first: closing cancels pending follow-up mail, and the last notice
            # queued after it must not be among them.
            sla.close(session, ticket, self.cfg, now, reason="auto", by="scheduler", known=rows)
            mail = self._mail(session, ticket, "last_notice", now=now, values=values, report=report)
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
            mail = self._mail(session, ticket, "followup", now=now, values=values, report=report)
            sla.record(
                session,
                ticket,
                "followup_sent",
                self.cfg,
                now,
                data={"number": number, "outbox": mail or None},
                known=rows,
            )
            report.followups += 1
            log.info("ticket.followup_queued", number=number, mail=mail)
            return
        sla.write(ticket, clocks, policy, calendar, self.cfg)  # alarms_sent moved next_due_at

    def _alarms(
        self,
        session: Session,
        ticket: Ticket,
        clocks: ck.Clocks,
        *,
        calendar: Calendar,
        now: datetime,
        report: PassReport,
    ) -> None:
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
                    data["notice"] = self._notify(session, ticket, alarm, now, report)
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

    def _notify(
        self, session: Session, ticket: Ticket, alarm: ck.Alarm, now: datetime, report: PassReport
    ) -> int:
        """Queue a breach notice to the team's address; the outbox id (0 when none is set)."""
        address = self.cfg.notify_for(ticket.team)
        if not address:
            return 0
        values = {
            "clock": alarm.clock,
            "deadline": alarm.deadline.isoformat(timespec="minutes"),
            "team": ticket.team or "-",
            "ticket_link": ticket.ref or "",
        }
        return self._mail(
            session, ticket, "breach", now=now, values=values, report=report, to=address
        )

    def _mail(
        self,
        session: Session,
        ticket: Ticket,
        kind: Kind,
        *,
        now: datetime,
        values: dict[str, str],
        report: PassReport,
        to: str = "",
    ) -> int:
        """Queue ``kind`` to ``to`` (default the requester); its outbox id, 0 when unsendable.

        An address no mail can carry (none, a phone number, one the composer refuses,
        e.g. a non-ASCII local part our relay path cannot promise) is logged; the
        clock still moves on, so a customer we cannot mail is still closed in time.
        """
        recipient = to or ticket.requester
        if self.outbound is None or "@" not in recipient:
            return 0
        try:
            mail = self.outbound.write(session, ticket, kind, now, values=values, to=recipient)
        except ValueError as exc:
            self.log.warning("ticket.mail_impossible", ticket=ticket.ref, kind=kind, error=str(exc))
            return 0
        session.flush()
        report.mails += 1
        return mail.id


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
