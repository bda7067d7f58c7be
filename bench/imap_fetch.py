"""IMAP intake: fetch throughput against raw imapclient, and arrival-to-spool latency with IDLE.

Everything runs against a private Dovecot 2.3 on 127.0.0.1 (``tests/support/dovecot.py``,
user ``support``), started and killed by this script. What is measured, in one run:

* **fill** (not measured against anything): ``--messages`` messages (2-20 KiB, plain text,
  some with a base64 attachment, seeded by ``--seed``) written straight into the Maildir of
  the private Dovecot (``<root>/mail/support/cur/``, owned by its mail user, with ``S=`` and
  ``W=`` sizes in the file names as Dovecot itself writes them); ``--fill append`` uses one
  IMAP session doing APPENDs instead. A warm-up session then SELECTs the folder (Dovecot
  indexes it) and fetches every ``RFC822.SIZE``, so both sides below read a warm cache.
* **throughput, baseline**: imapclient alone: connect, LOGIN, EXAMINE INBOX, ``SEARCH ALL``,
  then ``FETCH <batch> BODY.PEEK[]`` in batches of ``--batch`` (Buzón's default batch size,
  50), bodies discarded. Messages/s = messages / wall time from connect to LOGOUT.
* **throughput, buzon**: ``daemon.imap.FolderWorker`` on a fresh SQLite database and spool
  (``daemon.parts.open_parts`` with a config from ``daemon.config.parse`` holding one
  ``[[imap]]`` account, ``security = "none"``, ``after = "keep"``): ``connect()`` then
  ``session(client, idle=False)``, i.e. ``RFC822.SIZE`` for ten batches at a time, then per
  batch ``BODY.PEEK[]`` and the ``INTERNALDATE`` of its first UID (the lag gauge); a writer
  thread meanwhile runs ``Spool.put_bundle`` (one file per batch, or per group of batches
  when they queue up: fsync, rename, fsync of ``new/``) and commits the checkpoint.
  Afterwards the spool must hold exactly one entry per message of the mailbox (checked by
  the UIDs in the entries' metadata) and the checkpoint must be the highest UID, else the
  run is invalid.
  Both sides run ``--rounds`` times, alternating which goes first; medians are reported with
  the ratio buzon/baseline (goal >= 0.5). Process CPU and Dovecot CPU (from /proc) per message
  are printed next to them.
* **latency**: one APPEND every ``--interval`` seconds (``--latency-messages`` of them, from
  one IMAP session) into an empty folder watched with IDLE. Each message carries
  ``X-Bench-Seq`` and ``X-Bench-Sent`` (its send time); t0 = just before the APPEND call.
  Measured twice, each on its own folder, after a priming message has gone through:

  - baseline: a bare imapclient loop (IDLE until ``EXISTS``, ``UID SEARCH``, ``FETCH
    BODY.PEEK[]``, no spool); t1 = when the FETCH answer is in.
  - buzon: a ``FolderWorker.run()`` thread (IDLE, as in production) on a fresh database and
    spool; t1 = when its spool entry is durable in ``new/`` (a ``Spool.on_new`` hook, called
    by the worker's writer thread right after the fsync of ``new/``).

  p50/p90/p99/max of t1 - t0 (goal for buzon: p99 < 2 s). A message not seen
  ``--latency-wait`` seconds after the last APPEND counts as late and makes the run invalid
  (the percentiles would be wrong). Note that Dovecot itself holds IDLE notifications back
  for up to 0.5 s (``NOTIFY_DELAY_MSECS`` in its ``mailbox-watch.c``), so ~0.5 s is the floor.

Each buzon throughput round also times the worker's calls (the two FETCHes and the SEARCH in
the fetching thread; ``Spool.put_bundle`` and database transactions, mostly in the writer
thread, which overlaps the fetches) and prints the median ms per message of each.
``--profile N`` adds one extra buzon round under cProfile (not counted) and prints the top N
functions by cumulative and by own time (the fetching thread only).

Run from the repository root (Dovecot 2.3 must be installed; tested as root)::

    .venv/bin/python bench/imap_fetch.py                 # 5,000 msgs x 3 rounds + 2 x 200, ~50 s
    .venv/bin/python bench/imap_fetch.py --messages 1000 --rounds 2 --latency-messages 50
    .venv/bin/python bench/imap_fetch.py --fill append   # fill through IMAP APPEND
    .venv/bin/python bench/imap_fetch.py --profile 25    # + cProfile of one buzon round

The last line printed is one JSON object with all the numbers. Exit code 1 means the run is
not valid (a message missing or duplicated in the spool, a wrong checkpoint, a late or lost
message in the latency phase, or a failed fetch).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from benchlib import REPO

# As pytest's ``pythonpath = [".", "tests"]``: the repository first, so that tests/parsers/
# (no __init__.py) cannot shadow the real ``parsers`` package; then tests/ for support.dovecot.
sys.path[1:1] = [str(REPO), str(REPO / "tests")]

from imap_latency import LatencyBench, latency_valid  # noqa: E402
from imap_mailbox import (  # noqa: E402
    PASSWORD,
    PASSWORD_ENV,
    USER,
    fill_append,
    fill_maildir,
    make_corpus,
    warm_up,
)
from imap_throughput import PHASES, Bench, Round  # noqa: E402

from support.dovecot import Dovecot, dovecot_binary  # noqa: E402


def _per_msg(r: Round, attr: str) -> float:
    value: float = getattr(r, attr)
    return 1000 * value / r.messages if r.messages else 0.0


def _per_msg_s(r: Round, seconds: float) -> float:
    return 1000 * seconds / r.messages if r.messages else 0.0


def _report(
    args: argparse.Namespace,
    fill: dict[str, Any],
    runs: list[Round],
    latency: dict[str, dict[str, Any]],
    profile_text: str,
) -> bool:
    def med(side: str, fn: Callable[[Round], float]) -> float:
        return statistics.median(fn(r) for r in runs if r.side == side)

    base_rate = med("baseline", lambda r: r.rate)
    buzon_rate = med("buzon", lambda r: r.rate)
    ratio = buzon_rate / base_rate if base_rate else 0.0
    print()
    print("throughput (backlog of", args.messages, "messages, batch", args.batch, "UIDs):")
    print(
        f"{'side':<10} {'msg/s (median)':>15} {'bench CPU ms/msg':>17} {'Dovecot CPU ms/msg':>19}"
    )
    for side, rate in (("baseline", base_rate), ("buzon", buzon_rate)):
        cpu = med(side, lambda r: _per_msg(r, "cpu_s"))
        dcpu = med(side, lambda r: _per_msg(r, "dovecot_cpu_s"))
        print(f"{side:<10} {rate:>15.1f} {cpu:>17.3f} {dcpu:>19.3f}")
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print(f"ratio buzon/baseline: {ratio:.2f} (goal >= 0.50: {verdict})")
    print("where buzon's wall time goes (median of its rounds, ms per message):")
    for name in (*PHASES, "other"):
        ms = statistics.median(
            _per_msg_s(r, r.extra["phases_s"][name]) for r in runs if r.side == "buzon"
        )
        print(f"  {name:<32} {ms:7.3f}")
    for r in runs:
        if not r.valid:
            print(f"  INVALID {r.side} round: {r.detail}")
    print()
    print(
        f"arrival latency (IDLE, {args.latency_messages} messages, one APPEND every "
        f"{args.interval * 1000:g} ms; ms from just before APPEND):"
    )
    print(
        f"{'side':<10} {'arrived':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} "
        f"{'wakeups':>8} {'late':>5}"
    )
    for side in ("baseline", "buzon"):
        lat = latency[side]
        cols = [lat.get(k, float("nan")) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        print(
            f"{side:<10} {lat['arrived']:>4}/{lat['sent']:<3} "
            + " ".join(f"{c:>8.1f}" for c in cols)
            + f" {lat['wakeups']:>8} {lat['late']:>5}"
        )
        if not latency_valid(lat):
            print(f"  INVALID {side} latency phase: {json.dumps(lat)}")
    b = latency["buzon"]
    lat_ok = latency_valid(b) and b.get("p99_ms", float("inf")) < 2000
    print(
        "(baseline: bare imapclient IDLE + FETCH, no spool; buzon: FolderWorker.run() until "
        "the spool entry is durable)"
    )
    print(f"buzon p99 < 2000 ms: {'met' if lat_ok else 'NOT met'}")
    if profile_text:
        print()
        print(profile_text)
    valid = all(r.valid for r in runs) and all(latency_valid(v) for v in latency.values())
    print(
        json.dumps(
            {
                "bench": "imap_fetch",
                "messages": args.messages,
                "batch": args.batch,
                "rounds": args.rounds,
                "seed": args.seed,
                "tmpdir": args.tmpdir or tempfile.gettempdir(),
                "fill": fill,
                "baseline_msgs_per_s": round(base_rate, 1),
                "buzon_msgs_per_s": round(buzon_rate, 1),
                "ratio": round(ratio, 3),
                "ratio_goal_met": ratio >= 0.5,
                "interval_s": args.interval,
                "latency": latency,
                "latency_goal_met": lat_ok,
                "valid": valid,
                "runs": [{**asdict(r), "rate": round(r.rate, 1)} for r in runs],
            }
        )
    )
    return valid


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=5000, help="messages in the mailbox (5000)")
    p.add_argument("--batch", type=int, default=50, help="UIDs per FETCH, both sides (50)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side, order alternating (3)")
    p.add_argument("--seed", type=int, default=2026, help="corpus seed")
    p.add_argument("--fill", choices=("maildir", "append"), default="maildir")
    p.add_argument("--latency-messages", type=int, default=200, help="messages sent while IDLE")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between APPENDs (0.05)")
    p.add_argument(
        "--latency-wait",
        type=float,
        default=10.0,
        help="seconds to wait for the last messages after the last APPEND (10)",
    )
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N (0: off)")
    p.add_argument("--tmpdir", metavar="DIR", help="where the spools and databases go")
    p.add_argument("--keep-tmp", action="store_true", help="keep spools and databases")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, low, high in (
        ("messages", 1, 50_000),
        ("batch", 1, 1000),
        ("rounds", 1, 10),
        ("latency_messages", 1, 5000),
        ("interval", 0.001, 5),
        ("latency_wait", 1, 600),
    ):
        if not low <= getattr(args, name) <= high:
            p.error(f"--{name.replace('_', '-')} must be between {low} and {high}")


def _fill(
    args: argparse.Namespace, server: Dovecot, raws: list[bytes]
) -> tuple[list[int], dict[str, Any]]:
    t = time.perf_counter()
    (fill_maildir if args.fill == "maildir" else fill_append)(server, raws)
    fill_s = time.perf_counter() - t
    t = time.perf_counter()
    uids = warm_up(server, len(raws))
    warm_s = time.perf_counter() - t
    print(
        f"Dovecot {'.'.join(map(str, server.version))} on 127.0.0.1:{server.port}: "
        f"filled by {args.fill} in {fill_s:.2f} s, indexed + warmed in {warm_s:.2f} s "
        f"(not measured)"
    )
    return uids, {
        "how": args.fill,
        "seconds": round(fill_s, 2),
        "warm_up_seconds": round(warm_s, 2),
    }


def _throughput(bench: Bench) -> list[Round]:
    runs: list[Round] = []
    for i in range(bench.args.rounds):
        buzon = functools.partial(bench.buzon, f"r{i}")
        order: tuple[Callable[[], Round], ...] = (
            (bench.baseline, buzon) if i % 2 == 0 else (buzon, bench.baseline)
        )
        for fn in order:
            r = fn()
            runs.append(r)
            print(
                f"  round {i + 1} {r.side:<8} {r.messages:>6} msgs {r.seconds:7.2f} s "
                f"{r.rate:8.1f} msg/s  CPU {_per_msg(r, 'cpu_s'):.3f} ms/msg  "
                f"Dovecot {_per_msg(r, 'dovecot_cpu_s'):.3f} ms/msg"
                + ("" if r.valid else f"  INVALID: {r.detail}")
            )
    return runs


def _profile(bench: Bench, top: int) -> str:
    prof = cProfile.Profile()
    r = bench.buzon("profile", prof)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return (
        f"cProfile of one extra buzon round ({r.rate:.1f} msg/s under the profiler, not "
        f"counted; the worker's thread only):\n" + out.getvalue()
    )


def main(argv: list[str] | None = None) -> int:
    p = _arg_parser()
    args = p.parse_args(argv)
    _check(p, args)
    if dovecot_binary() is None:
        print("dovecot is not installed (Debian package dovecot-imapd)", file=sys.stderr)
        return 1

    from daemon import logging as logmod

    logmod.configure("warning", "json", stream=sys.stderr)
    os.environ[PASSWORD_ENV] = PASSWORD

    raws = make_corpus(args.messages, args.seed)
    total = sum(map(len, raws))
    print(
        f"corpus: {len(raws)} messages, {total / 1024 / 1024:.1f} MiB "
        f"({min(map(len, raws))}-{max(map(len, raws))} B), seed {args.seed}; "
        f"batch {args.batch}, {args.rounds} round(s) per side; files under "
        f"{args.tmpdir or tempfile.gettempdir()}"
    )
    server = Dovecot({USER: PASSWORD})
    bench: Bench | None = None
    try:
        server.start()
        uids, fill = _fill(args, server, raws)
        bench = Bench(args, server, uids)
        runs = _throughput(bench)
        profile_text = _profile(bench, args.profile) if args.profile else ""
        print(
            f"latency: {args.latency_messages} messages per side, one APPEND every "
            f"{args.interval * 1000:g} ms into an empty folder watched with IDLE"
        )
        lb = LatencyBench(bench)
        latency = {"baseline": lb.baseline(), "buzon": lb.buzon()}
    finally:
        if bench is not None:
            bench.close()
        server.close()
    return 0 if _report(args, fill, runs, latency, profile_text) else 1


if __name__ == "__main__":
    sys.exit(main())
