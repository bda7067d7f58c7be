"""The ``buzon`` command line: every command's arguments, and what runs each command.

Only argparse here. ``daemon/cli.py`` parses with it and imports the one module the
command needs, so ``buzon logs`` or ``buzon sla due`` do not pay for every command's
imports (the daemon's parts, SQLAlchemy's ORM, Alembic): ~1.4 s before, 0.3-1.0 s now.
"""

from __future__ import annotations

import argparse
from typing import Any

# (command, action) -> "module:function"; each function takes (Config, Namespace) -> exit code.
HANDLERS: dict[tuple[str, str | None], str] = {
    ("ingest", None): "daemon.commands:ingest",
    ("tickets", "list"): "daemon.commands:tickets_list",
    ("tickets", "show"): "daemon.commands:tickets_show",
    ("tickets", "split"): "daemon.desk_commands:tickets_split",
    ("tickets", "merge"): "daemon.desk_commands:tickets_merge",
    ("tickets", "assign"): "daemon.agent_commands:assign",
    ("tickets", "respond"): "daemon.agent_commands:respond",
    ("tickets", "reply"): "daemon.agent_commands:reply",
    ("tickets", "wait"): "daemon.agent_commands:wait",
    ("tickets", "close"): "daemon.agent_commands:close",
    ("outbox", "list"): "daemon.agent_commands:outbox_list",
    ("outbox", "retry"): "daemon.agent_commands:outbox_retry",
    ("contacts", "add"): "daemon.desk_commands:contacts_add",
    ("contacts", "list"): "daemon.desk_commands:contacts_list",
    ("contacts", "remove"): "daemon.desk_commands:contacts_remove",
    ("incidents", "list"): "daemon.desk_commands:incidents_list",
    ("parked", "list"): "daemon.desk_commands:parked_list",
    ("quarantine", "list"): "daemon.commands:quarantine_list",
    ("quarantine", "retry"): "daemon.commands:quarantine_retry",
    ("transcribe", None): "daemon.voice_commands:transcribe",
    ("triage", "explain"): "daemon.triage_commands:explain",
    ("triage", "train"): "daemon.triage_commands:train",
    ("sla", "due"): "daemon.sla_commands:due",
    ("sla", "explain"): "daemon.sla_commands:explain",
    ("sla", "pass"): "daemon.sla_commands:run_pass",
    ("status", None): "daemon.status_command:status",
    ("doctor", None): "daemon.doctor:doctor",
    ("db", "upgrade"): "daemon.backup:db_upgrade",
    ("backup", None): "daemon.backup:backup",
    ("verify", None): "daemon.verify_command:verify",
}
# ``run``, ``check-config`` and ``logs`` are run by daemon/cli.py itself.

BACKUP_HELP = """\
A consistent copy while the daemon runs, in this order: the spool (new/, cur/ and
bad/; tmp/ holds nothing acknowledged), the SQLite database through SQLite's online
backup API (one snapshot; writers are not stopped), the attachments, and
manifest.json (time, schema revision, row and file counts, SHA-256 of buzon.db).
In that order every message acknowledged before the backup began is in it: one
that left the spool while the spool was copied had been committed to the database,
which is copied after. A message in both is recognised as a duplicate on restore.

PostgreSQL: the database is not copied; the command says which pg_dump to run.
With --files-only it copies the spool and attachments: run pg_dump after it.

Restore: stop the daemon (systemctl stop buzon); copy PATH/buzon.db over
[storage] database and delete buzon.db-wal and buzon.db-shm beside it; replace
[storage] spool and [storage] attachments with PATH/spool and PATH/attachments
(owned by the daemon's user); start the daemon. Entries that were in progress are
processed again; those already stored are recognised as duplicates.
"""

LOGS_HELP = """\
Reads Buzón's JSON log (FILE, - for stdin, or by default journalctl -u buzon -o cat)
and prints each line as: HH:MM:SS level component event key=value ...  (local time).

--ticket B-42 keeps the ticket's lines, and later lines of its messages that carry no
ticket (found by message_id, spool_id or message). --message-id, --spool-id and
--level narrow further; filters combine. --json prints the matching lines unchanged.
Lines that are not JSON pass unchanged unless an id filter is given. Control
characters in values are shown escaped (\\x1b), never sent to the terminal.
"""


