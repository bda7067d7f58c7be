"""What one scheduler pass does to one due ticket, decided without touching the database.

``decide`` takes the ticket's columns and clocks (its snapshot, or a replay when it
has none) and returns a ``Plan``: the events to record, the mails to queue, the
columns to write and the lines to log. The scheduler (``daemon.scheduler``) writes
the plans of a whole batch at once. The rules, at ``now``:

* ``close_due`` passed: close it (``closed``, reason ``auto``) and queue the last
  notice (the scheduler cancels its pending follow-ups first);
* else ``followup_due`` passed: queue a follow-up (``followup_sent``); one per pass,
  and the next is counted from now, so a long downtime never sends a burst;
* every at-risk or breach alarm whose moment passed and whose key is not yet in
  ``alarms_sent``: an ``sla_alarm`` event and the key; a breach is also a line of the
  notice to the team's ``[sla.notify]`` address (one digest per address and batch).
  An at-risk alarm found with its breach also due gets its key only, and the breach's
  event ``at_risk_passed``: neither logged nor an event of its own.

The new clocks are ``triage.clocks.apply`` of the one event recorded, the replay's own
fold step, so they are what replaying the ticket's events would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from daemon import sla
from daemon.config_desk import SlaConfig
from daemon.outbound import spoken, when
from daemon.outmail import Kind, header_text
from triage import clock_state
from triage import clocks as ck
from triage.alarms import Alarm, alarms
from triage.calendar import Calendar
from triage.durations import Duration
from triage.policy import Policy


class Due(NamedTuple):
    """The columns of a due ticket a pass reads (never its messages or triage).

    Named tuples here (``Due``, ``Mail``): a pass builds one or more per due ticket, and a
    frozen dataclass's ``__init__`` (an ``object.__setattr__`` a field) costs ~4x."""

    id: int
    ref: str
    subject: str
    requester: str
    language: str
    team: str
    assigned_to: str
    status: str
    sla_policy: str
    alarms_sent: tuple[str, ...]
    clocks: dict[str, Any] | None
    waiting_since: datetime | None
    closed_at: datetime | None


# The ticket columns a plan sets, in the order of ``Plan.columns``.
COLUMNS = (
    "status",
    "assign_by",
    "respond_by",
    "followup_due_at",
    "close_due_at",
    "followups_sent",
    "next_due_at",
    "alarms_sent",
    "clocks",
    "closed_at",
    "waiting_since",
)


class Mail(NamedTuple):
    """A mail the plan owes; its outbox id goes into ``events[event][key]`` once queued."""

    kind: Kind
    to: str
    values: dict[str, str]
    event: int
    key: str


@dataclass(slots=True)
class Plan:
    """Everything a pass writes for one ticket; ``columns`` in ``COLUMNS`` order."""

    ticket: Due
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mails: list[Mail] = field(default_factory=list)
    columns: tuple[Any, ...] = ()
    logs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # level, event
    queued: dict[int, int] = field(default_factory=dict)  # event index -> outbox id
    closes: bool = False
    followups: int = 0
    at_risk: int = 0
    breached: int = 0


