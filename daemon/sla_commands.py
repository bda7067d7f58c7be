"""`buzon sla`: check a deadline by hand, explain a ticket's clocks, run a scheduler pass.

``buzon sla due --start 2026-12-24T16:30+01:00 --add 1bh --calendar office`` prints
the instant the daemon would compute, in ISO 8601 with the calendar's offset, so an
admin can verify a policy before trusting it with customers. ``buzon sla explain
B-42`` replays the ticket's recorded events and prints every step with how it was
computed, then whether the stored deadlines agree (exit 1 when they do not).
``buzon sla pass`` runs one scheduler pass now (the daemon runs them by itself).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from daemon import sla
from daemon.config import Config
from daemon.errors import UsageError
from storage import repository as repo
from storage.engine import Database
from triage.clocks import Clocks
from triage.durations import Duration, DurationError


def due(cfg: Config, args: argparse.Namespace) -> int:
    desk_sla = cfg.desk.sla
    try:
        calendar = desk_sla.calendar(args.calendar)
    except KeyError:
        names = ", ".join(c.name for c in desk_sla.calendars)
        raise UsageError(
            f"--calendar {args.calendar!r}: no such calendar; configured: {names} "
            "(add one as [calendars.NAME])"
        ) from None
    try:
        start = datetime.fromisoformat(args.start)
    except ValueError:
        raise UsageError(
            f"--start {args.start!r}: use ISO 8601 with an offset, e.g. 2026-12-24T16:30+01:00"
        ) from None
    if start.tzinfo is None:
        raise UsageError(
            f"--start {args.start!r} has no offset: which zone? e.g. 2026-12-24T16:30+01:00"
        )
    try:
        duration = Duration.parse(args.add)
    except DurationError as exc:
        raise UsageError(f"--add: {exc}") from None
    result = duration.add(start, calendar)
    if args.json:
        print(
            json.dumps(
                {
                    "start": start.isoformat(),
                    "add": str(duration),
                    "calendar": calendar.name,
                    "due": result.isoformat(),
                }
            )
        )
    else:
        print(result.isoformat())
    return 0


def explain(cfg: Config, args: argparse.Namespace) -> int:
    db = Database(cfg.storage.database)
    db.upgrade()
    try:
        with db.transaction() as session:
            ticket = repo.ticket(session, args.ticket)
            if ticket is None:
                raise UsageError(f"no ticket {args.ticket!r}; see 'buzon tickets list'")
            rows = sla.clock_rows(session, ticket)
            if not rows:
                raise UsageError(f"{ticket.ref} has no SLA events (not stamped yet)")
            history = sla.history_of(rows)
            try:
                clocks, policy, calendar = sla.replay(history, cfg.desk.sla)
            except sla.SlaError as exc:
                raise UsageError(str(exc)) from None
            differ = sla.differences(ticket, clocks, calendar, cfg.desk.sla)
            report = _explanation(ticket.ref or "", history, clocks, policy.name, calendar.name)
            report["stored_agrees"] = not differ
            if differ:
                report["differences"] = {
                    name: {"stored": _iso(stored), "replayed": _iso(replayed)}
                    for name, (stored, replayed) in differ.items()
                }
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_explanation(report)
    return 0 if report["stored_agrees"] else 1


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _explanation(
    ref: str, history: sla.History, clocks: Clocks, policy: str, calendar: str
) -> dict[str, Any]:
    first = history.rows[0].data if history.rows else {}
    return {
        "ticket": ref,
        "policy": policy,
        "calendar": calendar,
        "selection": first.get("selection", ""),
        "facts": first.get("facts", {}),
        "steps": [
            {"at": s.at.isoformat(), "event": s.event, "field": s.field, "how": s.how}
            for s in clocks.steps
        ],
        "deadlines": {
            "state": clocks.state,
            "assign_by": _iso(clocks.assign_by),
            "respond_by": _iso(clocks.respond_by),
            "respond_provisional": clocks.respond_provisional,
            "followup_due": _iso(clocks.followup_due),
            "followups_sent": clocks.followups_sent,
            "close_due": _iso(clocks.close_due),
        },
    }


def _print_explanation(r: dict[str, Any]) -> None:
    print(f"{r['ticket']}: policy {r['policy']} on calendar {r['calendar']}")
    if r["selection"]:
        print(f"  selected: {r['selection']}")
    event = ""
    for step in r["steps"]:
        if step["event"] != event:
            event = step["event"]
            print(f"{step['at']}  {event}")
        print(f"    {step['how']}")
    print("now:")
    for name, value in r["deadlines"].items():
        print(f"  {name}: {value if value is not None else '-'}")
    if r["stored_agrees"]:
        print("stored deadlines agree with the replay")
    else:
        print("STORED DEADLINES DIFFER from the replay (the config changed since?):")
        for name, d in r["differences"].items():
            print(f"  {name}: stored {d['stored']}, replayed {d['replayed']}")
        print("  fix: `buzon sla pass` re-stamps due tickets; report it if it persists")


def run_pass(cfg: Config, args: argparse.Namespace) -> int:
    from daemon.outbound import Outbound
    from daemon.scheduler import Scheduler

    db = Database(cfg.storage.database)
    db.upgrade()
    try:
        report = Scheduler(db, cfg.desk.sla, Outbound(cfg.desk.outbound)).run_once()
    finally:
        db.dispose()
    print(json.dumps(asdict(report)))
    return 0
