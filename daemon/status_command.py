"""``buzon status``: one screen an admin reads at a glance (listeners, database, spool,
queues, SLA, IMAP, last errors), or the same as JSON.

It may run beside a live daemon: it only reads (the database, the spool's directories,
and short probes of the listeners, each with a ``PROBE_TIMEOUT``), and never creates
the database file or the spool.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from daemon import sla
from daemon.admin_common import clean, describe_error, read_schema
from daemon.config import Config
from daemon.config_desk import SlaConfig
from daemon.spool import Spool
from storage import imapstate, outbox
from storage import repository as repo
from storage import voicemails as vm_repo
from storage.models import Message, OutboxMail, Ticket, Voicemail
from triage import alarms as sla_alarms
from triage import clock_state
from triage.clock_state import iso

PROBE_TIMEOUT = 2.0  # status: a listener that has not greeted in 2 s is not answering
MAX_ERRORS = 5


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * size:
            return f"{s // size} {unit}"
    return f"{s} s"


def _age(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _dial(host: str) -> str:
    # A wildcard listener answers on loopback; connecting to 0.0.0.0 is not portable.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 — mapped away, never bound


# -- probes -------------------------------------------------------------------------------


def smtp_banner(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """(True, greeting) when an SMTP server greets on ``host:port``, else (False, why)."""
    try:
        with socket.create_connection((_dial(host), port), timeout=timeout) as sock:
            with sock.makefile("rb") as reader:
                line = reader.readline(512)
                while line.startswith(b"220-"):  # a multi-line greeting: wait for its end
                    line = reader.readline(512)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        return False, describe_error(exc)
    if not line:
        return False, "the connection closed without a greeting"
    return line.startswith(b"220"), clean(line.decode("utf-8", "replace"), 100)


def http_health(listen: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """(True, answer) when ``GET /healthz`` on ``host:port`` answers 200."""
    host, _, port = listen.rpartition(":")
    conn = http.client.HTTPConnection(_dial(host.strip("[]")), int(port), timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        said = resp.read(300).decode("utf-8", "replace")  # 503 says why: ingest stalled, ...
        return resp.status == 200, f"/healthz {resp.status}: {clean(said, 120)}"
    except (OSError, http.client.HTTPException) as exc:
        return False, describe_error(exc)
    finally:
        conn.close()


def _listeners(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {"smtp": None, "metrics": None}
    if cfg.roles.smtp:  # else this instance does not listen ([roles] smtp = false)
        ok, detail = smtp_banner(cfg.smtp.host, cfg.smtp.port)
        out["smtp"] = {
            "address": cfg.smtp.listen,
            "state": "listening" if ok else "not answering",
            "detail": detail,
        }
    if cfg.metrics.listen:
        ok, detail = http_health(cfg.metrics.listen)
        out["metrics"] = {
            "address": cfg.metrics.listen,
            "state": "listening" if ok else "not answering",
            "detail": detail,
        }
    return out


# -- status -------------------------------------------------------------------------------


def _sla(session: Session, now: datetime, cfg: SlaConfig) -> dict[str, list[dict[str, Any]]]:
    """Open tickets past a deadline (breached) or near one (at risk).

    At risk is what the scheduler decides: its ``sla.at_risk`` alarm for this very
    deadline, recorded, or due by now on the ticket's calendar (from its clock snapshot:
    ``[sla] at_risk`` of the window, in business time for a business-hours clock), so a
    weekend ticket is not at risk before the desk has had its hours. A ticket without a
    snapshot (or whose policy is no longer configured, or whose deadline columns the
    snapshot does not match) falls back to ``at_risk`` of the window in wall-clock time,
    which only warns early.
    """
    rows = session.execute(
        select(
            Ticket.ref,
            Ticket.created_at,
            Ticket.assigned_at,
            Ticket.assign_by,
            Ticket.respond_by,
            Ticket.alarms_sent,
            Ticket.sla_policy,
            Ticket.clocks,
        ).where(
            Ticket.status == "open",
            or_(Ticket.assign_by.is_not(None), Ticket.respond_by.is_not(None)),
        )
    )
    breached: list[dict[str, Any]] = []
    risky: list[dict[str, Any]] = []
    for ref, created, assigned, assign_by, respond_by, alarms, policy, snapshot in rows:
        moments: dict[str, datetime] | None = None  # read once, and only if needed
        for clock, due, start in (
            ("assign", assign_by, created),
            ("respond", respond_by, assigned or created),
        ):
            if due is None:
                continue
            item = {"ticket": ref, "clock": clock, "due": iso(due)}
            key = f"{clock}:at_risk:{due.astimezone(UTC).isoformat()}"
            if due <= now:
                breached.append(item)
                continue
            if key not in (alarms or []):
                if moments is None:
                    moments = _risk_moments(cfg, policy, snapshot)
                # A key the snapshot does not know: the columns were written apart from it.
                if now < moments.get(key, start + (due - start) * cfg.at_risk):
                    continue
            risky.append(item)
    return {
        "breached": sorted(breached, key=lambda i: i["due"]),
        "at_risk": sorted(risky, key=lambda i: i["due"]),
    }


def _risk_moments(cfg: SlaConfig, policy: str, snapshot: Any) -> dict[str, datetime]:
    """The scheduler's at-risk moments of a ticket by alarm key; empty when unknown."""
    if not snapshot:
        return {}
    try:
        clocks = clock_state.decode(snapshot)
        _, calendar = sla.policy_and_calendar(cfg, policy)
    except (clock_state.SnapshotError, sla.SlaError):
        return {}
    at_risk = sla_alarms.alarms(clocks, calendar, cfg.at_risk)
    return {a.key: a.at for a in at_risk if a.kind == "at_risk"}


