"""A ticket's SLA clocks as a pure fold over its events: deadlines that explain and replay.

API::

    Opened(at, channel="email"), Assigned(at, agent), CustomerMessage(at, chase=False),
    AgentResponse(at), Waiting(at), FollowupSent(at), Closed(at, reason), Reopened(at)
    replay(policy, calendar, events) -> Clocks      # the fold of apply from Clocks()
    apply(clocks, event, policy, calendar) -> Clocks

``Clocks`` exposes ``state``, ``assign_by``/``assign_from``, ``respond_by``/``respond_from``/
``respond_provisional``, ``followup_due``, ``followups_sent``, ``close_due`` and ``steps``
(every change, in words). Event times are tz-aware; stored times are at the calendar's
local fixed offset (``Calendar.local``), so comparisons are between instants. What the
pending clocks owe the scheduler (warnings, the next moment it has work) is
``triage.alarms``.

Decisions:

* Two response obligations are kept apart and ``respond_by`` is the earlier: the *first
  response* (seed 000: within ``respond_within`` of assignment; provisional until assigned)
  and the *reply* to the customer's earliest unanswered follow-up (24 h). Keeping both means
  a late assignment cannot push back a follow-up that was already due earlier.
* A met deadline becomes None (not a "met" mark): pending deadlines are then exactly the
  non-None ones, which is what the scheduler reads; the step that cleared it says it was met
  and by how much.
* Re-assignment never extends the first response: the earlier definitive deadline stays.
* Any agent action (``AgentResponse``, ``Waiting``) meets the assignment clock too: an agent
  who answered has taken the ticket.
* A chase (seed 001, within 40 min) changes nothing on an open ticket. On a ticket waiting on
  the customer it *is* their reply: auto-close counts customer silence, and they spoke.
* ``followups_sent`` counts one silence: a customer message, ``Opened`` or ``Reopened``
  zero it; a second ``Waiting`` restarts the cadence and the close but keeps the count, so
  ``max_customer_followups`` bounds what one silent customer receives.
* Events are applied in the order given (the order the daemon recorded them), not sorted.
* ``PolicyChanged`` is not an event: after a reclassification the daemon replays the whole
  history under the new policy, which re-stamps every deadline consistently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import Any, Literal, NamedTuple

from triage.calendar import Calendar
from triage.durations import Duration
from triage.policy import Policy

__all__ = [
    "AgentResponse",
    "Assigned",
    "Clocks",
    "Closed",
    "CustomerMessage",
    "Deadline",
    "Event",
    "FollowupSent",
    "Opened",
    "Reopened",
    "Step",
    "Waiting",
    "apply",
    "replay",
]

State = Literal["open", "waiting", "closed"]


# -- Events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Timed:
    at: datetime

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError(
                f"{type(self).__name__}.at must be timezone-aware, got naive {self.at.isoformat()}"
            )


@dataclass(frozen=True, slots=True)
class Opened(_Timed):
    """A ticket was created from a customer's first email or voicemail."""

    channel: str = "email"


@dataclass(frozen=True, slots=True)
class Assigned(_Timed):
    """An agent took the ticket (again, for a re-assignment)."""

    agent: str


@dataclass(frozen=True, slots=True)
class CustomerMessage(_Timed):
    """The customer wrote again; ``chase`` marks a nudge within 40 min (seed 001)."""

    chase: bool = False


@dataclass(frozen=True, slots=True)
class AgentResponse(_Timed):
    """An agent answered the customer."""


@dataclass(frozen=True, slots=True)
class Waiting(_Timed):
    """The ticket now waits on the customer: response clocks stop, follow-ups start."""


@dataclass(frozen=True, slots=True)
class FollowupSent(_Timed):
    """The scheduler sent the customer a follow-up."""


@dataclass(frozen=True, slots=True)
class Closed(_Timed):
    """The ticket was closed (by an agent, or ``reason="auto"`` by the scheduler)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reopened(_Timed):
    """A closed ticket was reopened by a customer message."""


Event = (
    Opened | Assigned | CustomerMessage | AgentResponse | Waiting | FollowupSent | Closed | Reopened
)


# -- State ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One change to one field, in words; ``value`` is its new time (None: cleared or n/a)."""

    at: datetime
    event: str
    field: str
    value: datetime | None
    how: str