def parser() -> argparse.ArgumentParser:
    """Every command's arguments."""
    p = argparse.ArgumentParser(prog="buzon", description="Support-desk intake daemon.")
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config (default: $BUZON_CONFIG, else the embedded default under ./buzon-data)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    # Also after the subcommand: `buzon run --config /etc/buzon/buzon.toml` (systemd units).
    run.add_argument("--config", default=argparse.SUPPRESS, help="the config file")
    sub.add_parser("check-config", help="validate the config and print the effective values")

    ing = sub.add_parser(
        "ingest", help="ingest .eml files, mbox files, Maildirs or an IMAP account"
    )
    ing.add_argument("paths", nargs="*", metavar="PATH")
    ing.add_argument("--json", action="store_true", help="print the summary as JSON")
    ing.add_argument(
        "--acknowledge",
        action="store_true",
        help="acknowledge new tickets from files (default: files are history, no mail sent)",
    )
    ing.add_argument("--imap", metavar="NAME", help="fetch this [[imap]] account instead of files")
    ing.add_argument("--once", action="store_true", help="with --imap: fetch once and exit")
    ing.add_argument(
        "--since",
        metavar="DATE",
        help="with --imap: import history from DATE "
        "(YYYY-MM-DD) on, marked as backfill: no acknowledgements",
    )

    tsub = _actions(sub, "tickets", help="list and show tickets")
    _listing(
        tsub,
        "list tickets, newest first",
        status="only tickets with this status (open, closed)",
        limit=100,
    )
    ts = tsub.add_parser("show", help="show one ticket with its messages and events")
    ts.add_argument("ticket", metavar="ID", help="numeric id or reference such as B-42")
    ts.add_argument("--json", action="store_true")
    _desk_parsers(sub, tsub)

    tr = sub.add_parser(
        "transcribe", help="print what the daemon hears in recordings (or voicemail emails)"
    )
    tr.add_argument("files", nargs="*", metavar="FILE")
    tr.add_argument("--json", action="store_true", help="one JSON object per recording, words too")
    tr.add_argument("--model", metavar="DIR", help="a Vosk model directory ([transcription] model)")
    tr.add_argument(
        "--retry-failed",
        action="store_true",
        help="queue every failed transcription again (after fixing the model, say)",
    )

    trsub = _actions(sub, "triage", help="classification: explain a decision, train a model")
    te = trsub.add_parser("explain", help="classify message files and say why; stores nothing")
    te.add_argument("files", nargs="+", metavar="FILE")
    te.add_argument("--json", action="store_true")
    te.add_argument(
        "--minutes-since-previous",
        type=float,
        default=None,
        metavar="M",
        help="as if the sender wrote on an open ticket M minutes before (chase detection)",
    )
    tt = trsub.add_parser(
        "train", help="train the optional model on corrected tickets (needs buzon[learn])"
    )
    tt.add_argument(
        "--from-jsonl",
        nargs="+",
        default=[],
        metavar="FILE",
        help="also train on labelled messages in the tests/data/triage format",
    )
    tt.add_argument("--output", metavar="PATH", help="where to write it (default: [triage] model)")
    tt.add_argument(
        "--min-examples", type=int, default=50, metavar="N", help="refuse with fewer (default 50)"
    )
    tt.add_argument(
        "--min-probability",
        type=float,
        default=0.8,
        metavar="P",
        help="the model overrules the rules only at this probability or above (default 0.8)",
    )
    tt.add_argument("--json", action="store_true", help="print the report as JSON")

    qsub = _actions(sub, "quarantine", help="messages that could not be processed")
    _listing(qsub, "list quarantined messages and spool entries")
    qr = qsub.add_parser("retry", help="process a quarantined item again")
    qr.add_argument("item", metavar="ID", help="an id from 'quarantine list'")
    return p


def _actions(sub: Any, name: str, help: str) -> Any:
    """A command whose first argument is an action (``buzon tickets list``)."""
    command = sub.add_parser(name, help=help)
    return command.add_subparsers(dest="action", required=True, metavar="ACTION")


