"""`buzon sla`: deadline arithmetic on the configured calendars, for admins to check by hand.

``buzon sla due --start 2026-12-24T16:30+01:00 --add 1bh --calendar office`` prints
the instant the daemon would compute, in ISO 8601 with the calendar's offset, so an
admin can verify a policy before trusting it with customers.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from daemon.config import Config
from daemon.errors import UsageError
from triage.durations import Duration, DurationError


def due(cfg: Config, args: argparse.Namespace) -> int:
    sla = cfg.desk.sla
    try:
        calendar = sla.calendar(args.calendar)
    except KeyError:
        names = ", ".join(c.name for c in sla.calendars)
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``sla`` subcommands, added to the ``buzon`` parser."""
    sla = sub.add_parser("sla", help="SLA deadlines: compute one by hand")
    ssub = sla.add_subparsers(dest="action", required=True, metavar="ACTION")
    sd = ssub.add_parser("due", help="START + DURATION on a calendar, as the daemon computes it")
    sd.add_argument("--start", required=True, metavar="ISO8601", help="e.g. 2026-12-24T16:30+01:00")
    sd.add_argument(
        "--add", required=True, metavar="DURATION", help="30m, 1h, 2d (wall clock); 90bm, 1bh, 4bd"
    )
    sd.add_argument("--calendar", default="24x7", metavar="NAME", help="default: 24x7")
    sd.add_argument("--json", action="store_true")