def _last_errors(session: Session, spool: Spool | None) -> list[dict[str, Any]]:
    """The newest stored failure reasons: outbox, transcription, quarantine (spool and db).

    The outbox and voicemail rows keep no failure time; their due time (the last attempt
    was made when it fell due) stands in for it.
    """
    found: list[dict[str, Any]] = []
    for m in session.scalars(
        select(OutboxMail)
        .where(OutboxMail.state.in_((outbox.FAILED, outbox.PENDING)), OutboxMail.last_error != "")
        .order_by(OutboxMail.due_at.desc())
        .limit(MAX_ERRORS)
    ):
        what = f"outbox #{m.id} {m.kind} to {m.recipient} ({m.state}, {m.attempts} attempts)"
        found.append({"at": m.due_at, "where": what, "error": m.last_error})
    for v in session.scalars(
        select(Voicemail)
        .where(Voicemail.state.in_(("failed", "pending")), Voicemail.last_error != "")
        .order_by(Voicemail.due_at.desc())
        .limit(MAX_ERRORS)
    ):
        what = f"transcription of voicemail {v.id} ({v.state}, {v.attempts} attempts)"
        found.append({"at": v.due_at, "where": what, "error": v.last_error})
    for msg in session.scalars(
        select(Message)
        .where(Message.state == "quarantined")
        .order_by(Message.stored_at.desc())
        .limit(MAX_ERRORS)
    ):
        found.append(
            {
                "at": msg.stored_at,
                "where": f"quarantined message {msg.id}",
                "error": msg.state_reason,
            }
        )
    for entry in spool.quarantined() if spool is not None else ():
        at = datetime.fromtimestamp(float(entry.meta.get("quarantined_at", 0)), UTC)
        reason = str(entry.meta.get("quarantine_reason", ""))
        found.append({"at": at, "where": f"spool/bad {entry.id}", "error": reason})
    found.sort(key=lambda e: e["at"], reverse=True)
    return [
        {"at": iso(e["at"]), "where": e["where"], "error": clean(e["error"], 300)}
        for e in found[:MAX_ERRORS]
    ]


