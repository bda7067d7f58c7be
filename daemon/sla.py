"""A ticket's SLA in the database: its policy, the clock events its history holds, its deadlines.

The ticket's events are the truth; the deadline columns are a cache of
``triage.clocks.replay`` over them, rewritten after every clock event so the
scheduler can find due tickets by index. ``explain`` replays the same events
and says whether the cache agrees.

Ticket events that drive the clocks (``data["at"]`` is the clock time; the row's
``at`` is when it was recorded):

``stamped`` (policy, calendar, selection reason, facts; the first one opens the
clocks, a later one re-selects the policy after a reclassification and the whole
history is replayed under it), ``customer_message`` (``chase``), ``assigned``
(``agent``), ``responded`` (``agent``, ``via``), ``waiting``, ``followup_sent``,
``closed`` (``reason``), ``reopened``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config_desk import SlaConfig
from storage import eventlog, outbox
from storage import repository as repo
from storage.models import Message, Ticket, TicketEvent
from triage import clock_state
from triage import clocks as ck
from triage.alarms import Alarm, next_due
from triage.calendar import Calendar
from triage.policy import Policy, Selection, TicketFacts
from triage.policy import select as select_policy

CLOCK_KINDS = (
    "stamped",
    "customer_message",
    "assigned",
    "responded",
    "waiting",
    "followup_sent",
    "closed",
    "reopened",
)


class SlaError(LookupError):
    """A ticket's recorded policy or calendar is not configured any more."""


def facts_of(ticket: Ticket, sla: SlaConfig) -> TicketFacts:
    """What policy selection reads from a ticket."""
    return TicketFacts(
        team=sla.team_of(ticket.category),
        category=ticket.category,
        priority=ticket.priority,
        severity=ticket.severity,
        channel=ticket.channel,
        tier=sla.tier_of(ticket.customer),
    )


def _policy(sla: SlaConfig, name: str) -> Policy:
    for policy in sla.policies:
        if policy.name == name:
            return policy
    raise SlaError(
        f"policy {name!r} is recorded on the ticket but not configured; "
        "add it back to [[sla.policies]]; `buzon sla explain` shows the ticket's history"
    )


def _selection_data(sel: Selection, facts: TicketFacts, at: datetime) -> dict[str, Any]:
    return {
        "at": at.isoformat(),
        "policy": sel.policy.name,
        "calendar": sel.policy.calendar,
        "selection": sel.reason,
        "facts": {
            "team": facts.team,
            "category": facts.category,
            "priority": facts.priority,
            "severity": facts.severity,
            "channel": facts.channel,
            "tier": facts.tier,
        },
    }


def stamp(
    session: Session,
    ticket: Ticket,
    sla: SlaConfig,
    now: datetime,
    message: Message | None = None,
    *,
    opened: bool = False,
) -> ck.Clocks:
    """Select the new ticket's policy and open its clocks at its creation time.

    ``opened``: the ticket was created in this transaction, so it has no clock event
    to read back (nor a flush to make before reading).
    """
    facts = facts_of(ticket, sla)
    sel = select_policy(sla.policies, facts)
    ticket.team = facts.team
    data = _selection_data(sel, facts, ticket.created_at)
    data["channel"] = ticket.channel
    known: list[TicketEvent] | None = [] if opened else None
    return record(session, ticket, "stamped", sla, now, data=data, message=message, known=known)


def reselect(session: Session, ticket: Ticket, sla: SlaConfig, now: datetime, why: str) -> bool:
    """Select the policy again (the ticket was classified late); True when it changed."""
    facts = facts_of(ticket, sla)
    sel = select_policy(sla.policies, facts)
    ticket.team = facts.team
    if sel.policy.name == ticket.sla_policy or not ticket.sla_policy:
        return False
    data = _selection_data(sel, facts, now)
    data.update(restamp=True, why=why, previous=ticket.sla_policy)
    record(session, ticket, "stamped", sla, now, data=data)
    return True


