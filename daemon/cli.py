"""The ``buzon`` command: run the daemon, check the config, ingest files, inspect tickets.

Exit codes: 0 success, 2 bad usage or configuration, 1 any other failure.
Machine output (``--json``) goes to stdout; logs of the one-shot commands go
to stderr so they never mix with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from daemon import (
    agent_commands,
    backup,
    doctor,
    logs_command,
    sla_commands,
    status_command,
    verify_command,
)
from daemon import config as config_mod
from daemon import logging as logmod
from daemon.errors import ConfigError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
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

    tickets = sub.add_parser("tickets", help="list and show tickets")
    tsub = tickets.add_subparsers(dest="action", required=True, metavar="ACTION")
    tl = tsub.add_parser("list", help="list tickets, newest first")
    tl.add_argument("--json", action="store_true")
    tl.add_argument("--status", help="only tickets with this status (open, closed)")
    tl.add_argument("--limit", type=int, default=100)
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

    triage = sub.add_parser("triage", help="classification: explain a decision, train a model")
    trsub = triage.add_subparsers(dest="action", required=True, metavar="ACTION")
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

    quarantine = sub.add_parser("quarantine", help="messages that could not be processed")
    qsub = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    ql = qsub.add_parser("list", help="list quarantined messages and spool entries")
    ql.add_argument("--json", action="store_true")
    qr = qsub.add_parser("retry", help="process a quarantined item again")
    qr.add_argument("item", metavar="ID", help="an id from 'quarantine list'")
    return p


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

    contacts = sub.add_parser("contacts", help="authorised contacts: who may act for a customer")
    csub = contacts.add_subparsers(dest="action", required=True, metavar="ACTION")
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

    incidents = sub.add_parser("incidents", help="many customers reporting the same failure")
    isub = incidents.add_subparsers(dest="action", required=True, metavar="ACTION")
    il = isub.add_parser("list", help="incidents, newest first, with their tickets")
    il.add_argument("--json", action="store_true")
    il.add_argument("--status", help="open or closed")
    il.add_argument("--limit", type=int, default=50)

    parked = sub.add_parser("parked", help="automatic mail kept without a ticket")
    psub = parked.add_subparsers(dest="action", required=True, metavar="ACTION")
    pl = psub.add_parser("list", help="parked and dropped messages, newest first")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--limit", type=int, default=100)
    sla_commands.register(sub)
    agent_commands.register(sub, tsub)
    status_command.register(sub)
    doctor.register(sub)
    backup.register(sub)
    logs_command.register(sub)
    verify_command.register(sub)


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 — one exit per kind of command
    args = _parser().parse_args(argv)
    if args.command == "logs":  # needs no config: a journal reader may not read the data
        return logs_command.main(args)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"buzon: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run_daemon(cfg)
    logmod.configure("warning", cfg.log.format, stream=sys.stderr)
    if args.command == "check-config":
        print(f"# configuration OK: {cfg.source}")
        print(json.dumps(cfg.redacted(), indent=2))
        return EXIT_OK
    from daemon import commands, desk_commands, triage_commands, voice_commands

    handlers: dict[tuple[str, str | None], Any] = {
        ("ingest", None): commands.ingest,
        ("tickets", "list"): commands.tickets_list,
        ("tickets", "show"): commands.tickets_show,
        ("tickets", "split"): desk_commands.tickets_split,
        ("tickets", "merge"): desk_commands.tickets_merge,
        ("contacts", "add"): desk_commands.contacts_add,
        ("contacts", "list"): desk_commands.contacts_list,
        ("contacts", "remove"): desk_commands.contacts_remove,
        ("incidents", "list"): desk_commands.incidents_list,
        ("parked", "list"): desk_commands.parked_list,
        ("quarantine", "list"): commands.quarantine_list,
        ("quarantine", "retry"): commands.quarantine_retry,
        ("transcribe", None): voice_commands.transcribe,
        ("triage", "explain"): triage_commands.explain,
        ("triage", "train"): triage_commands.train,
        ("sla", "due"): sla_commands.due,
        ("sla", "explain"): sla_commands.explain,
        ("sla", "pass"): sla_commands.run_pass,
        **agent_commands.HANDLERS,
        **status_command.HANDLERS,
        **doctor.HANDLERS,
        **backup.HANDLERS,
        **verify_command.HANDLERS,
    }
    handler = handlers[(args.command, getattr(args, "action", None))]
    try:
        result: int = handler(cfg, args)
    except UsageError as exc:
        print(f"buzon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a message, not a traceback, for the admin
        print(f"buzon: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return result


def _run_daemon(cfg: config_mod.Config) -> int:
    logmod.configure(cfg.log.level, cfg.log.format, components=dict(cfg.log.components))
    from daemon.app import serve

    try:
        return asyncio.run(serve(cfg))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return EXIT_FAILURE
    except Exception as exc:  # one clear line for the admin, then exit 1
        logmod.get_logger(component="daemon").error(
            "daemon.failed", error=f"{type(exc).__name__}: {exc}"
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