class Deadline(NamedTuple):
    """A running clock: when it started, when it is due, and how the due time was found.

    A named tuple (as ``Alarm``): a scheduler pass reads two or three a due ticket."""

    start: datetime
    due: datetime
    business: bool  # its window is measured in the calendar's open minutes
    how: str
    provisional: bool = False


class Clocks(NamedTuple):
    """A ticket's pending deadlines after some events, and the steps that set them.

    A named tuple (as ``Deadline``): a scheduler pass decodes one a due ticket and
    folds one event into it, and a frozen dataclass's ``__init__`` and ``replace``
    cost several times a tuple's."""

    state: State = "open"
    assign: Deadline | None = None
    first_response: Deadline | None = None
    reply: Deadline | None = None
    followup_due: datetime | None = None
    followups_sent: int = 0
    close_due: datetime | None = None
    steps: tuple[Step, ...] = ()

    @property
    def assign_by(self) -> datetime | None:
        return self.assign.due if self.assign else None

    @property
    def assign_from(self) -> datetime | None:
        return self.assign.start if self.assign else None

    @property
    def respond(self) -> Deadline | None:
        """The pending response deadline: the earlier obligation, a definitive one on a tie."""
        first, reply = self.first_response, self.reply
        if first is None or reply is None:
            return reply if first is None else first
        # The first response on a full tie: as min() over (first_response, reply) picks.
        return first if (first.due, first.provisional) <= (reply.due, reply.provisional) else reply

    @property
    def respond_by(self) -> datetime | None:
        respond = self.respond
        return respond.due if respond else None

    @property
    def respond_from(self) -> datetime | None:
        respond = self.respond
        return respond.start if respond else None

    @property
    def respond_provisional(self) -> bool:
        respond = self.respond
        return bool(respond and respond.provisional)


# -- The fold ------------------------------------------------------------------------------


def replay(
    policy: Policy, calendar: Calendar, events: Sequence[Event], *, explain: bool = True
) -> Clocks:
    """The clocks after ``events``, from a ticket that has none yet."""
    return reduce(
        lambda clocks, event: apply(clocks, event, policy, calendar, explain=explain),
        events,
        Clocks(),
    )


def apply(
    clocks: Clocks, event: Event, policy: Policy, calendar: Calendar, *, explain: bool = True
) -> Clocks:
    """The clocks after one more event, with a step for every field it changed.

    ``explain=False`` leaves ``steps`` alone and the new deadlines' ``how`` empty (as a
    snapshot, ``triage.clock_state``, holds them): the scheduler needs the deadlines, not
    the words, and the words cost as much as the arithmetic. The deadlines are the same.
    """
    if calendar.name != policy.calendar:
        raise ValueError(
            f"policy {policy.name!r} counts in calendar {policy.calendar!r}, "
            f"not {calendar.name!r}; pass calendars[policy.calendar]"
        )
    name, rule = _RULES[type(event)]
    ctx = _Ctx(policy, calendar, calendar.local(event.at), name, explain)
    after, notes = rule(clocks, event, ctx)
    if not explain:
        return after if after.steps is clocks.steps else after._replace(steps=clocks.steps)
    return after._replace(steps=clocks.steps + tuple(_steps(clocks, after, notes, ctx)))


@dataclass(frozen=True, slots=True)
class _Ctx:
    policy: Policy
    calendar: Calendar
    at: datetime  # the event's time at the calendar's local offset
    event: str
    explain: bool  # False: the deadlines' words are left empty, as a snapshot holds them

    def clock(
        self, field: str, label: str, start: datetime, within: Duration, provisional: bool = False
    ) -> Deadline:
        due = within.add(start, self.calendar)
        if not self.explain:
            return Deadline(start, due, within.business, "", provisional)
        how = (
            f"{field} = {label} {_show(start)} + {within} "
            f"(calendar {self.calendar.name}) = {_show(due)}"
        )
        if provisional:
            how += " (provisional until assigned)"
        return Deadline(start, due, within.business, how, provisional)

    def later(self, every: Duration | None, field: str, label: str) -> tuple[datetime | None, str]:
        if every is None:
            return None, f"{field}: the policy sets none"
        due = every.add(self.at, self.calendar)
        if not self.explain:
            return due, ""
        return due, (
            f"{field} = {label} {_show(self.at)} + {every} "
            f"(calendar {self.calendar.name}) = {_show(due)}"
        )