def record(
    session: Session,
    ticket: Ticket,
    kind: str,
    sla: SlaConfig,
    now: datetime,
    *,
    data: dict[str, Any] | None = None,
    message: Message | None = None,
    known: list[TicketEvent] | None = None,
) -> ck.Clocks:
    """Add one clock event to the ticket and rewrite its deadline columns; the new clocks.

    ``known``: the ticket's clock events the caller already loaded (the scheduler loads a
    batch at once); the new one is appended to it, and nothing is read back. Without it,
    a ticket whose clocks snapshot is current folds the one event into it (``folded``);
    only one without a snapshot, or a new policy, replays its history from the database.
    """
    if kind not in CLOCK_KINDS:
        raise ValueError(f"{kind!r} is not a clock event; one of {', '.join(CLOCK_KINDS)}")
    payload = {"at": now.isoformat(), **(data or {})}
    row = repo.add_event(session, ticket, kind, now, data=payload, message=message)
    if known is not None:
        known.append(row)
        clocks = cache(ticket, history_of(known), sla)
    elif (folded_clocks := folded(ticket, kind, payload, sla)) is not None:
        clocks = folded_clocks
    else:
        rows = clock_rows(session, ticket) if ticket.id is not None else [row]  # row among them
        clocks = cache(ticket, history_of(rows), sla)
    # The event keeps what it set beside its inputs: the audit trail reads without a replay.
    row.data = {**payload, "result": _result(ticket)}
    return clocks


def folded(ticket: Ticket, kind: str, data: dict[str, Any], sla: SlaConfig) -> ck.Clocks | None:
    """The clocks after one more event, folded into the ticket's snapshot and written onto
    its columns; None when there is no current snapshot or the event is a (re)stamp.

    A replay is this same fold from the first event (``triage.clocks.replay``), and the
    snapshot is its result so far (every clock event and scheduler pass writes it), so the
    deadlines are the replay's; the scheduler folds the same way. A reply no longer reads
    its ticket's whole history back: a statement, a flush and a replay less a message.
    """
    make = _EVENTS.get(kind)
    if make is None or ticket.id is None or not ticket.sla_policy:
        return None  # a stamp may change the policy: the whole history is replayed under it
    try:
        before = clock_state.decode(ticket.clocks)
    except clock_state.SnapshotError:
        return None  # written before snapshots existed
    policy, calendar = policy_and_calendar(sla, ticket.sla_policy)
    at = datetime.fromisoformat(str(data["at"]))
    clocks = ck.apply(before, make(at, data), policy, calendar, explain=False)
    write(ticket, clocks, policy, calendar, sla)
    return clocks


def _result(ticket: Ticket) -> dict[str, Any]:
    return result_of(ticket.sla_policy, stored_columns(ticket))


def result_of(policy: str, cols: Columns) -> dict[str, Any]:
    """What a clock event set, as its ``result``: read by the audit trail without a replay."""
    return {
        "policy": policy,
        "status": cols.status,
        "assign_by": clock_state.iso(cols.assign_by),
        "respond_by": clock_state.iso(cols.respond_by),
        "followup_due_at": clock_state.iso(cols.followup_due_at),
        "close_due_at": clock_state.iso(cols.close_due_at),
        "followups_sent": cols.followups_sent,
    }


def clock_rows(session: Session, ticket: Ticket) -> list[TicketEvent]:
    """The ticket's clock events in recording order, those the session holds back until
    its commit (``storage.eventlog``) last."""
    if ticket.id is None:
        return []
    session.flush()
    written = session.scalars(
        select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind.in_(CLOCK_KINDS))
        .order_by(TicketEvent.id)
    )
    return [*written, *eventlog.pending(session, ticket, CLOCK_KINDS)]


@dataclass(frozen=True, slots=True)
class History:
    """A ticket's clock events as ``triage.clocks`` events, and the policy they run under."""

    policy: str
    calendar: str
    events: tuple[ck.Event, ...]
    rows: tuple[TicketEvent, ...]  # the event each clock event came from, same order


# How each stored row becomes a clock event (``stamped`` is handled by ``history_of``).
_EVENTS: dict[str, Callable[[datetime, dict[str, Any]], ck.Event]] = {
    "customer_message": lambda at, d: ck.CustomerMessage(at, bool(d.get("chase", False))),
    "assigned": lambda at, d: ck.Assigned(at, str(d.get("agent", ""))),
    "responded": lambda at, d: ck.AgentResponse(at),
    "waiting": lambda at, d: ck.Waiting(at),
    "followup_sent": lambda at, d: ck.FollowupSent(at),
    "closed": lambda at, d: ck.Closed(at, str(d.get("reason", ""))),
    "reopened": lambda at, d: ck.Reopened(at),
}


