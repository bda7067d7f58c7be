"""The SLA scheduler: a pass finds due tickets by index and does what is due, exactly once.

No timers live in memory: every ticket stores ``next_due_at`` (indexed), the
earliest moment it needs the scheduler, so a restart loses nothing and a pass
after downtime catches up. A pass claims due tickets in batches (``FOR UPDATE
SKIP LOCKED``: instances on one PostgreSQL share the work), decides each one from
its columns and clock snapshot (``daemon.scheduler_plan``; a ticket without a
snapshot is replayed from its events), then writes the whole batch at once: the
mails as outbox rows, the events, the new columns, in one transaction. A crash
therefore keeps both a change and the mail it owes, or neither; the alarm keys
make every warning once-only across passes. The log lines of a batch are written
after it commits, so a batch rolled back never logs what it did not do.

Mail is queued, not composed: the sender composes each row when it claims it
(``daemon.outbound``), so a pass that owes thousands of mails writes rows only.
A batch whose write fails for a reason other than the database being unavailable
is done again one ticket at a time; a ticket that still fails is retried in
``RETRY_BROKEN``, and every other ticket's deadlines go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, Update, bindparam, insert, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from daemon import logging as logmod
from daemon import sla
from daemon.config_desk import SlaConfig
from daemon.outbound import Outbound, nonces
from daemon.scheduler_plan import COLUMNS, Due, Mail, Plan, decide
from storage import bulk, outbox
from storage.engine import Database
from storage.models import Ticket, TicketEvent
from triage import clock_state
from triage import clocks as ck


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

_TICKETS = cast(Table, Ticket.__table__)
_EVENTS = cast(Table, TicketEvent.__table__)
_T = _TICKETS.c
_WRITE = COLUMNS
_READ = (
    _T.id,
    _T.ref,
    _T.subject,
    _T.requester,
    _T.language,
    _T.team,
    _T.assigned_to,
    _T.sla_policy,
    *(getattr(_T, name) for name in _WRITE),
)


class _Changed(NamedTuple):
    statement: Update
    binds: tuple[str, ...]  # the changed columns' bind names, in ``_WRITE`` order


@functools.cache
def _changed(mask: tuple[bool, ...]) -> _Changed:
    """UPDATE of just the columns ``mask`` marks changed (by position in ``_WRITE``), by
    id: a ticket's unchanged columns (and the indexes over them) are left alone, which is
    most of them for a ticket that only had an alarm."""
    binds = {name: f"b_{name}" for name in compress(_WRITE, mask)}
    statement = (
        update(_TICKETS)
        .where(_T.id == bindparam("b_id"))
        .values({name: bindparam(bind) for name, bind in binds.items()})
    )
    return _Changed(statement, tuple(binds.values()))


def _positions(*names: str) -> Callable[[Any], tuple[Any, ...]]:
    """These columns of a claimed row, by position: a Row's lookup by name cost ~5 µs a
    ticket a pass."""
    keys = [c.key for c in _READ]
    return operator.itemgetter(*(keys.index(name) for name in names))


_WRITTEN = _positions(*_WRITE)
_ID = operator.itemgetter(0)


_DUE = _positions(*Due._fields)  # its fields are the columns' names
_INSERT_EVENT = insert(_EVENTS)
_RESCHEDULE = (
    update(_TICKETS)
    .where(_T.id == bindparam("b_id"))
    .values(next_due_at=bindparam("b_next_due_at"))
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Batch:
    """A claimed batch: the plans to write, the tickets that failed, what to log after."""

    plans: list[Plan]
    failed: dict[int, datetime | None]  # ticket id -> next_due_at to set instead
    logs: list[tuple[str, str, dict[str, Any]]]
    mails: int = 0  # outbox rows written (a digest is one, whatever it lists)


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
        self.log = logmod.get_logger(component="scheduler")

    def run_once(self) -> PassReport:
        """One pass: every ticket due at the pass's start, in batches of ``[sla] batch``."""
        started = time.perf_counter()
        now = self.clock()
        report = PassReport()
        after: tuple[datetime, int] | None = None
        while True:
            rows: list[Any] = []
            try:
                with self.db.transaction() as session:
                    rows = self._claim(session, now, after)
                    batch = self._batch(session, rows, now, report)
            except (OperationalError, InterfaceError):
                raise  # the database is away or busy: the next pass retries the lot
            except Exception as exc:
                if not rows:
                    raise
                batch = self._one_by_one(rows, now, report, exc)
            if rows:
                after = (rows[-1].next_due_at or now, rows[-1].id)
            self._emit(batch.logs)
            if len(rows) < self.cfg.batch:
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
    ) -> list[Any]:
        """The next batch of due tickets, in (next_due_at, id) order after ``after``.

        Keyset order, not a list of handled ids: a pass over 10,000 due tickets would
        otherwise send 10,000 parameters. A handled ticket that is due again (its next
        alarm passed during downtime) sorts after the key and is handled in this pass;
        one that did not move is behind the key and never loops.
        """
        query = (
            select(*_READ)
            .where(_T.next_due_at <= now)
            .order_by(_T.next_due_at, _T.id)
            .limit(self.cfg.batch)
            .with_for_update(skip_locked=True)
        )
        if after is not None:
            # The range bound on its own, not only inside the OR: with it SQLite reads the
            # index in order, where the OR alone made it collect and sort every remaining
            # due ticket for each batch.
            due, last_id = after
            query = query.where(_T.next_due_at >= due, or_(_T.next_due_at > due, _T.id > last_id))
        return list(session.execute(query).all())  # one fetchall, not a fetchone a row

    def _batch(
        self, session: Session, rows: Sequence[Any], now: datetime, report: PassReport
    ) -> _Batch:
        """Decide every claimed ticket, then write the batch; counts go to ``report``."""
        batch = _Batch([], {}, [])
        replayed = self._replays(session, [r for r in rows if not _snapshot(r.clocks)])
        for row in rows:
            due = _due(row)
            try:
                clocks = replayed.get(due.id) or clock_state.decode(due.clocks)
                policy, calendar = sla.policy_and_calendar(self.cfg, due.sla_policy)
                batch.plans.append(decide(due, clocks, policy, calendar, cfg=self.cfg, now=now))
            except sla.SlaError as exc:
                batch.failed[due.id] = None  # not retried every pass; explain says why
                batch.logs.append(_failed(due, str(exc), _FIX_CONFIG))
            except Exception as exc:  # one bad ticket must not stop every other deadline
                batch.failed[due.id] = now + RETRY_BROKEN
                batch.logs.append(_failed(due, f"{type(exc).__name__}: {exc}", _FIX_REPORT))
        # The _WRITE columns as claimed, by ticket id (``_READ``'s first column), in C.
        stored = dict(zip(map(_ID, rows), map(_WRITTEN, rows), strict=True))
        self._write(session, batch, now, stored)
        report.tickets += len(rows)
        report.errors += len(batch.failed)
        report.mails += batch.mails
        for plan in batch.plans:
            report.followups += plan.followups
            report.closed += plan.closes
            report.at_risk += plan.at_risk
            report.breached += plan.breached
        return batch

    def _replays(self, session: Session, rows: Sequence[Any]) -> dict[int, ck.Clocks]:
        """Clocks of tickets without a snapshot (written before it existed), by replay."""
        if not rows:
            return {}
        events: dict[int, list[TicketEvent]] = defaultdict(list)
        ids = [r.id for r in rows]
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            for event in session.scalars(
                select(TicketEvent)
                .where(TicketEvent.ticket_id.in_(chunk), TicketEvent.kind.in_(sla.CLOCK_KINDS))
                .order_by(TicketEvent.id)
            ):
                events[event.ticket_id].append(event)
        out: dict[int, ck.Clocks] = {}
        for tid in ids:
            with contextlib.suppress(sla.SlaError):  # decided again, and reported, per ticket
                out[tid] = sla.replay(sla.history_of(events[tid]), self.cfg, explain=False)[0]
        return out

    def _write(
        self,
        session: Session,
        batch: _Batch,
        now: datetime,
        stored: dict[int, tuple[Any, ...]],
    ) -> None:
        """The batch's mails, events and columns, each in one statement."""
        plans = batch.plans
        closing = [p.ticket.id for p in plans if p.closes]
        if closing:
            outbox.cancel_pending_many(session, closing, sla.FOLLOWUP_KINDS, "ticket closed (auto)")
        batch.mails = self._queue(session, plans, now)
        events = [
            {"ticket_id": p.ticket.id, "at": now, "kind": kind, "message_pk": None, "data": data}
            for p in plans
            for kind, data in p.events
        ]
        bulk.executemany(session, _INSERT_EVENT, events)
        # Tickets grouped by which columns changed, one UPDATE each: compared in C (``map``
        # of ``ne``), as a genexpr over the names this was ~3 % of a pass.
        changed: dict[tuple[bool, ...], list[dict[str, Any]]] = defaultdict(list)
        for p in plans:
            new = p.columns
            mask = tuple(map(operator.ne, new, stored[p.ticket.id]))
            if any(mask):
                params = dict(zip(_changed(mask).binds, compress(new, mask), strict=True))
                params["b_id"] = p.ticket.id
                changed[mask].append(params)
        for mask, rows in changed.items():
            bulk.executemany(session, _changed(mask).statement, rows)
        bulk.executemany(
            session,
            _RESCHEDULE,
            [{"b_id": tid, "b_next_due_at": at} for tid, at in batch.failed.items()],
        )
        for plan in plans:
            batch.logs.extend(_bind(plan, e) for e in plan.logs)

    def _queue(self, session: Session, plans: Sequence[Plan], now: datetime) -> int:
        """Queue every plan's mails, each id into the event that owes it; how many rows."""
        if self.outbound is None:
            return 0
        rows: list[dict[str, Any]] = []
        owners: list[list[tuple[Plan, int, str]]] = []
        digests: dict[str, list[tuple[Plan, Mail]]] = defaultdict(list)
        drawn = iter(nonces(sum(len(p.mails) for p in plans)))
        for plan in plans:
            t = plan.ticket
            for mail in plan.mails:
                if mail.kind == "breach":
                    digests[mail.to].append((plan, mail))
                    continue
                if "@" not in mail.to:
                    continue  # a phone number: the clock moves on without mail
                try:
                    rows.append(
                        self.outbound.row(
                            session,
                            ticket_id=t.id,
                            ref=t.ref,
                            subject=t.subject,
                            language=t.language,
                            kind=mail.kind,
                            now=now,
                            values=mail.values,
                            to=mail.to,
                            nonce=next(drawn),
                        )
                    )
                except ValueError as exc:
                    plan.logs.append(
                        (
                            "warning",
                            "ticket.mail_impossible",
                            {"kind": mail.kind, "error": str(exc)},
                        )
                    )
                    continue
                owners.append([(plan, mail.event, mail.key)])
        for address, lines in digests.items():
            try:
                rows.append(self._digest(session, address, lines, now))
            except ValueError as exc:
                self.log.warning("sla.notice_impossible", to=address, error=str(exc))
                continue
            owners.append([(plan, mail.event, mail.key) for plan, mail in lines])
        ids = outbox.enqueue_many(session, rows)
        for owed, mail_id in zip(owners, ids, strict=True):
            for plan, event, key in owed:
                if key:
                    plan.events[event][1][key] = mail_id
                plan.queued[event] = mail_id
        return len(ids)

    def _digest(
        self, session: Session, address: str, lines: Sequence[tuple[Plan, Mail]], now: datetime
    ) -> dict[str, Any]:
        """One breach notice to ``address`` naming every deadline this batch found breached:
        after a night of downtime the desk's admins get a list, not thousands of mails."""
        assert self.outbound is not None
        teams = sorted({mail.values["team"] for _, mail in lines})
        values = {
            "count": str(len(lines)),
            "team": ", ".join(teams),
            "breaches": "\n".join(mail.values["line"] for _, mail in lines),
        }
        first = lines[0][0].ticket
        return self.outbound.row(
            session,
            ticket_id=None,
            ref="",
            subject="",
            language=first.language,
            kind="breach",
            now=now,
            values=values,
            to=address,
        )

    def _one_by_one(
        self, rows: Sequence[Any], now: datetime, report: PassReport, exc: Exception
    ) -> _Batch:
        """The batch's write failed: each ticket on its own, so one cannot hold back the rest."""
        self.log.error(
            "scheduler.batch_failed",
            tickets=len(rows),
            error=f"{type(exc).__name__}: {exc}",
            fix="each ticket is handled alone now; one that fails again is retried later",
        )
        done = _Batch([], {}, [])
        for row in rows:
            try:
                with self.db.transaction() as session:
                    mine = list(
                        session.execute(
                            select(*_READ)
                            .where(_T.id == row.id, _T.next_due_at <= now)
                            .with_for_update(skip_locked=True)
                        )
                    )
                    one = self._batch(session, mine, now, report)
            except Exception as again:
                with self.db.transaction() as session:
                    session.execute(
                        _RESCHEDULE, [{"b_id": row.id, "b_next_due_at": now + RETRY_BROKEN}]
                    )
                report.tickets += 1
                report.errors += 1
                one = _Batch(
                    [], {}, [_failed(_due(row), f"{type(again).__name__}: {again}", _FIX_REPORT)]
                )
            done.logs.extend(one.logs)
        return done

    def _emit(self, logs: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        log = self.log.bind()  # the configured logger, resolved once for the batch's lines
        with logmod.held():
            for level, event, fields in logs:
                getattr(log, level)(event, **fields)


_FIX_CONFIG = "configure the policy or calendar again; `buzon sla explain` checks it"
_FIX_REPORT = f"retried in {RETRY_BROKEN}; please report this with the ticket's events"


def _snapshot(data: Any) -> bool:
    return isinstance(data, dict) and data.get("v") == clock_state.VERSION


def _due(row: Any) -> Due:
    (tid, ref, subject, requester, language, team, assigned_to, status, policy, sent, clocks,
     waiting_since, closed_at) = _DUE(row)  # fmt: skip
    return Due(  # by position, in Due's field order: keywords cost ~3x as much
        tid,
        ref or "",
        subject or "",
        requester or "",
        language or "es",
        team or "",
        assigned_to or "",
        status,
        policy or "",
        tuple(sent or ()),
        clocks if _snapshot(clocks) else None,
        waiting_since,
        closed_at,
    )


def _failed(due: Due, error: str, fix: str) -> tuple[str, str, dict[str, Any]]:
    return ("error", "scheduler.ticket_failed", {"ticket": due.ref, "error": error, "fix": fix})


def _bind(plan: Plan, entry: tuple[str, str, dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """A plan's log line with the ticket (and for clock changes, the policy and mail)."""
    level, event, fields = entry
    if event in ("ticket.auto_closed", "ticket.followup_queued"):
        mail = plan.queued.get(len(plan.events) - 1, 0)  # the clock event is the last one
        extra = {"ticket": plan.ticket.ref, "policy": plan.ticket.sla_policy, "mail": mail}
        return level, event, extra | fields
    return level, event, {"ticket": plan.ticket.ref, **fields}
