"""End-to-end throughput on PostgreSQL with 1, 2 and 3 instances on one machine and database.

What is measured, per instance count N (``--instances 1,2,3``):

* **setup**: one fresh scratch PostgreSQL database (``buzon_scale_<hex>`` on
  ``--pg``, dropped at the end) shared by N real daemons, each started as an admin
  does (``python -m daemon.cli --config … run``) with its own spool, attachment
  store and SMTP port, every role on (no ``[roles]`` table), ``[log] level =
  "info"`` as JSON to a file per instance, and ``[outbound] relay`` pointing at
  Postfix's ``smtp-sink`` on 127.0.0.1 (aiosmtpd in this process when it is not
  installed), so acknowledgements leave through the outbox as in production.
* **load**: an open-loop generator in this process (aiosmtplib, ``--clients``
  connections per instance, messages in sequence on each). Message ``i`` is due
  at ``t0 + i / --rate`` and goes to instance ``i mod N``; a connection that falls
  behind sends as fast as it can, so the offered rate is kept while intake keeps
  up. Messages are e-mail only (no voicemail): a new subject and a body of
  pseudo-words per message (so no duplicate or incident matching joins them), from
  ``--customers`` senders, each with a unique ``Message-ID`` nonce. ``--text long``
  (the default) gives every message 64 content words; ``--text natural`` gives each
  the length and stop words of a real support message (``Corpus``).
* **latency**: from the moment the ``250`` to DATA was read by the client
  (``time.time()``) to the moment the ingest process logged ``ticket.stamped``
  for that ``Message-ID`` (``message.stored`` when the message joined a ticket
  that was stamped before). The ingest runner logs a message's events only
  after its transaction committed, so the log line's ``timestamp`` (structlog,
  UTC, microseconds, same machine clock) is the moment the stamped ticket is
  visible in the database, give or take the time to format one log line.
* **numbers**: offered rate (due messages / ``--duration``), accepted rate,
  achieved rate (messages stamped during the load window / ``--duration``),
  p50/p99/max latency over every accepted message (one not stamped by the end of
  ``--drain`` counts as infinitely late), backlog at the end of the load
  (accepted but not yet stamped), and the time to drain it. CPU milliseconds per
  accepted message of the daemons (process trees from /proc, and split into the
  main process: SMTP, scheduler, outbox; the ingest process, which runs at
  ``[pipeline] nice`` 19; the parser processes) and of their PostgreSQL backends.
* **accounting**: after the daemons stopped, every accepted message must be a
  stored message on a ticket with an SLA policy, or still in a spool (new/, cur/,
  bad/); the exit code is 1 when one is missing or a message was refused. A round
  whose backlog outlives ``--drain`` is reported as overloaded, not invalid.
* **ratios**: achieved rate against N = 1, and against a **baseline measured in
  the same run**: psycopg inserting one message-sized row per transaction on one
  connection into a scratch table of the same database for ``--baseline`` s (what
  one synchronous commit costs on this disk; Buzón needs one per message).

``--profile DIR`` runs every ``ingest-*`` worker thread of every instance under
cProfile (a ``sitecustomize`` written to the temp dir and put on PYTHONPATH, so
the daemon's code is untouched), writes ``DIR/<pid>-<thread>.prof`` and prints
the top functions of the merged profile. Profiling slows the workers: its
throughput numbers are not comparable with an unprofiled run.

The messages are ``bench/scale_mail.py``'s; the daemons, their relay and what they spent
and logged, ``bench/scale_daemons.py``'s; one round (database, load, drain, numbers),
``bench/scale_round.py``'s. This module runs the rounds and reports.

Run from the repository root (PostgreSQL must accept ``postgres`` on 127.0.0.1)::

    .venv/bin/python bench/scale.py                                   # 1,2,3 x 300 s at 200/s
    .venv/bin/python bench/scale.py --duration 30                     # a quick look
    .venv/bin/python bench/scale.py --duration 30 --text natural      # real mail's lengths
    .venv/bin/python bench/scale.py --instances 1 --duration 30 --profile /tmp/prof

The last line printed is one JSON object with all the numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from benchlib import PG_ADMIN

# isort: split
from scale_daemons import relay_sink
from scale_mail import TEXTS
from scale_round import run_round


def print_profile(directory: Path, top: int) -> str:
    """The merged profile of every worker thread: top functions by cumulative, own time."""
    files = sorted(str(p) for p in directory.rglob("*.prof"))
    if not files:
        return "(no profile written)"
    out = io.StringIO()
    stats = pstats.Stats(files[0], stream=out)
    for f in files[1:]:
        stats.add(f)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """The per-N table, with ratios; False when a round is not valid."""
    base1 = next((r["achieved_per_s"] for r in results if r["instances"] == 1), None)
    head = (
        f"{'N':>2} {'offered':>8} {'accepted':>9} {'achieved':>9} {'p50 s':>7} {'p99 s':>7} "
        f"{'max s':>7} {'backlog':>8} {'drain s':>8} {'vs N=1':>7} {'vs base':>8} "
        f"{'cpu ms/msg':>10} {'pg ms/msg':>9}"
    )
    print(head)
    ok = True
    for r in results:
        vs1 = r["achieved_per_s"] / base1 if base1 else float("nan")
        vsb = (
            r["achieved_per_s"] / r["baseline_inserts_per_s"]
            if r["baseline_inserts_per_s"]
            else float("nan")
        )
        r["ratio_vs_1"], r["ratio_vs_baseline"] = round(vs1, 3), round(vsb, 3)
        print(
            f"{r['instances']:>2} {r['offered_per_s']:>8.1f} {r['accepted_per_s']:>9.1f} "
            f"{r['achieved_per_s']:>9.1f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f} "
            f"{r['max_s']:>7.3f} {r['backlog_at_end']:>8} {r['drain_s']:>8.1f} {vs1:>7.2f} "
            f"{vsb:>8.3f} {r['daemon_cpu_ms_per_msg']:>10.2f} {r['pg_cpu_ms_per_msg']:>9.2f}"
        )
        by = r["cpu_ms_per_msg_by_process"]
        print(
            f"   baseline (1 conn, 1 row per commit): {r['baseline_inserts_per_s']:.0f} rows/s; "
            f"CPU ms/msg: main {by['main']}, ingest {by['ingest']}, parser {by['parser']}, "
            f"PostgreSQL backends {r['pg_cpu_ms_per_msg']}"
        )
        found = r["db_messages"] + r["spool_left"]
        if r["refused"] or found != r["accepted"] or r["db_stamped_messages"] != r["db_messages"]:
            ok = False
            print(
                f"   INVALID: {r['refused']} refused; of {r['accepted']} accepted "
                f"{r['db_messages']} stored + {r['spool_left']} still spooled; "
                f"{r['db_stamped_messages']} on a stamped ticket; errors: {r['errors']}"
            )
        elif r["not_stamped"]:
            print(
                f"   OVERLOADED: {r['not_stamped']} accepted messages still spooled "
                f"{args.drain:g} s after the load (none lost: stored + spooled = accepted)"
            )
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", default="1,2,3", help="comma-separated instance counts")
    p.add_argument("--rate", type=float, default=200.0, help="offered messages/s in total")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load per round")
    p.add_argument("--clients", type=int, default=4, help="SMTP connections per instance")
    p.add_argument("--customers", type=int, default=5000, help="distinct senders")
    p.add_argument("--drain", type=float, default=120.0, help="seconds to finish after the load")
    p.add_argument(
        "--parse-workers",
        type=int,
        default=0,
        help="[pipeline] parse_workers (default 0: the daemon's choice, 2 on PostgreSQL)",
    )
    p.add_argument("--nice", type=int, default=19, help="[pipeline] nice of the ingest process")
    p.add_argument(
        "--incident-candidates",
        type=int,
        default=0,
        metavar="N",
        help="[matching] incident_candidates (default: the daemon's, 500)",
    )
    p.add_argument(
        "--text",
        choices=TEXTS,
        default="long",
        help="long: 64 content words a message; natural: real support mail's lengths",
    )
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of raw inserts")
    p.add_argument("--pg", default=PG_ADMIN)
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--profile", default="", metavar="DIR", help="cProfile the ingest workers")
    p.add_argument("--profile-top", type=int, default=30)
    p.add_argument(
        "--profile-clock", choices=("wall", "cpu"), default="cpu", help="cProfile's timer"
    )
    args = p.parse_args()
    counts = [int(x) for x in args.instances.split(",") if x.strip()]
    run = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp(prefix="buzon-scale-", dir=args.tmpdir))
    results: list[dict[str, Any]] = []
    print(
        f"bench/scale.py: {args.rate:g} msg/s offered for {args.duration:g} s per round, "
        f"instances {counts}, {args.clients} connections per instance, "
        f"parse_workers {args.parse_workers or 'automatic'}, ingest nice {args.nice}, "
        f"incident_candidates {args.incident_candidates or 'default'}, {args.text} text; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        with relay_sink() as (relay, sink_kind):
            for n in counts:
                r = run_round(n, args, tmp, relay, run)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nrelay: {sink_kind}; load average now {os.getloadavg()[0]:.2f}")
    ok = print_table(results, args)
    if args.profile:
        for n in counts:
            print(f"\ncProfile of the ingest workers, N = {n}:")
            print(print_profile(Path(args.profile).resolve() / f"n{n}", args.profile_top))
    print(json.dumps({"args": vars(args), "results": results, "valid": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