def _listing(
    actions: Any,
    help: str,
    *,
    limit: int | None = None,
    status: str = "",
) -> argparse.ArgumentParser:
    """A ``list`` action: ``--json``, and ``--status``/``--limit`` where given."""
    listing: argparse.ArgumentParser = actions.add_parser("list", help=help)
    listing.add_argument("--json", action="store_true")
    if status:
        listing.add_argument("--status", help=status)
    if limit is not None:
        listing.add_argument("--limit", type=int, default=limit)
    return listing


def _desk_parsers(sub: Any, tsub: Any) -> None:
    """``tickets split|merge``, ``contacts``, ``incidents``, ``parked``."""
    tsp = tsub.add_parser(
        "split", help="take a message out of a ticket (undoes a duplicate collapse or a merge)"
    )
    tsp.add_argument("ticket", metavar="ID")
    tsp.add_argument(
        "--message", type=int, metavar="PK", help="the message (default: the last one added)"
    )
    tsp.add_argument(
        "--into", metavar="ID", help="move it into this ticket (reopens a merged one) instead"
    )
    tsp.add_argument("--by", metavar="NAME", help="who did it, for the audit trail")
    tm = tsub.add_parser("merge", help="move every message of SOURCE into TARGET")
    tm.add_argument("source", metavar="SOURCE")
    tm.add_argument("target", metavar="TARGET")
    tm.add_argument("--by", metavar="NAME", help="who did it, for the audit trail")

    csub = _actions(sub, "contacts", help="authorised contacts: who may act for a customer")
    ca = csub.add_parser("add", help="authorise addresses or @domains for a customer")
    ca.add_argument("patterns", nargs="+", metavar="ADDRESS|@DOMAIN")
    ca.add_argument("--customer", required=True, metavar="NAME")
    ca.add_argument("--note", default="")
    ca.add_argument("--by", metavar="NAME")
    ca.add_argument("--force", action="store_true", help="allow a free-mail domain")
    cl = csub.add_parser("list", help="list authorised contacts")
    cl.add_argument("--customer", metavar="NAME")
    cl.add_argument("--json", action="store_true")
    cr = csub.add_parser("remove", help="withdraw authorisations")
    cr.add_argument("patterns", nargs="+", metavar="ADDRESS|@DOMAIN")

    isub = _actions(sub, "incidents", help="many customers reporting the same failure")
    _listing(isub, "incidents, newest first, with their tickets", status="open or closed", limit=50)

    psub = _actions(sub, "parked", help="automatic mail kept without a ticket")
    _listing(psub, "parked and dropped messages, newest first", limit=100)
    _sla_parser(sub)
    _agent_parsers(sub, tsub)
    _status_parser(sub)
    _doctor_parser(sub)
    _backup_parsers(sub)
    _logs_parser(sub)
    _verify_parser(sub)


def _agent_parsers(sub: Any, tsub: Any) -> None:
    """Add the ``tickets`` actions and the ``outbox`` command to the ``buzon`` parser."""
    ta = tsub.add_parser("assign", help="give the ticket to an agent (starts the response clock)")
    ta.add_argument("ticket", metavar="ID")
    ta.add_argument("--agent", required=True, metavar="NAME")
    ta.add_argument("--by", metavar="NAME", help="who did it, for the audit trail")
    tr = tsub.add_parser("respond", help="record a response made elsewhere (phone, other tool)")
    tr.add_argument("ticket", metavar="ID")
    tr.add_argument("--agent", metavar="NAME", help="default: your login name")
    tp = tsub.add_parser("reply", help="send a reply through the outbox and record it")
    tp.add_argument("ticket", metavar="ID")
    tp.add_argument("--body-file", required=True, metavar="FILE", help="the reply, UTF-8 text")
    tp.add_argument("--agent", metavar="NAME", help="default: your login name")
    tp.add_argument("--wait", action="store_true", help="then wait on the customer")
    tw = tsub.add_parser("wait", help="waiting on the customer: SLAs pause, follow-ups start")
    tw.add_argument("ticket", metavar="ID")
    tw.add_argument("--by", metavar="NAME")
    tc = tsub.add_parser("close", help="close the ticket (a customer reply reopens it)")
    tc.add_argument("ticket", metavar="ID")
    tc.add_argument("--reason", default="solved", help="default: solved")
    tc.add_argument("--by", metavar="NAME")
    osub = _actions(sub, "outbox", help="mail Buzón owes: list it, retry what failed")
    ol = osub.add_parser("list", help="newest first")
    ol.add_argument("--state", choices=("pending", "sending", "sent", "failed", "cancelled"))
    ol.add_argument("--limit", type=int, default=50)
    ol.add_argument("--json", action="store_true")
    osub.add_parser("retry", help="queue every failed mail again (after fixing the relay)")


