"""``buzon verify``: the SLA-cache check, every check in order, and the printed report.

The checks of stored bytes, states, spool and outbox live in ``daemon.verify``; this
module adds the one that replays tickets' clocks (as ``buzon sla explain`` does), runs
them all against a configured database without ever creating it, and prints the
findings (``tests/support/invariants.py`` runs the same from tests).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import select

from daemon import sla
from daemon import verify as v
from daemon.config import Config
from daemon.errors import UsageError
from daemon.verify import (
    ERROR,
    INFO,
    OK,
    SLA_SAMPLE,
    WARNING,
    Context,
    Finding,
    Problems,
    count_text,
    id_ranges,
    report,
)
from storage.engine import Database
from storage.models import Ticket

# -- 6. SLA cache --------------------------------------------------------------------------


def _sla_ids(ctx: Context) -> Iterator[list[int]]:
    """Ids of the open, stamped tickets to replay: the newest ``sla_limit``, or all."""
    base = select(Ticket.id).where(Ticket.status == "open", Ticket.sla_policy != "")
    if ctx.sla_limit is not None:
        with ctx.db.transaction() as s:
            ids = list(s.scalars(base.order_by(Ticket.id.desc()).limit(ctx.sla_limit)))
        for start in range(0, len(ids), v.BATCH):
            yield ids[start : start + v.BATCH]
        return
    for rows in id_ranges(ctx.db, lambda last: base.where(Ticket.id > last).order_by(Ticket.id)):
        yield [int(r[0]) for r in rows]


def check_sla_cache(ctx: Context) -> list[Finding]:
    differ = Problems(
        ERROR,
        "tickets storing deadlines their events do not give",
        "`buzon sla explain REF` shows stored and replayed side by side; the events "
        "are the truth: if the [sla] config did not change, report it",
    )
    unknown = Problems(
        WARNING,
        "tickets whose policy or calendar is no longer configured",
        "put it back in the [sla] config",
    )
    checked = 0
    for ids in _sla_ids(ctx):
        with ctx.db.transaction() as s:
            for ticket in s.scalars(select(Ticket).where(Ticket.id.in_(ids))):
                rows = sla.clock_rows(s, ticket)
                if not rows:
                    continue
                checked += 1
                # The same steps as `buzon sla explain` (daemon/sla_commands.py).
                try:
                    clocks, _, calendar = sla.replay(sla.history_of(rows), ctx.sla, explain=False)
                except sla.SlaError as exc:
                    unknown.add(f"{ticket.ref}: {exc}")
                    continue
                if names := sla.differences(ticket, clocks, calendar, ctx.sla):
                    differ.add(
                        f"{ticket.ref}: {', '.join(names)} (`buzon sla explain {ticket.ref}`)"
                    )
    scope = (
        "every open ticket" if ctx.sla_limit is None else f"newest {count_text(ctx.sla_limit)} open"
    )
    differ.what += f" (of {count_text(checked)}, {scope})"
    return report(
        "sla-cache", f"{count_text(checked)} tickets replayed ({scope})", [differ, unknown]
    )


CHECKS: tuple[Callable[[Context], list[Finding]], ...] = (
    v.check_integrity,
    v.check_raw_hashes,
    v.check_states,
    v.check_spool,
    v.check_outbox,
    check_sla_cache,
)


def run_checks(ctx: Context) -> list[Finding]:
    """Every check's findings, in order."""
    return [f for check in CHECKS for f in check(ctx)]


def context(cfg: Config, db: Database, *, sla_limit: int | None = SLA_SAMPLE) -> Context:
    return Context(
        db, Path(cfg.storage.spool), cfg.desk.sla, cfg.desk.outbound.max_attempts, sla_limit
    )


def verify_config(cfg: Config, *, sla_limit: int | None = SLA_SAMPLE) -> list[Finding]:
    """Open the configured database (never creating it) and run every check."""
    path = cfg.sqlite_path()
    if path is not None and not path.exists():
        raise UsageError(f"no database at {path} yet: nothing to verify")
    db = Database(cfg.storage.database)
    try:
        return run_checks(context(cfg, db, sla_limit=sla_limit))
    finally:
        db.dispose()


# -- the command line ----------------------------------------------------------------------

LABELS = {OK: "OK", INFO: "INFO", WARNING: "WARN", ERROR: "FAIL"}


def format_findings(findings: Sequence[Finding]) -> list[str]:
    lines: list[str] = []
    for f in findings:
        lines.append(f"{LABELS[f.severity]:<4} {f.check:<10}  {f.summary}")
        lines.extend(f"       e.g. {e}" for e in f.examples)
        if f.fix:
            lines.append(f"       fix: {f.fix}")
    return lines


def verify(cfg: Config, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit: use a positive number of tickets, or --all")
    limit = None if args.all else (args.limit or SLA_SAMPLE)
    findings = verify_config(cfg, sla_limit=limit)
    failed = any(f.severity == ERROR for f in findings)
    if args.json:
        print(
            json.dumps(
                {"ok": not failed, "findings": [asdict(f) for f in findings]}, ensure_ascii=False
            )
        )
    else:
        print("\n".join(format_findings(findings)))
    return 1 if failed else 0