def history_of(rows: Sequence[TicketEvent]) -> History:
    """Map stored ticket events to clock events (a row seen twice is read once)."""
    seen: set[int] = set()
    policy = calendar = ""
    events: list[ck.Event] = []
    sources: list[TicketEvent] = []
    for row in rows:
        if row.id is not None:
            if row.id in seen:
                continue
            seen.add(row.id)
        d = row.data or {}
        at = datetime.fromisoformat(str(d["at"])) if d.get("at") else row.at
        event: ck.Event | None
        if row.kind == "stamped":
            # The first stamp opens the clocks; a later one only changes the policy, and
            # the whole history is replayed under it.
            first = not policy
            policy, calendar = str(d.get("policy", "")), str(d.get("calendar", ""))
            event = ck.Opened(at, str(d.get("channel", "email"))) if first else None
        else:
            make = _EVENTS.get(row.kind)
            event = make(at, d) if make else None
        if event is not None:
            events.append(event)
            sources.append(row)
    return History(policy, calendar, tuple(events), tuple(sources))


def policy_and_calendar(sla: SlaConfig, name: str) -> tuple[Policy, Calendar]:
    """The configured policy ``name`` and its calendar; SlaError naming what is missing."""
    policy = _policy(sla, name)
    try:
        return policy, sla.calendar(policy.calendar)
    except KeyError:
        raise SlaError(
            f"calendar {policy.calendar!r} of policy {policy.name!r} is not configured; "
            f"add [calendars.{policy.calendar}]"
        ) from None


def replay(
    history: History, sla: SlaConfig, *, explain: bool = True
) -> tuple[ck.Clocks, Policy, Calendar]:
    """The clocks a history gives under its recorded policy and that policy's calendar."""
    policy, calendar = policy_and_calendar(sla, history.policy)
    return ck.replay(policy, calendar, history.events, explain=explain), policy, calendar


def _utc(t: datetime | None) -> datetime | None:
    return t.astimezone(UTC) if t is not None else None


class Columns(NamedTuple):
    """The deadline columns a replay gives, in UTC, as the ticket stores them (a named
    tuple: one per due ticket a pass, where a frozen dataclass costs ~4x to build)."""

    status: str
    assign_by: datetime | None
    respond_by: datetime | None
    followup_due_at: datetime | None
    close_due_at: datetime | None
    followups_sent: int
    next_due_at: datetime | None


def columns(
    clocks: ck.Clocks,
    calendar: Calendar,
    alarms_sent: Sequence[str],
    at_risk: float,
    *,
    alarms: Sequence[Alarm] | None = None,
) -> Columns:
    return Columns(
        status="closed" if clocks.state == "closed" else "open",
        assign_by=_utc(clocks.assign_by),
        respond_by=_utc(clocks.respond_by),
        followup_due_at=_utc(clocks.followup_due),
        close_due_at=_utc(clocks.close_due),
        followups_sent=clocks.followups_sent,
        next_due_at=_utc(next_due(clocks, alarms_sent, calendar, at_risk, known=alarms)),
    )


def stored_columns(ticket: Ticket) -> Columns:
    return Columns(
        status="closed" if ticket.status == "closed" else "open",
        assign_by=ticket.assign_by,
        respond_by=ticket.respond_by,
        followup_due_at=ticket.followup_due_at,
        close_due_at=ticket.close_due_at,
        followups_sent=ticket.followups_sent,
        next_due_at=ticket.next_due_at,
    )


def differences(
    ticket: Ticket, clocks: ck.Clocks, calendar: Calendar, sla: SlaConfig
) -> dict[str, tuple[Any, Any]]:
    """Where the ticket's stored cache disagrees with ``clocks`` (a replay): name -> (stored,
    replayed). The snapshot counts too; a ticket without one (stamped before it existed)
    is replayed by the scheduler, so its absence is no disagreement."""
    replayed = columns(clocks, calendar, ticket.alarms_sent or [], sla.at_risk)
    stored = stored_columns(ticket)
    out = {
        name: (getattr(stored, name), value)
        for name in Columns._fields
        if (value := getattr(replayed, name)) != getattr(stored, name)
    }
    snapshot = clock_state.encode(clocks)
    if ticket.clocks is not None and ticket.clocks != snapshot:
        out["clocks"] = (ticket.clocks, snapshot)
    return out