Notes = dict[str, str]  # field -> why it changed ("" when nothing did)


def _opened(clocks: Clocks, event: Opened, x: _Ctx) -> tuple[Clocks, Notes]:
    p = x.policy
    assign = x.clock("assign_by", f"opened by {event.channel}", x.at, p.assign_within)
    first = x.clock("respond_by", "assign_by", assign.due, p.respond_within, provisional=True)
    notes = {"state": "opened", "assign_by": assign.how, "respond_by": first.how}
    return Clocks(state="open", assign=assign, first_response=first), notes


def _assigned(clocks: Clocks, event: Assigned, x: _Ctx) -> tuple[Clocks, Notes]:
    if clocks.state == "closed":
        return clocks, {"": "the ticket is closed: assignment changes no clock"}
    notes = {
        "assign_by": _met("assign_by", clocks.assign, x.at, f"assigned to {event.agent}"),
        "": f"assigned to {event.agent}: no clock was pending"
        if clocks.respond_by is None
        else f"assigned to {event.agent}: respond_by stays {_show(clocks.respond_by)} "
        "(a re-assignment never extends it)",
    }
    first = clocks.first_response
    if first is not None:
        fresh = x.clock("respond_by", f"assigned to {event.agent}", x.at, x.policy.respond_within)
        if first.provisional or fresh.due < first.due:
            first = fresh
    after = clocks._replace(assign=None, first_response=first)
    notes["respond_by"] = _respond_note(after)
    return after, notes


def _customer_message(clocks: Clocks, event: CustomerMessage, x: _Ctx) -> tuple[Clocks, Notes]:
    if clocks.state == "closed":
        return clocks, {"": "the ticket is closed: no change (the daemon sends Reopened first)"}
    if clocks.state == "open" and event.chase:
        return clocks, {"": "chase within 40 min (seed 001): SLAs are not reset"}
    fresh = x.clock("respond_by", "customer message", x.at, x.policy.followup_response_within)
    if clocks.state == "waiting":
        after = clocks._replace(
            state="open", reply=fresh, followup_due=None, followups_sent=0, close_due=None
        )
        said = "the customer replied" + (" (a chase, but it ends their silence)" * event.chase)
        return after, {
            "state": said,
            "respond_by": fresh.how,
            "followup_due": f"cleared: {said}",
            "close_due": f"cleared: {said}",
            "followups_sent": "followups_sent = 0: the customer replied",
        }
    reply = clocks.reply if clocks.reply and clocks.reply.due <= fresh.due else fresh
    after = clocks._replace(reply=reply)
    return after, {
        "respond_by": _respond_note(after),
        "": f"respond_by stays {_show(clocks.respond_by)}: earlier than {fresh.how}",
    }


def _agent_response(clocks: Clocks, event: AgentResponse, x: _Ctx) -> tuple[Clocks, Notes]:
    if clocks.state == "closed":
        return clocks, {"": "the ticket is closed: no clock to stop"}
    after = clocks._replace(assign=None, first_response=None, reply=None)
    return after, {
        "assign_by": _met("assign_by", clocks.assign, x.at, "an agent answered"),
        "respond_by": _met("respond_by", clocks.respond, x.at, "an agent answered"),
    }


def _waiting(clocks: Clocks, event: Waiting, x: _Ctx) -> tuple[Clocks, Notes]:
    if clocks.state == "closed":
        return clocks, {"": "the ticket is closed: it waits on nobody"}
    p = x.policy
    followup_due, followup_note = x.later(p.customer_followup_every, "followup_due", "waiting")
    if clocks.followups_sent >= p.max_customer_followups:
        followup_due = None
        followup_note = (
            f"followup_due: none, {clocks.followups_sent} of max {p.max_customer_followups} sent"
        )
    close_due, close_note = x.later(p.auto_close_after, "close_due", "waiting")
    after = clocks._replace(
        state="waiting",
        assign=None,
        first_response=None,
        reply=None,
        followup_due=followup_due,
        close_due=close_due,
    )
    return after, {
        "state": "waiting on the customer: response clocks stop",
        "assign_by": _met("assign_by", clocks.assign, x.at, "an agent acted"),
        "respond_by": _met("respond_by", clocks.respond, x.at, "waiting on the customer"),
        "followup_due": followup_note,
        "close_due": close_note,
    }