def _sla_parser(sub: Any) -> None:
    """The ``sla`` subcommands, added to the ``buzon`` parser."""
    ssub = _actions(sub, "sla", help="SLA deadlines: compute, explain, run a pass")
    sd = ssub.add_parser("due", help="START + DURATION on a calendar, as the daemon computes it")
    sd.add_argument("--start", required=True, metavar="ISO8601", help="e.g. 2026-12-24T16:30+01:00")
    sd.add_argument(
        "--add", required=True, metavar="DURATION", help="30m, 1h, 2d (wall clock); 90bm, 1bh, 4bd"
    )
    sd.add_argument("--calendar", default="24x7", metavar="NAME", help="default: 24x7")
    sd.add_argument("--json", action="store_true")
    se = ssub.add_parser("explain", help="replay a ticket's clocks and say how each was computed")
    se.add_argument("ticket", metavar="ID")
    se.add_argument("--json", action="store_true")
    ssub.add_parser("pass", help="run one scheduler pass now: follow-ups, auto-close, alarms")


def _status_parser(sub: Any) -> None:
    """Add ``status`` to the ``buzon`` parser."""
    st = sub.add_parser(
        "status", help="one screen: listeners, database, spool, queues, SLA, IMAP, last errors"
    )
    st.add_argument("--json", action="store_true")


def _doctor_parser(sub: Any) -> None:
    """Add ``doctor`` to the ``buzon`` parser."""
    dr = sub.add_parser(
        "doctor", help="check config, database, disk, models, relay, IMAP logins; each with a fix"
    )
    dr.add_argument("--json", action="store_true")


def _backup_parsers(sub: Any) -> None:
    """Add ``db upgrade`` and ``backup`` to the ``buzon`` parser."""
    dsub = _actions(sub, "db", help="the database schema")
    dsub.add_parser(
        "upgrade",
        help="migrate to this version's schema (Alembic); idempotent; stop the daemon first",
    )
    bk = sub.add_parser(
        "backup",
        help="a consistent copy of the SQLite database, spool and attachments, online",
        description=BACKUP_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bk.add_argument("path", metavar="PATH", help="a new or empty directory")
    bk.add_argument("--force", action="store_true", help="write into a non-empty PATH")
    bk.add_argument(
        "--files-only", action="store_true", help="only the spool and attachments (PostgreSQL)"
    )
    bk.add_argument("--json", action="store_true", help="print the manifest")


def _logs_parser(sub: Any) -> None:
    """Add ``logs`` to the ``buzon`` parser."""
    lg = sub.add_parser(
        "logs",
        help="pretty-print the log, filtered by ticket, message or spool id",
        description=LOGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lg.add_argument(
        "file", nargs="?", metavar="FILE|-", help="default: journalctl -u buzon, else stdin"
    )
    lg.add_argument("-f", "--follow", action="store_true", help="keep reading as lines come")
    lg.add_argument("--ticket", metavar="REF", help="a ticket reference such as B-42")
    lg.add_argument("--message-id", metavar="ID", help="a Message-ID (angle brackets optional)")
    lg.add_argument("--spool-id", metavar="ID", help="a spool entry (the id in the 250 reply)")
    lg.add_argument("--level", choices=("debug", "info", "warning", "error"), help="and above")
    lg.add_argument("--json", action="store_true", help="print the matching lines as they are")
    lg.add_argument("--unit", default="buzon", help="the systemd unit (default: buzon)")


def _verify_parser(sub: Any) -> None:
    """Add ``verify`` to the ``buzon`` parser."""
    p = sub.add_parser("verify", help="check stored bytes, states, spool, outbox and SLA cache")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--all", action="store_true", help="replay every open ticket's SLA clocks")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="replay the newest N open tickets (default 1000)",
    )
