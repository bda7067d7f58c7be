"""Agent and admin commands on matters: contacts, split/merge, incidents, parked mail.

``contacts``: who may act for a customer (seed 002). ``tickets split`` and
``tickets merge`` undo each other: split takes a message out of a ticket (into
a new ticket, or back into the ticket it was merged from), merge moves every
message of one ticket into another and leaves the first as ``merged``, so
replies to it still find their matter. Every change is a ticket event naming
who did it.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon import sla
from daemon.config import Config
from daemon.errors import UsageError
from daemon.parts import open_parts
from storage import contacts
from storage import repository as repo
from storage.models import Incident, Message, Ticket
from triage.refs import ref_for

# Domains shared by unrelated people: authorising one would let every user of
# that provider into the customer's tickets.
FREE_MAIL = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "hotmail.com",
        "hotmail.es",
        "outlook.com",
        "outlook.es",
        "live.com",
        "msn.com",
        "yahoo.com",
        "yahoo.es",
        "icloud.com",
        "me.com",
        "aol.com",
        "gmx.com",
        "gmx.net",
        "proton.me",
        "protonmail.com",
        "abv.bg",
        "mail.bg",
        "dir.bg",
        "yandex.com",
        "mail.ru",
        "terra.es",
        "telefonica.net",
    }
)


def actor(args: argparse.Namespace) -> str:
    if getattr(args, "by", None):
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in a container
        return "admin"


def _now() -> datetime:
    return datetime.now(UTC)


def _check_pattern(pattern: str, force: bool) -> str:
    p = contacts.normalise(pattern)
    local, at, domain = p.rpartition("@")
    if not at or "." not in domain or " " in p or (local and "@" in local):
        raise UsageError(
            f"{pattern!r}: write an address (ana@cliente.es) or a whole domain (@cliente.es)"
        )
    if not local and domain in FREE_MAIL and not force:
        raise UsageError(
            f"{pattern!r}: {domain} is a free-mail provider; authorising it would let any of its "
            "users act for this customer. Add the addresses one by one, or pass --force"
        )
    return p


def contacts_add(cfg: Config, args: argparse.Namespace) -> int:
    patterns = [_check_pattern(p, args.force) for p in args.patterns]
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        for p in patterns:
            _row, new = contacts.add(
                session, p, args.customer, note=args.note or "", by=actor(args), at=_now()
            )
            print(f"{'added' if new else 'updated'} {p} -> customer {args.customer}")
    return 0


def contacts_remove(cfg: Config, args: argparse.Namespace) -> int:
    missing = []
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        for p in args.patterns:
            row = contacts.remove(session, p)
            if row is None:
                missing.append(p)
            else:
                print(f"removed {row.pattern} (was customer {row.customer})")
    if missing:
        raise UsageError(f"not authorised contacts: {', '.join(missing)}; see 'contacts list'")
    return 0


def contacts_list(cfg: Config, args: argparse.Namespace) -> int:
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        rows = [
            {
                "pattern": r.pattern,
                "customer": r.customer,
                "note": r.note,
                "added_at": r.added_at.isoformat(),
                "added_by": r.added_by,
            }
            for r in contacts.listing(session, args.customer)
        ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    elif not rows:
        print("no authorised contacts; add some with 'buzon contacts add'")
    else:
        print(f"{'CUSTOMER':<24} {'ADDRESS OR DOMAIN':<36} ADDED BY")
        for r in rows:
            print(f"{r['customer']:<24} {r['pattern']:<36} {r['added_by']} {r['note']}")
    return 0


def _ticket(session: Session, key: str) -> Ticket:
    t = repo.ticket(session, key)
    if t is None:
        raise UsageError(f"no ticket {key!r}; see 'buzon tickets list'")
    return t


def _pick_message(t: Ticket, pk: int | None) -> Message:
    if pk is not None:
        for m in t.messages:
            if m.id == pk:
                return m
        raise UsageError(f"message {pk} is not in {t.ref}; 'buzon tickets show {t.ref}' lists them")
    added = [e for e in t.events if e.kind == "message_added" and e.message_pk is not None]
    dups = [e for e in added if (e.data or {}).get("rule") == "duplicate"]
    for event in reversed(dups or added):
        for m in t.messages:
            if m.id == event.message_pk:
                return m
    raise UsageError(f"{t.ref} has only its opening message; there is nothing to split off")


def tickets_split(cfg: Config, args: argparse.Namespace) -> int:
    """Take one message out of a ticket: into a new ticket, or back where it was merged from."""
    now, who = _now(), actor(args)
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        source = _ticket(session, args.ticket)
        msg = _pick_message(source, args.message)
        if len(source.messages) < 2:
            raise UsageError(f"{source.ref} has one message; a ticket cannot be emptied")
        if msg.id == source.messages[0].id and args.into is None:
            raise UsageError(
                f"message {msg.id} opened {source.ref}; split off the others, or merge instead"
            )
        if args.into:
            target = _ticket(session, args.into)
            if target.id == source.id:
                raise UsageError("--into names the same ticket")
            if target.status == "merged":
                target.status, target.merged_into_id = "open", None
        else:
            target = Ticket(
                status="open",
                subject=msg.subject,
                customer=source.customer,
                requester=msg.from_addr or source.requester,
                channel=source.channel,
                message_count=0,
                created_at=msg.received_at,
                updated_at=now,
                category=source.category,
                priority=source.priority,
                severity=source.severity,
                language=source.language,
                flags=[],
                match_text=source.match_text,
            )
            session.add(target)
            session.flush()
            target.ref = ref_for(target.id)
            # The new ticket keeps the source's values above, so it keeps their reasons.
            if triage := repo.triage_of(session, source):
                repo.add_event(session, target, "classified", now, data=triage)
            sla.stamp(session, target, cfg.desk.sla, now, message=msg)
        msg.ticket = target
        source.message_count -= 1
        target.message_count += 1
        source.updated_at = target.updated_at = now
        data = {"message": msg.id, "from": source.ref, "to": target.ref, "by": who}
        repo.add_event(session, source, "split", now, data=data, message=msg)
        repo.add_event(session, target, "split", now, data=data, message=msg)
        print(f"message {msg.id} moved from {source.ref} to {target.ref}")
    return 0


def tickets_merge(cfg: Config, args: argparse.Namespace) -> int:
    """Move every message of SOURCE into TARGET; SOURCE stays as ``merged`` for replies."""
    now, who = _now(), actor(args)
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        source, target = _ticket(session, args.source), _ticket(session, args.target)
        target = repo.follow_merges(session, target)
        if source.id == target.id:
            raise UsageError(f"{source.ref} and {args.target} are the same ticket")
        if source.status == "merged":
            raise UsageError(f"{source.ref} is already merged; split its messages out first")
        moved = list(source.messages)
        for m in moved:
            m.ticket = target
        target.message_count += len(moved)
        source.message_count = 0
        source.status, source.merged_into_id = "merged", target.id
        source.updated_at = target.updated_at = now
        data = {
            "from": source.ref,
            "to": target.ref,
            "messages": [m.id for m in moved],
            "by": who,
            "undo": f"buzon tickets split {target.ref} --message PK --into {source.ref}",
        }
        repo.add_event(session, source, "merged", now, data=data)
        repo.add_event(session, target, "merged", now, data=data)
        print(f"{source.ref} merged into {target.ref} ({len(moved)} message(s))")
    return 0


def _incident_row(i: Incident) -> dict[str, Any]:
    return {
        "ref": i.ref,
        "status": i.status,
        "title": i.title,
        "category": i.category,
        "opened_at": i.opened_at.isoformat(),
        "last_at": i.last_at.isoformat(),
        "tickets": i.ticket_count,
        "customers": i.customer_count,
        "detection": i.detection,
    }


def incidents_list(cfg: Config, args: argparse.Namespace) -> int:
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        query = select(Incident).order_by(Incident.id.desc()).limit(args.limit)
        if args.status:
            query = query.where(Incident.status == args.status)
        rows = []
        for inc in session.scalars(query):
            row = _incident_row(inc)
            row["ticket_refs"] = [t.ref for t in inc.tickets]
            rows.append(row)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no incidents")
        return 0
    print(f"{'REF':<8} {'STATUS':<7} {'TICKETS':>7} {'CUSTOMERS':>9}  {'OPENED':<26} TITLE")
    for r in rows:
        print(
            f"{r['ref']:<8} {r['status']:<7} {r['tickets']:>7} {r['customers']:>9}  "
            f"{r['opened_at']:<26} {r['title'][:70]}"
        )
        print(f"{'':<8} tickets: {' '.join(r['ticket_refs'])}")
    return 0


def parked_list(cfg: Config, args: argparse.Namespace) -> int:
    """Automatic mail kept without a ticket, and our own mail that came back."""
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": m.id,
                "state": m.state,
                "reason": m.state_reason,
                "from": m.from_addr,
                "subject": m.subject,
                "received_at": m.received_at.isoformat(),
                "message_id": m.message_id,
            }
            for m in session.scalars(
                select(Message)
                .where(Message.state.in_(("parked", "dropped")))
                .order_by(Message.id.desc())
                .limit(args.limit)
            )
        ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    elif not rows:
        print("no parked messages")
    else:
        for r in rows:
            print(f"{r['id']:>7} {r['state']:<8} {r['from'] or '<>':<32} {r['reason'][:90]}")
    return 0