def _followup_sent(clocks: Clocks, event: FollowupSent, x: _Ctx) -> tuple[Clocks, Notes]:
    if clocks.state != "waiting":
        return clocks, {"": f"the ticket is {clocks.state}: follow-ups only chase waiting ones"}
    p = x.policy
    sent = clocks.followups_sent + 1
    due, note = x.later(p.customer_followup_every, "followup_due", f"follow-up {sent} sent")
    if sent >= p.max_customer_followups:
        due, note = None, f"followup_due: none, {sent} of max {p.max_customer_followups} sent"
    after = clocks._replace(followups_sent=sent, followup_due=due)
    counted = f"followups_sent = {sent} of max {p.max_customer_followups}"
    return after, {"followups_sent": counted, "followup_due": note}


def _closed(clocks: Clocks, event: Closed, x: _Ctx) -> tuple[Clocks, Notes]:
    if clocks.state == "closed":
        return clocks, {"": f"already closed; {event.reason!r} changes nothing"}
    after = Clocks(state="closed", followups_sent=clocks.followups_sent)
    why = f"cleared: closed ({event.reason})"
    fields = ("assign_by", "respond_by", "followup_due", "close_due")
    return after, {"state": f"closed ({event.reason})", **dict.fromkeys(fields, why)}


def _reopened(clocks: Clocks, event: Reopened, x: _Ctx) -> tuple[Clocks, Notes]:
    fresh = x.clock("respond_by", "reopened", x.at, x.policy.followup_response_within)
    reply = clocks.reply if clocks.reply and clocks.reply.due <= fresh.due else fresh
    after = clocks._replace(
        state="open", reply=reply, followup_due=None, followups_sent=0, close_due=None
    )
    return after, {
        "state": "reopened",
        "respond_by": _respond_note(after),
        "followups_sent": "followups_sent = 0: reopened",
    }


# Each rule takes its own event type; the table pairs them (``Any`` because a dict cannot
# say "the key's type is the value's argument type"), plus the name steps record.
_Rule = Callable[[Clocks, Any, _Ctx], tuple[Clocks, Notes]]
_RULES: dict[type, tuple[str, _Rule]] = {
    Opened: ("opened", _opened),
    Assigned: ("assigned", _assigned),
    CustomerMessage: ("customer_message", _customer_message),
    AgentResponse: ("agent_response", _agent_response),
    Waiting: ("waiting", _waiting),
    FollowupSent: ("followup_sent", _followup_sent),
    Closed: ("closed", _closed),
    Reopened: ("reopened", _reopened),
}


def _met(field: str, deadline: Deadline | None, at: datetime, why: str) -> str:
    if deadline is None:
        return f"{field}: nothing pending"
    late = round((at - deadline.due).total_seconds() / 60)
    margin = f"{late} min late" if late > 0 else f"{-late} min early"
    return f"{field} met: {why} at {_show(at)}, due {_show(deadline.due)}, {margin}"


def _respond_note(after: Clocks) -> str:
    respond = after.respond
    if respond is None:
        return "respond_by: nothing pending"
    other = after.reply if respond is after.first_response else after.first_response
    tail = f"; earlier than the other pending due {_show(other.due)}" if other else ""
    return respond.how + tail


_FIELDS = ("state", "assign_by", "respond_by", "followup_due", "followups_sent", "close_due")


def _steps(before: Clocks, after: Clocks, notes: Notes, x: _Ctx) -> list[Step]:
    """A step per changed field, told by the rule's note; one step saying why when none did."""
    out: list[Step] = []
    for field in _FIELDS:
        old, new = _observed(before, field), _observed(after, field)
        if old == new:
            continue
        value = getattr(after, field)
        how = notes.get(field) or f"{field} = {new}"
        out.append(Step(x.at, x.event, field, value if isinstance(value, datetime) else None, how))
    if not out:
        out.append(Step(x.at, x.event, "", None, notes.get("", "no clock changes")))
    return out


def _observed(clocks: Clocks, field: str) -> object:
    """The field as the scheduler sees it; respond_by includes whether it is provisional."""
    if field == "respond_by":
        return clocks.respond_by, clocks.respond_provisional
    return getattr(clocks, field)


def _show(t: datetime | None) -> str:
    if t is None:
        return "none"
    whole = t.second == 0 and t.microsecond == 0
    return t.isoformat(timespec="minutes" if whole else "seconds")