def decide(
    due: Due,
    clocks: ck.Clocks,
    policy: Policy,
    calendar: Calendar,
    *,
    cfg: SlaConfig,
    now: datetime,
) -> Plan:
    """The plan for ``due`` whose clocks are ``clocks`` (under ``policy`` and ``calendar``)."""
    plan = Plan(due)
    pending: list[Alarm] | None = alarms(
        clocks, calendar, cfg.at_risk, sent=due.alarms_sent, now=now
    )
    tz, lang = calendar.timezone.key, due.language
    sent = _alarms(plan, pending or [], cfg, now, tz)
    closed_at, waiting_since = due.closed_at, due.waiting_since
    if clocks.close_due is not None and clocks.close_due <= now:
        values = {
            "close_on": when(now, tz, lang),
            "reopen_within": spoken(Duration.parse(cfg.reopen_within), lang),
        }
        clocks = ck.apply(clocks, ck.Closed(now, "auto"), policy, calendar, explain=False)
        pending = None  # new clocks, new alarms
        closed_at, waiting_since = now, None
        plan.closes = True
        event = _event(plan, "closed", now, {"reason": "auto", "by": "scheduler"})
        plan.mails.append(Mail("last_notice", due.requester, values, event, ""))
        plan.logs.append(
            ("info", "ticket.auto_closed", {"waited_since": clock_state.iso(due.waiting_since)})
        )
    elif clocks.followup_due is not None and clocks.followup_due <= now:
        number = clocks.followups_sent + 1
        values = {
            "followup_number": str(number),
            "waiting_since": when(due.waiting_since or now, tz, lang),
            "close_on": when(clocks.close_due, tz, lang) if clocks.close_due else "",
        }
        clocks = ck.apply(clocks, ck.FollowupSent(now), policy, calendar, explain=False)
        pending = None
        plan.followups = 1
        event = _event(plan, "followup_sent", now, {"number": number, "outbox": None})
        plan.mails.append(Mail("followup", due.requester, values, event, "outbox"))
        plan.logs.append(("info", "ticket.followup_queued", {"number": number}))
    cols = sla.columns(clocks, calendar, sent, cfg.at_risk, alarms=pending)
    status = due.status if due.status == "merged" else cols.status
    plan.columns = (
        status,
        cols.assign_by,
        cols.respond_by,
        cols.followup_due_at,
        cols.close_due_at,
        cols.followups_sent,
        cols.next_due_at,
        list(sent),
        # Unchanged clocks keep their stored snapshot: most due tickets only had an alarm.
        due.clocks if pending is not None and due.clocks else clock_state.encode(clocks),
        closed_at,
        waiting_since,
    )
    for kind, data in plan.events:
        if kind != "sla_alarm":  # clock events carry what they set, as ``sla.record`` does
            data["result"] = result = sla.result_of(policy.name, cols)
            result["status"] = status
    return plan


def _event(plan: Plan, kind: str, now: datetime, data: dict[str, Any]) -> int:
    plan.events.append((kind, {"at": now.isoformat(), **data}))
    return len(plan.events) - 1


def _alarms(
    plan: Plan, pending: Sequence[Alarm], cfg: SlaConfig, now: datetime, tz: str
) -> tuple[str, ...]:
    """Record the alarms of ``pending`` that are due; the keys sent afterwards."""
    due = plan.ticket
    fired = [a for a in pending if a.at <= now and a.key not in due.alarms_sent]
    if not fired:
        return due.alarms_sent
    sent = list(due.alarms_sent)
    # Lists, not sets: two clocks at most, and a set built per ticket cost more.
    breached = [a.clock for a in fired if a.kind == "breached"]
    quiet = [a.clock for a in fired if a.kind == "at_risk" and a.clock in breached]
    subject = ""  # the digest line's, made safe once for the ticket's breaches
    for alarm in fired:
        sent.append(alarm.key)
        if alarm.kind == "at_risk" and alarm.clock in quiet:
            # Passed with its breach: the key is kept and the breach's event says so (an
            # event of its own was ~40 % of the rows a catch-up pass wrote).
            continue
        deadline = alarm.deadline.isoformat()
        data: dict[str, Any] = {
            "clock": alarm.clock,
            "kind": alarm.kind,
            "deadline": deadline,
            "logged": True,
        }
        plan.events.append(("sla_alarm", data))
        if alarm.kind == "breached":
            if alarm.clock in quiet:
                data["at_risk_passed"] = True  # its at-risk moment too: not told apart
            plan.breached += 1
            data["notice"] = 0
            if address := cfg.notify_for(due.team):
                # One line of the batch's digest to this address (``daemon.scheduler``).
                subject = subject or header_text(due.subject)
                line = "  ".join((due.ref, alarm.clock, when(alarm.deadline, tz, "en"), subject))
                values = {"line": line[:200], "team": due.team or "-"}
                plan.mails.append(Mail("breach", address, values, len(plan.events) - 1, "notice"))
        else:
            plan.at_risk += 1
        plan.logs.append(
            (
                "warning",
                f"sla.{alarm.kind}",
                {
                    "clock": alarm.clock,
                    "deadline": deadline,
                    "team": due.team,
                    "assigned_to": due.assigned_to,
                },
            )
        )
    return tuple(sent)
