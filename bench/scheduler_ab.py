"""Scheduler passes over several databases, alternated in one process: A/B on a noisy machine.

``bench/scheduler.py`` measures each database size in turn; on a shared VM whose speed
drifts by 10-30 % within minutes, two of its runs taken apart cannot tell a 5-10 % change.
This script opens databases that ``bench/scheduler.py`` generated (the same ``NOW``, the
same undo), runs one untimed pass on each, then ``--rounds`` rounds, each a pass on every
database in turn (order reversed every other round), and prints median and minimum per
database and their ratio to the first one. Pinned to one CPU, logs at ``info`` to
/dev/null. A database must be in its generated state (``bench/scheduler.py`` leaves it so).

Typical use: copy a generated database, change its schema or data the way a change would
(e.g. add back a dropped column and fill it), then compare the two::

    .venv/bin/python bench/scheduler_ab.py --due 10000 \\
        sqlite:////tmp/old.db sqlite:////tmp/new.db
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from scheduler import run_pass
from scheduler_data import Case
from scheduler_store import open_desk, restore

import benchlib  # noqa: F401  (puts the repository first on sys.path)
from daemon import logging as logmod
from daemon.config_desk import OutboundConfig, default_sla
from daemon.outbound import Outbound


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("urls", nargs="+", help="database URLs; the first is the baseline")
    p.add_argument("--due", type=int, default=10_000, help="due tickets in each database")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--notify", default="desk-admins@example.com", help='[sla.notify] "*"')
    p.add_argument("--cpu", type=int, default=-1, help="CPU to pin to (default: the last)")
    p.add_argument("--batch", type=int, default=0, help="[sla] batch (default: the daemon's)")
    args = p.parse_args(argv)
    cpu = sorted(os.sched_getaffinity(0))[args.cpu]
    os.sched_setaffinity(0, {cpu})
    logmod.configure("info", "json", stream=Path(os.devnull).open("w", encoding="utf-8"))  # noqa: SIM115
    cfg = default_sla()
    if args.notify:
        cfg = replace(cfg, notify=(("*", args.notify),))
    if args.batch:
        cfg = replace(cfg, batch=args.batch)
    outbound = Outbound(OutboundConfig(from_address="soporte@example.com"))
    desks = [open_desk(url, Case(0, args.due)) for url in args.urls]
    for desk in desks:
        found = len(desk.pristine)
        if found != args.due:
            p.error(f"{desk.url}: {found} tickets due at the bench's NOW, not --due {args.due}")
        run_pass(desk, cfg, outbound)  # warm-up: imports, statement caches, page cache
        if not restore(desk):
            p.error(f"{desk.url}: the undo after the warm-up failed; regenerate it")
    # As bench/scheduler.py and the daemon do: frozen, the full collections of a pass do
    # not walk the due rows kept for the undo (~0.3 s of a 1M pass when they did).
    gc.collect()
    gc.freeze()
    times: dict[str, list[float]] = {d.url: [] for d in desks}
    for r in range(args.rounds):
        for desk in desks if r % 2 == 0 else list(reversed(desks)):
            times[desk.url].append(run_pass(desk, cfg, outbound).seconds)
            restore(desk)
    base = times[desks[0].url]
    print(f"{args.rounds} rounds, CPU {cpu}, {args.due:,} due; ratio = median / baseline's")
    for url, ts in times.items():
        ratio = statistics.median(ts) / statistics.median(base)
        print(
            f"  {url}: median {statistics.median(ts):.3f} s, min {min(ts):.3f} s, "
            f"ratio {ratio:.3f}  [{' '.join(f'{t:.2f}' for t in ts)}]"
        )
    for desk in desks:
        desk.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
