"""Agent commands on a ticket's clocks, and the outbox: assign, respond, reply, wait, close.

Each is one transaction that records a clock event (``daemon.sla``) and, for
``reply``, the outbox row of the mail: the ticket's deadlines and its mail
never disagree. ``outbox list|retry`` shows and re-queues what the relay refused.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from daemon import sla
from daemon.config import Config
from daemon.desk_commands import actor
from daemon.errors import UsageError
from daemon.outbound import Outbound
from storage import outbox
from storage import repository as repo
from storage.engine import Database
from storage.models import OutboxMail, Ticket
from triage.clocks import Clocks


def _db(cfg: Config) -> Database:
    db = Database(cfg.storage.database)
    db.upgrade()
    return db


def _ticket(session: Any, key: str) -> Ticket:
    # Not ``repo.ticket``: an action on a long ticket must not load every mail's raw bytes.
    t = repo.ticket_alone(session, key)
    if t is None:
        raise UsageError(f"no ticket {key!r}; see 'buzon tickets list'")
    if t.status == "merged":
        raise UsageError(f"{t.ref} was merged; act on the ticket it was merged into")
    return t


def _say(t: Ticket, clocks: Clocks, what: str) -> None:
    due = [
        f"{name} {value.isoformat()}"
        for name, value in (
            ("assign_by", t.assign_by),
            ("respond_by", t.respond_by),
            ("followup_due", t.followup_due_at),
            ("close_due", t.close_due_at),
        )
        if value is not None
    ]
    print(f"{t.ref}: {what}; {t.status}" + (f"; {', '.join(due)}" if due else "; no clock runs"))


def _act(cfg: Config, key: str, action: Any) -> int:
    db = _db(cfg)
    try:
        with db.transaction() as session:
            t = _ticket(session, key)
            if not t.sla_policy:
                raise UsageError(f"{t.ref} has no SLA stamp yet (still being ingested?)")
            clocks, what = action(session, t, datetime.now(UTC))
            _say(t, clocks, what)
    finally:
        db.dispose()
    return 0


def assign(cfg: Config, args: argparse.Namespace) -> int:
    def go(s: Any, t: Ticket, now: datetime) -> tuple[Clocks, str]:
        if t.status == "closed":
            raise UsageError(f"{t.ref} is closed; a customer reply reopens it")
        return sla.assign(s, t, cfg.desk.sla, now, agent=args.agent, by=actor(args)), (
            f"assigned to {args.agent}"
        )

    return _act(cfg, args.ticket, go)


def respond(cfg: Config, args: argparse.Namespace) -> int:
    agent = args.agent or actor(args)

    def go(s: Any, t: Ticket, now: datetime) -> tuple[Clocks, str]:
        return sla.respond(s, t, cfg.desk.sla, now, agent=agent, via="recorded"), (
            f"response by {agent} recorded"
        )

    return _act(cfg, args.ticket, go)


def reply(cfg: Config, args: argparse.Namespace) -> int:
    agent = args.agent or actor(args)
    path = Path(args.body_file)
    try:
        body = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--body-file {path}: {exc}; write the reply as UTF-8 text") from None
    if not body.strip():
        raise UsageError(f"--body-file {path} is empty; write the reply first")
    outbound = Outbound(cfg.desk.outbound)

    def go(s: Any, t: Ticket, now: datetime) -> tuple[Clocks, str]:
        if "@" not in t.requester:
            raise UsageError(f"{t.ref}'s requester {t.requester!r} has no mail address")
        mail = outbound.write(s, t, "reply", now, values={"body": body, "agent": agent})
        clocks = sla.respond(s, t, cfg.desk.sla, now, agent=agent, via="reply")
        if args.wait:
            clocks = sla.wait(s, t, cfg.desk.sla, now, by=agent)
        repo.add_event(s, t, "reply_queued", now, data={"outbox": mail.id, "by": agent})
        return clocks, f"reply queued to {mail.recipient} (outbox {mail.id})"

    return _act(cfg, args.ticket, go)


def wait(cfg: Config, args: argparse.Namespace) -> int:
    def go(s: Any, t: Ticket, now: datetime) -> tuple[Clocks, str]:
        if t.status == "closed":
            raise UsageError(f"{t.ref} is closed")
        return sla.wait(s, t, cfg.desk.sla, now, by=actor(args)), "waiting on the customer"

    return _act(cfg, args.ticket, go)


def close(cfg: Config, args: argparse.Namespace) -> int:
    def go(s: Any, t: Ticket, now: datetime) -> tuple[Clocks, str]:
        if t.status == "closed":
            raise UsageError(f"{t.ref} is already closed")
        return sla.close(s, t, cfg.desk.sla, now, reason=args.reason, by=actor(args)), "closed"

    return _act(cfg, args.ticket, go)


def outbox_list(cfg: Config, args: argparse.Namespace) -> int:
    db = _db(cfg)
    try:
        with db.transaction() as s:
            query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(args.limit)
            if args.state:
                query = query.where(OutboxMail.state == args.state)
            rows = list(s.scalars(query))
            for m in rows:
                line = {
                    "id": m.id,
                    "kind": m.kind,
                    "state": m.state,
                    "to": m.recipient,
                    "attempts": m.attempts,
                    "due_at": m.due_at.isoformat(),
                    "last_error": m.last_error,
                }
                print(json.dumps(line, ensure_ascii=False) if args.json else _row(line))
            print(f"# {json.dumps(outbox.states(s))}")
    finally:
        db.dispose()
    return 0


def _row(line: dict[str, Any]) -> str:
    err = f"  {line['last_error']}" if line["last_error"] else ""
    return f"{line['id']:>6} {line['kind']:<11} {line['state']:<9} {line['to']}{err}"


def outbox_retry(cfg: Config, args: argparse.Namespace) -> int:
    db = _db(cfg)
    try:
        with db.transaction() as s:
            n = outbox.retry_failed(s, datetime.now(UTC))
    finally:
        db.dispose()
    print(f"{n} failed mail(s) queued again")
    return 0
