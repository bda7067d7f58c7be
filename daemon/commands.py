"""The one-shot CLI commands: ingest, tickets, quarantine. Each returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from imapclient.exceptions import LoginError
from sqlalchemy.orm import Session
from tqdm import tqdm

from daemon import sources
from daemon.config import Config
from daemon.errors import UsageError
from daemon.imap import FolderWorker, instance_id
from daemon.ingest import Outcome
from daemon.parts import Parts, open_parts
from daemon.voice_commands import voicemail_detail
from storage import repository as repo
from storage import voicemails as vm_repo
from storage.models import Message, Ticket
from triage.clock_state import iso

BATCH = 64


def ingest(cfg: Config, args: argparse.Namespace) -> int:
    """Spool each message durably, then run it through the same pipeline as SMTP mail."""
    if args.imap:
        return ingest_imap(cfg, args)
    if not args.paths:
        raise UsageError("ingest needs PATH… or --imap NAME")
    summary: Counter[str] = Counter()
    try:
        items = sources.expand(args.paths)
        total = sources.count(args.paths)
    except sources.SourceError as exc:
        raise UsageError(str(exc)) from exc
    with open_parts(cfg, recover=False) as parts:
        bar = tqdm(total=total, unit="msg", file=sys.stderr, disable=not sys.stderr.isatty())
        batch: list[sources.RawItem] = []
        try:
            for item in items:
                batch.append(item)
                if len(batch) >= BATCH:
                    _ingest_batch(parts, batch, summary, bar, args.acknowledge)
                    batch = []
            _ingest_batch(parts, batch, summary, bar, args.acknowledge)
        except sources.SourceError as exc:
            raise UsageError(str(exc)) from exc
        finally:
            bar.close()
    return _report(summary, args.json)


def _report(summary: Counter[str], as_json: bool) -> int:
    report = {
        "ingested": summary["stored"],
        # Automatic mail: attached to its ticket, parked without one, or our own mail dropped.
        "automatic": summary["attached"] + summary["parked"] + summary["dropped"],
        "duplicate": summary["duplicate"] + summary["already_stored"],
        "quarantined": summary["quarantined"] + summary["bad"],
        "handed_to_daemon": summary["handed_to_daemon"],
        "failed": summary["failed"],
    }
    if as_json:
        print(json.dumps(report))
    else:
        print(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.items()))
    return 0 if report["failed"] == 0 else 1


def ingest_imap(cfg: Config, args: argparse.Namespace) -> int:
    """Fetch one [[imap]] account once, through the spool, and process what came."""
    account = next((a for a in cfg.imap if a.name == args.imap), None)
    if account is None:
        names = ", ".join(a.name for a in cfg.imap) or "none configured"
        raise UsageError(f"no [[imap]] account named {args.imap!r} (accounts: {names})")
    if not args.once:
        raise UsageError("--imap fetches continuously only inside `buzon run`; add --once")
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since).replace(tzinfo=UTC)
        except ValueError as exc:
            raise UsageError(f"--since {args.since!r}: use a date like 2026-01-31") from exc
    summary: Counter[str] = Counter()
    spooled: list[str] = []
    with open_parts(cfg, recover=False) as parts:
        bar = tqdm(unit="msg", file=sys.stderr, disable=not sys.stderr.isatty())
        holder = instance_id()
        for folder in account.folders:
            worker = FolderWorker(
                account,
                folder,
                spool=parts.spool,
                db=parts.db,
                holder=holder,
                max_size=cfg.smtp.max_message_size,
                stop=threading.Event(),
                backfill=since is not None,
                on_spooled=spooled.extend,
            )
            if not worker.acquire():
                print(
                    f"buzon: {account.name}/{folder} is being fetched by a running daemon; skipped",
                    file=sys.stderr,
                )
                continue
            try:
                with worker.connect() as client:
                    worker.session(client, idle=False, since=since, on_batch=bar.update)
            except LoginError as exc:
                raise UsageError(f"{account.name}: login failed: {exc}") from exc
            finally:
                worker.release()
        bar.close()
        parts.spool.split_bundles()  # the worker spools a batch as one bundle
        for entry_id in spooled:
            summary[_process_until_settled(parts, entry_id).outcome] += 1
    return _report(summary, args.json)


def _ingest_batch(
    parts: Any, batch: list[sources.RawItem], summary: Counter[str], bar: Any, ack: bool = False
) -> None:
    if not batch:
        return
    now = datetime.now().astimezone().isoformat()
    metas = [
        # Files are usually history (an mbox export): acknowledged only when asked.
        {
            "source": "file",
            "received_at": now,
            "envelope": {"origin": item.origin, "backfill": not ack},
        }
        for item in batch
    ]
    results = parts.spool.put_many(
        [(item.raw, meta) for item, meta in zip(batch, metas, strict=True)]
    )
    for item, result in zip(batch, results, strict=True):
        if isinstance(result, BaseException):
            print(f"buzon: {item.origin}: not spooled: {result}", file=sys.stderr)
            summary["failed"] += 1
        else:
            summary[_process_until_settled(parts, result.id).outcome] += 1
        bar.update(1)


def _process_until_settled(parts: Parts, entry_id: str) -> Outcome:
    """Process one entry; a transient failure is retried a few times before giving up."""
    outcome = Outcome(entry_id, "handed_to_daemon")
    for attempt in range(5):
        entry = parts.spool.claim(entry_id)
        if entry is None:
            return outcome  # a running daemon claimed it; it will be processed there
        outcome = parts.processor.process(entry)
        if outcome.outcome != "retry":
            return outcome
        time.sleep(0.2 * (attempt + 1))
    return Outcome(entry_id, "failed", reason=outcome.reason)


def ticket_summary(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "ref": t.ref,
        "status": t.status,
        "subject": t.subject,
        "customer": t.customer,
        "requester": t.requester,
        "channel": t.channel,
        "message_count": t.message_count,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "assign_by": iso(t.assign_by),
        "respond_by": iso(t.respond_by),
        "category": t.category,
        "priority": t.priority,
        "severity": t.severity,
        "language": t.language,
        "flags": t.flags,
        "incident": t.incident.ref if t.incident_id is not None and t.incident else None,
        "merged_into": t.merged_into_id,
    }


def _message_detail(m: Message, session: Session) -> dict[str, Any]:
    return {
        "voicemail": voicemail_detail(vm_repo.for_message(session, m.id)),
        "id": m.id,
        "message_id": m.message_id,
        "state": m.state,
        "state_reason": m.state_reason,
        "source": m.source,
        "from": m.from_addr,
        "from_name": m.from_name,
        "from_verified": m.from_verified,
        "to": m.to_addrs,
        "subject": m.subject,
        "date": iso(m.date),
        "received_at": iso(m.received_at),
        "size": m.size,
        "raw_sha256": m.raw_sha256,
        "defects": m.defects,
        "automatic": m.auto,
        "no_ack_reason": m.no_ack_reason,
        "text": m.text,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in m.attachments
        ],
        "deliveries": [
            {
                "source": d.source,
                "received_at": iso(d.received_at),
                "duplicate": d.duplicate,
                "spool_id": d.spool_id,
            }
            for d in m.deliveries
        ],
    }


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def tickets_list(cfg: Config, args: argparse.Namespace) -> int:
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        rows = [
            ticket_summary(t)
            for t in repo.list_tickets(session, status=args.status, limit=args.limit)
        ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no tickets")
        return 0
    print(
        f"{'REF':<10} {'STATUS':<8} {'MSGS':>4}  {'PRIO':<6} {'CATEGORY':<17} "
        f"{'RESPOND BY':<25} {'CUSTOMER':<28} SUBJECT"
    )
    for r in rows:
        print(
            f"{r['ref']:<10} {r['status']:<8} {r['message_count']:>4}  "
            f"{r['priority'] or '-':<6} {r['category'] or '-':<17} "
            f"{r['respond_by'] or '-':<25} {_one_line(r['customer'], 28):<28} "
            f"{_one_line(r['subject'], 60)}"
        )
    return 0


def tickets_show(cfg: Config, args: argparse.Namespace) -> int:
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        t = repo.ticket(session, args.ticket)
        if t is None:
            raise UsageError(f"no ticket {args.ticket!r}; see 'buzon tickets list'")
        data = ticket_summary(t)
        data["messages"] = [_message_detail(m, session) for m in t.messages]
        data["triage"] = repo.triage_of(session, t)
        data["events"] = [
            {"at": iso(e.at), "kind": e.kind, "message": e.message_pk, "data": e.data}
            for e in t.events
        ]
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(f"{data['ref']}  [{data['status']}]  {_one_line(data['subject'], 100)}")
    print(f"customer: {data['customer']}   channel: {data['channel']}")
    print(f"created:  {data['created_at']}")
    print(f"assign by: {data['assign_by']}   respond by: {data['respond_by']}")
    if data["category"]:
        flags = f"   flags: {', '.join(data['flags'])}" if data["flags"] else ""
        print(
            f"triage:   {data['category']} / priority {data['priority']} / severity "
            f"{data['severity']} / {data['language']}{flags}"
        )
        for name, d in (data["triage"].get("decisions") or {}).items():
            print(f"  {name:<26} [{d['confidence']:.2f}] {d['explanation']}")
    for m in data["messages"]:
        print(
            f"\n--- message {m['id']} from {m['from'] or '?'} at {m['received_at']} ({m['source']})"
        )
        print(f"subject: {_one_line(m['subject'], 100)}")
        for a in m["attachments"]:
            print(f"attachment: {a['filename']} ({a['content_type']}, {a['size']} bytes)")
        if m["voicemail"] is not None:
            _print_voicemail(m["voicemail"])
        print(m["text"][:2000].translate({c: " " for c in range(32) if c not in (9, 10)}))
    print("\nevents:")
    for e in data["events"]:
        print(f"  {e['at']}  {e['kind']:<14} {json.dumps(e['data'], ensure_ascii=False)}")
    return 0


def _print_voicemail(vm: dict[str, Any]) -> None:
    secs = vm["duration_seconds"]
    length = f"{secs // 60}:{secs % 60:02d}" if secs is not None else "?"
    caller = " ".join(x for x in (vm["caller_name"], vm["caller_number"]) if x) or "unknown"
    print(
        f"voicemail: from {caller}, {length}, mailbox {vm['mailbox'] or '-'}"
        + (", URGENT" if vm["urgent"] else "")
    )
    if vm["transcription"] == "done":
        conf = f"confidence {vm['confidence']:.2f}"
        flag = ", needs listening" if vm["needs_listening"] else ""
        print(f"transcript ({vm['model']}, {conf}{flag}): {vm['text'] or '(no words)'}")
    elif vm["transcription"] == "failed":
        print(f"transcription failed after {vm['attempts']} attempt(s): {vm['last_error']}")
    else:
        print(f"transcription {vm['transcription']}")
    if vm["pbx_transcript"]:
        print(f"PBX transcript: {vm['pbx_transcript']}")


def quarantine_list(cfg: Config, args: argparse.Namespace) -> int:
    with open_parts(cfg, recover=False) as parts:
        with parts.db.transaction() as session:
            rows = [
                {
                    "id": str(m.id),
                    "where": "database",
                    "received_at": iso(m.received_at),
                    "source": m.source,
                    "size": m.size,
                    "reason": m.state_reason,
                }
                for m in repo.quarantined_messages(session)
            ]
        for entry in parts.spool.quarantined():
            rows.append(
                {
                    "id": entry.id,
                    "where": "spool",
                    "received_at": entry.meta.get("received_at"),
                    "source": entry.meta.get("source"),
                    "size": entry.meta.get("size"),
                    "reason": entry.meta.get("quarantine_reason", ""),
                }
            )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    elif not rows:
        print("nothing quarantined")
    else:
        for r in rows:
            print(
                f"{r['id']:<40} {r['where']:<8} {r['source']!s:<10} "
                f"{_one_line(str(r['reason']), 80)}"
            )
    return 0


def quarantine_retry(cfg: Config, args: argparse.Namespace) -> int:
    with open_parts(cfg, recover=False) as parts:
        item = args.item.strip()
        if item.isdigit():
            try:
                outcome = parts.processor.retry_message(int(item))
            except LookupError as exc:
                raise UsageError(f"{exc}; see 'buzon quarantine list'") from exc
        else:
            if not parts.spool.retry(item):
                raise UsageError(f"no quarantined item {item!r}; see 'buzon quarantine list'")
            outcome = _process_until_settled(parts, item)
    print(
        json.dumps(
            {
                "id": item,
                "outcome": outcome.outcome,
                "ticket": outcome.ticket_ref,
                "reason": outcome.reason,
            }
        )
    )
    return 0 if outcome.outcome in ("stored", "duplicate", "already_stored") else 1