def cache(ticket: Ticket, history: History, sla: SlaConfig) -> ck.Clocks:
    """Replay ``history`` and write the result onto the ticket's columns."""
    clocks, policy, calendar = replay(history, sla)
    write(ticket, clocks, policy, calendar, sla)
    return clocks


def write(
    ticket: Ticket, clocks: ck.Clocks, policy: Policy, calendar: Calendar, sla: SlaConfig
) -> None:
    """Put replayed clocks on the ticket's columns (``next_due_at`` sees ``alarms_sent``)."""
    ticket.sla_policy, ticket.sla_calendar = policy.name, calendar.name
    cols = columns(clocks, calendar, ticket.alarms_sent or [], sla.at_risk)
    ticket.assign_by = cols.assign_by
    ticket.respond_by = cols.respond_by
    ticket.followup_due_at = cols.followup_due_at
    ticket.close_due_at = cols.close_due_at
    ticket.followups_sent = cols.followups_sent
    ticket.next_due_at = cols.next_due_at
    ticket.clocks = clock_state.encode(clocks)
    if ticket.status != "merged":
        ticket.status = cols.status


# -- What happens to a ticket -------------------------------------------------------------
# Each action sets the ticket's plain columns, records its clock event and cancels mail
# the change made pointless; all in the caller's transaction.

FOLLOWUP_KINDS = ("followup", "last_notice")


def assign(
    session: Session, ticket: Ticket, sla: SlaConfig, now: datetime, *, agent: str, by: str
) -> ck.Clocks:
    ticket.assigned_to, ticket.assigned_at = agent, now
    return record(session, ticket, "assigned", sla, now, data={"agent": agent, "by": by})


def respond(
    session: Session,
    ticket: Ticket,
    sla: SlaConfig,
    now: datetime,
    *,
    agent: str,
    via: str,
    message: Message | None = None,
) -> ck.Clocks:
    if not ticket.assigned_to:
        ticket.assigned_to, ticket.assigned_at = agent, now  # who answered has taken it
    data = {"agent": agent, "via": via}
    return record(session, ticket, "responded", sla, now, data=data, message=message)


def wait(session: Session, ticket: Ticket, sla: SlaConfig, now: datetime, *, by: str) -> ck.Clocks:
    ticket.waiting_since = now
    return record(session, ticket, "waiting", sla, now, data={"by": by})


def close(
    session: Session,
    ticket: Ticket,
    sla: SlaConfig,
    now: datetime,
    *,
    reason: str,
    by: str,
    known: list[TicketEvent] | None = None,
) -> ck.Clocks:
    """Close the ticket; its unsent follow-ups are cancelled (queue a last notice after)."""
    ticket.closed_at, ticket.waiting_since = now, None
    outbox.cancel_pending(session, ticket.id, FOLLOWUP_KINDS, f"ticket closed ({reason})")
    data = {"reason": reason, "by": by}
    return record(session, ticket, "closed", sla, now, data=data, known=known)


def customer_message(
    session: Session,
    ticket: Ticket,
    sla: SlaConfig,
    now: datetime,
    *,
    at: datetime,
    message: Message,
    chase: bool,
) -> ck.Clocks:
    """The customer wrote on the ticket; on a closed one this reopens it."""
    ticket.waiting_since = None
    cancelled = outbox.cancel_pending(
        session, ticket.id, FOLLOWUP_KINDS, "the customer replied before it was sent"
    )
    data: dict[str, Any] = {"at": at.isoformat(), "message_id": message.message_id}
    if cancelled:
        data["cancelled_outbox"] = [m.id for m in cancelled]
    if ticket.status == "closed":
        ticket.closed_at = None
        return record(session, ticket, "reopened", sla, now, data=data, message=message)
    data["chase"] = chase
    return record(session, ticket, "customer_message", sla, now, data=data, message=message)