def _desk(session: Session, cfg: Config, spool: Spool | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    counts = repo.counts(session)
    oldest_vm = session.scalar(
        select(func.min(Message.received_at))
        .join(Voicemail, Voicemail.message_pk == Message.id)
        .where(Voicemail.state.in_(("pending", "running")))
    )
    oldest_out = session.scalar(
        select(func.min(OutboxMail.created_at)).where(
            OutboxMail.state.in_((outbox.PENDING, outbox.SENDING))
        )
    )
    waiting = session.scalar(
        select(func.count())
        .select_from(Ticket)
        .where(Ticket.status == "open", Ticket.waiting_since.is_not(None))
    )
    folders = {(f.account, f.folder): f for f in imapstate.folders(session)}
    configured = [(a.name, f) for a in cfg.imap for f in a.folders]
    return {
        "database": counts,
        "voicemails": vm_repo.states(session),
        "outbox": outbox.states(session),
        "oldest": {"transcription": _age(oldest_vm, now), "outbox": _age(oldest_out, now)},
        "tickets": {
            "open": counts.get("tickets.open", 0),
            "waiting": int(waiting or 0),
            **_sla(session, now, cfg.desk.sla),
        },
        "imap": [
            _folder(folders.get(key), key, configured=key in configured)
            for key in sorted(set(folders) | set(configured))
        ],
        "last_errors": _last_errors(session, spool),
    }


def _folder(f: Any, key: tuple[str, str], *, configured: bool) -> dict[str, Any]:
    if f is None:
        return {"account": key[0], "folder": key[1], "state": "not fetched yet", "configured": True}
    return {
        "account": f.account,
        "folder": f.folder,
        "configured": configured,
        "state": f.state,
        "last_uid": f.last_uid,
        "uidvalidity": f.uidvalidity,
        "last_fetch_at": iso(f.last_fetch_at),
        "last_fetched": f.last_fetched,
        "lag_seconds": f.lag_seconds,
        "holder": f.holder,
        "lease_until": iso(f.lease_until),
        "last_error": f.last_error,
        "skipped_oversize": f.skipped or [],
    }


def status_data(cfg: Config) -> dict[str, Any]:
    """Everything ``buzon status`` shows, as plain data (its ``--json``)."""
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(_listeners, cfg)  # the listener greets while we read
        root = Path(cfg.storage.spool)
        spool = Spool(root) if root.is_dir() else None  # status never creates the spool
        depth = spool.depth() if spool else {"new": 0, "cur": 0, "bad": 0, "bundles": 0}
        oldest = spool.oldest_age() if spool else None
        schema, db = read_schema(cfg)
        desk: dict[str, Any] = {}
        if db is not None:
            try:
                if schema["state"] == "current":
                    with db.transaction() as session:
                        desk = _desk(session, cfg, spool)
            finally:
                db.dispose()
        listeners = probe.result()
    vms = desk.get("voicemails", {})
    out = desk.get("outbox", {})
    return {
        "config": cfg.source,
        "roles": {f.name: getattr(cfg.roles, f.name) for f in fields(cfg.roles)},
        "listeners": listeners,
        "schema": schema,
        "spool": {**depth, "oldest_pending_seconds": oldest},
        "queues": {
            "transcription": {k: vms.get(k, 0) for k in ("pending", "running", "failed")},
            "outbox": {k: out.get(k, 0) for k in ("pending", "sending", "failed")},
            "quarantined_messages": desk.get("database", {}).get("messages.quarantined", 0),
            "oldest_pending_seconds": {"spool": oldest, **desk.get("oldest", {})},
        },
        "tickets": desk.get("tickets"),
        "imap": desk.get("imap", []),
        "last_errors": desk.get("last_errors", []),
        "database": desk.get("database", {}),
        "transcription": {
            "enabled": bool(cfg.transcription.model or cfg.transcription.models),
            "model": cfg.transcription.model,
            "voicemails": vms,
        },
    }


def status(cfg: Config, args: argparse.Namespace) -> int:
    """One screen an admin reads at a glance; exit 1 when the database cannot be read."""
    data = status_data(cfg)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        for label, text in _status_lines(data):
            print(f"{label:<12} {text}")
    return 1 if data["schema"]["state"] == "unreachable" else 0


SCHEMA_HINTS = {
    "current": "current",
    "missing": "not created yet: `buzon db upgrade` (or `buzon run`) creates it",
    "empty": "no schema yet: run `buzon db upgrade`",
    "behind": "behind: run `buzon db upgrade` (the daemon also migrates at start)",
    "newer": "newer than this Buzón: run the version that wrote it",
}


def _status_lines(d: dict[str, Any]) -> list[tuple[str, str]]:
    sch, sp, q = d["schema"], d["spool"], d["queues"]
    tr, ob, old = q["transcription"], q["outbox"], q["oldest_pending_seconds"]
    hint = SCHEMA_HINTS.get(sch["state"], f"unreachable: {sch['error']}")
    errors = d["last_errors"]
    return [
        ("config", d["config"]),
        ("roles", _roles_line(d["roles"])),
        *[(name, _listener_line(d["listeners"][name])) for name in ("smtp", "metrics")],
        (
            "database",
            f"{sch['backend']} {sch['database']}, schema {sch['revision'] or '-'} "
            f"(head {sch['head']}): {hint}",
        ),
        (
            "spool",
            f"{sp['new']} waiting, {sp['cur']} in progress, {sp['bad']} quarantined; "
            f"oldest waiting {_ago(sp['oldest_pending_seconds'])}",
        ),
        (
            "queues",
            f"transcription {_transcription_note(d)}"
            f"{tr['pending']} pending, {tr['running']} running, "
            f"{tr['failed']} failed; outbox {ob['pending'] + ob['sending']} pending, "
            f"{ob['failed']} failed; {q['quarantined_messages']} quarantined messages",
        ),
        ("oldest", ", ".join(f"{k} {_ago(v)}" for k, v in old.items())),
        ("tickets", _tickets_line(d["tickets"])),
        *[("imap", _imap_line(f)) for f in d["imap"]],
        ("errors", f"newest {len(errors)}:" if errors else "none stored"),
        *[("", f"{e['at'][:19]}Z  {e['where']}: {e['error']}") for e in errors],
    ]


def _roles_line(roles: dict[str, bool]) -> str:
    off = [name for name, on in roles.items() if not on]
    on = ", ".join(name for name, on in roles.items() if on)
    return f"{on}; not here: {', '.join(off)}" if off else f"{on} (all)"


def _transcription_note(d: dict[str, Any]) -> str:
    if not d["roles"]["transcription"]:
        return "by another instance ([roles]), "
    return "" if d["transcription"]["enabled"] else "off (no model), "


def _listener_line(li: dict[str, Any] | None) -> str:
    return f"{li['address']} {li['state']} ({li['detail']})" if li else "off"


def _tickets_line(t: dict[str, Any] | None) -> str:
    if t is None:
        return "- (database not readable)"

    def refs(items: list[dict[str, Any]]) -> str:
        shown = ", ".join(f"{i['ticket']} {i['clock']} due {i['due'][:16]}" for i in items[:3])
        more = f", +{len(items) - 3} more" if len(items) > 3 else ""
        return f" ({shown}{more})" if items else ""

    return (
        f"{t['open']} open ({t['waiting']} waiting on the customer); SLA: "
        f"{len(t['breached'])} breached{refs(t['breached'])}, "
        f"{len(t['at_risk'])} at risk{refs(t['at_risk'])}"
    )


def _imap_line(f: dict[str, Any]) -> str:
    where = f"{f['account']}/{f['folder']}: {f['state']}"
    if "last_uid" not in f:
        return where
    lag = f"lag {_ago(f['lag_seconds'])}" if f["lag_seconds"] is not None else "no fetch yet"
    text = f"{where}, last fetch {f['last_fetch_at'] or '-'}, {lag}, last UID {f['last_uid']}"
    if f["last_error"]:
        text += f", error: {clean(str(f['last_error']), 80)}"
    if f["skipped_oversize"]:
        text += f", {len(f['skipped_oversize'])} skipped as too large (see --json)"
    if not f["configured"]:
        text += " (no longer configured)"
    return text
