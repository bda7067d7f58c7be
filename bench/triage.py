"""Triage per message: classification, duplicate lookup and incident lookup at two database sizes.

Issue 5 asks that the per-message cost at 1,000,000 tickets be at most 1.5x the cost at
10,000 (the baseline, measured in the same run), and that classification reach 1,000
messages/s on one core. What is measured, in one process pinned to one CPU:

* **classification**: ``daemon.triager.Triager.classify`` (the daemon's shipped rules,
  language guesser, no learned model unless ``--model``) over the ``MessageFacts`` of
  ``tests/data/triage/tune.jsonl``, cycled to ``--messages``.
* **duplicate lookup**: ``daemon.similar.collapse_duplicate`` itself, called with a real
  ``daemon.work.Work`` (session, ``[matching]`` defaults, fingerprint, customer, a
  not-yet-flushed ``Message``): ``repo.open_tickets_of_customer`` + ``duplicate_score``
  over the candidates, and ``join`` when one is near-identical. Fingerprinting the
  message (``triage.similarity.fingerprint``, done by the thread step before it) is
  timed on its own.
* **incident lookup**: ``daemon.similar.incident`` itself, for a ticket this message
  just opened (inserted and flushed before the clock starts, with the category the
  classifier gave the message): ``repo.tickets_created_since`` + ``incident_matches``,
  then linking to the open incident or detecting one. It is timed for every probe
  message, including the ones the duplicate step would have collapsed.

Each probe runs in its own session whose transaction is opened before the clock starts
and rolled back after, so the databases never change. What they hold (a generated
desk's timeline at two sizes, an ongoing outage) and the probe messages are described
in ``bench/triage_data.py``; how the databases are generated and cached, in
``bench/triage_store.py``; how a probe runs through the daemon's two steps, in
``bench/triage_desk.py``. This module measures and reports.

Every phase runs ``--rounds`` times, sizes alternating, after one untimed warm-up pass
per database; the table shows the median over rounds of the per-round mean and p99.
The query plans of the statements the two steps issued are printed (``EXPLAIN QUERY
PLAN`` on SQLite, ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL). The script measures
and does not assert: exit code 0, with GOAL MET / GOAL NOT MET lines, and one JSON line
at the end with every number.

Run from the repository root::

    .venv/bin/python bench/triage.py                          # SQLite, 10k and 1M
    .venv/bin/python bench/triage.py --database postgresql
    .venv/bin/python bench/triage.py --small 2000 --large 50000 --rounds 1 --profile 25
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import BASE_TOML, PG_ADMIN, PG_INDEX_USED, TUNE, pin_cpu

# isort: split
from triage_data import KINDS, Params, Probe, Timeline, _facts, load_samples, make_probes
from triage_desk import Desk
from triage_store import describe, ensure_database

from daemon import config as config_mod
from daemon.triager import Triager
from triage.classify import MessageFacts
from triage.similarity import fingerprint

PHASES = ("classification", "fingerprint", "duplicate", "incident")


@dataclass
class Stats:
    """Per-message samples (ns) of one phase at one size, one list per round."""

    rounds: list[list[int]] = field(default_factory=list)

    def mean_us(self) -> float:
        return statistics.median(statistics.fmean(r) for r in self.rounds) / 1000

    def p99_us(self) -> float:
        return statistics.median(_pct(r, 0.99) for r in self.rounds) / 1000

    def p50_us(self) -> float:
        return statistics.median(_pct(r, 0.50) for r in self.rounds) / 1000


def _pct(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])


def classify_pass(triager: Triager, facts: Sequence[MessageFacts]) -> tuple[list[int], float]:
    out = []
    cpu0 = time.process_time()
    for f in facts:
        t0 = time.perf_counter_ns()
        triager.classify(f)
        out.append(time.perf_counter_ns() - t0)
    return out, time.process_time() - cpu0


def fingerprint_pass(probes: Sequence[Probe]) -> list[int]:
    out = []
    for p in probes:
        t0 = time.perf_counter_ns()
        fingerprint(p.subject, p.text)
        out.append(time.perf_counter_ns() - t0)
    return out


def plan_verdict(backend: str, lines: Sequence[str]) -> str:
    joined = " ".join(lines)
    if backend == "sqlite":
        used = re.findall(r"USING (?:COVERING )?INDEX (\w+)|USING INTEGER PRIMARY KEY", joined)
        scan = re.search(r"\bSCAN tickets\b(?! USING)", joined)
        sort = "TEMP B-TREE" in joined
    else:
        used = re.findall(PG_INDEX_USED, joined)
        scan = re.search(r"Seq Scan on tickets", joined)
        sort = bool(re.search(r"\bSort\b", joined))
    names = ", ".join(u or "rowid" for u in used) or "none"
    return (
        f"index: {names}; full scan: {'YES' if scan else 'no'}; "
        f"separate sort: {'YES' if sort else 'no'}"
    )


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--small", type=int, default=10_000, help="tickets in the baseline database")
    p.add_argument("--large", type=int, default=1_000_000, help="tickets in the large database")
    p.add_argument("--messages", type=int, default=2000, help="probe messages per pass")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--pg-admin", default=PG_ADMIN, help="URL of a database to CREATE from")
    p.add_argument(
        "--pg-prefix", default="buzon_bench_triage", help="PostgreSQL databases: <prefix>_<N>"
    )
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "buzon-bench-triage"))
    p.add_argument("--fresh", action="store_true", help="regenerate the databases")
    p.add_argument("--per-day", type=float, default=650.0, help="tickets a day, now")
    p.add_argument("--customers", type=int, default=200_000)
    p.add_argument("--burst", type=int, default=40, help="outage tickets in the last 20 min")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--model", help="a learned triage model (.npz) to classify with, as [triage]")
    p.add_argument("--cpu", type=int, default=-1, help="CPU to pin to (default: the last one)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N, large DB")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1000 <= args.small < args.large <= 5_000_000:
        p.error("need 1000 <= --small < --large <= 5000000")
    if not 10 <= args.messages <= 100_000 or not 1 <= args.rounds <= 10:
        p.error("--messages must be 10..100000 and --rounds 1..10")
    if not 0 <= args.burst < args.small or args.customers < 1 or args.per_day <= 0:
        p.error("--burst must be under --small; --customers and --per-day positive")


def _print_plans(desk: Desk, probes: Sequence[Probe]) -> list[dict[str, Any]]:
    print(f"\nquery plans at {desk.label} ({desk.db.backend}):")
    out = []
    for step, stmt, lines in desk.plans(probes):
        flat = " ".join(stmt.split())
        where = flat[flat.find(" FROM ") :] if " FROM " in flat else flat
        verdict = plan_verdict(desk.db.backend, lines)
        print(f"  [{step}] SELECT ...{where[:150]}")
        for line in lines:
            print(f"      {line}")
        print(f"      -> {verdict}")
        out.append(
            {"size": desk.label, "step": step, "sql": flat, "plan": lines, "verdict": verdict}
        )
    return out


def _measure(
    desks: Sequence[Desk],
    probes: Sequence[Probe],
    facts: Sequence[MessageFacts],
    triager: Triager,
    rounds: int,
) -> tuple[dict[str, dict[str, Stats]], dict[str, list[float]], list[list[Any]]]:
    stats = {d.label: {ph: Stats() for ph in PHASES} for d in desks}
    cpu: dict[str, list[float]] = {d.label: [] for d in desks}
    outcomes: list[list[Any]] = [[] for _ in desks]
    for d in desks:  # warm-up: caches, lazy imports, statement caches
        classify_pass(triager, facts[:200])
        d.lookups(probes)
    for r in range(rounds):
        order = list(enumerate(desks))
        if r % 2:
            order.reverse()
        for idx, d in order:
            c_ns, c_cpu = classify_pass(triager, facts)
            s = stats[d.label]
            s["classification"].rounds.append(c_ns)
            cpu[d.label].append(c_cpu)
            s["fingerprint"].rounds.append(fingerprint_pass(probes))
            dup, inc, out = d.lookups(probes)
            s["duplicate"].rounds.append(dup)
            s["incident"].rounds.append(inc)
            outcomes[idx] = out
            print(
                f"  round {r + 1} {d.label:>9}: classify {statistics.fmean(c_ns) / 1000:7.1f} us, "
                f"duplicate {statistics.fmean(dup) / 1000:7.1f} us, "
                f"incident {statistics.fmean(inc) / 1000:7.1f} us",
                flush=True,
            )
    return stats, cpu, outcomes


def _profile(desk: Desk, probes: Sequence[Probe], top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    desk.lookups(probes)
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _table(stats: dict[str, dict[str, Stats]], small: str, large: str) -> dict[str, Any]:
    print()
    head = f"{'per message':<22} {small + ' mean':>14} {'p99':>9} {large + ' mean':>16} {'p99':>9}"
    print(f"{head} {'ratio mean':>11} {'ratio p99':>10}")
    rows: dict[str, Any] = {}
    total = {k: 0.0 for k in (small, large)}
    for ph in PHASES:
        a, b = stats[small][ph], stats[large][ph]
        ratio, ratio99 = b.mean_us() / a.mean_us(), b.p99_us() / a.p99_us()
        total[small] += a.mean_us()
        total[large] += b.mean_us()
        print(
            f"{ph:<22} {a.mean_us():>11.1f} us {a.p99_us():>9.1f} {b.mean_us():>13.1f} us "
            f"{b.p99_us():>9.1f} {ratio:>11.2f} {ratio99:>10.2f}"
        )
        rows[ph] = {
            "small_mean_us": round(a.mean_us(), 1),
            "small_p50_us": round(a.p50_us(), 1),
            "small_p99_us": round(a.p99_us(), 1),
            "large_mean_us": round(b.mean_us(), 1),
            "large_p50_us": round(b.p50_us(), 1),
            "large_p99_us": round(b.p99_us(), 1),
            "ratio_mean": round(ratio, 3),
            "ratio_p99": round(ratio99, 3),
        }
    ratio_total = total[large] / total[small]
    print(
        f"{'all four (sum)':<22} {total[small]:>11.1f} us {'':>9} {total[large]:>13.1f} us "
        f"{'':>9} {ratio_total:>11.2f}"
    )
    rows["total"] = {
        "small_mean_us": round(total[small], 1),
        "large_mean_us": round(total[large], 1),
        "ratio_mean": round(ratio_total, 3),
    }
    return rows


def _goals(rows: dict[str, Any], cls_rate: float) -> dict[str, bool]:
    goals = {
        "classification >= 1000 msg/s on one core": cls_rate >= 1000,
        "duplicate lookup 1M/10k <= 1.5": rows["duplicate"]["ratio_mean"] <= 1.5,
        "incident lookup 1M/10k <= 1.5": rows["incident"]["ratio_mean"] <= 1.5,
        "whole per-message cost 1M/10k <= 1.5": rows["total"]["ratio_mean"] <= 1.5,
    }
    print()
    for name, ok in goals.items():
        print(f"{'GOAL MET' if ok else 'GOAL NOT MET'}: {name}")
    return goals


def _open_desks(
    args: argparse.Namespace, tl: Timeline, scratch: Path, report: dict[str, Any]
) -> list[Desk]:
    """Generate (or reuse) both databases and open them the daemon's way."""
    desks = []
    report["generated_seconds"], report["databases"] = {}, {}
    for n in (args.small, args.large):
        url, secs = ensure_database(args, tl, n)
        done = f"generated in {secs:.1f} s" if secs is not None else "cached"
        print(f"  {n:,} tickets: {done} ({url})", flush=True)
        desk = Desk(f"{n:,}", url, scratch)
        info = describe(desk.db, tl, n)
        print(f"  {desk.label}: {info}")
        report["generated_seconds"][str(n)] = None if secs is None else round(secs, 1)
        report["databases"][str(n)] = info
        desks.append(desk)
    if tl.span_days(args.small) < 14.1:
        print("  NOTE: the small database spans under the 14-day duplicate window")
    return desks


def _compare_candidates(desks: Sequence[Desk], probes: Sequence[Probe]) -> bool:
    cands = [d.candidates(probes) for d in desks]
    print()
    for d, (dup_c, inc_c, _) in zip(desks, cands, strict=True):
        print(
            f"candidates at {d.label}: duplicate mean {statistics.fmean(dup_c):.2f} "
            f"max {max(dup_c)}; incident mean {statistics.fmean(inc_c):.2f} max {max(inc_c)}"
        )
    same = bool(cands[0][2] == cands[1][2])
    print(f"both databases return the same candidate rows: {'yes' if same else 'NO'}")
    return same


def _outcomes(outcomes: list[list[Any]], report: dict[str, Any]) -> None:
    first = outcomes[0]
    report["same_outcomes"] = outcomes[0] == outcomes[1]
    report["collapsed"] = sum(1 for (d_out, _) in first if d_out[0])
    report["incident_linked"] = sum(1 for (_, i_out) in first if "incident.updated" in i_out)
    report["incident_detected"] = sum(1 for (_, i_out) in first if "incident.detected" in i_out)
    print(
        f"outcomes: {report['collapsed']} collapsed as duplicates, "
        f"{report['incident_linked']} linked to the open incident, "
        f"{report['incident_detected']} detected a new one; "
        f"same at both sizes: {'yes' if report['same_outcomes'] else 'NO'}"
    )


def _classification_rate(
    rows: dict[str, Any], cpu_s: dict[str, list[float]], n: int, cpu: int
) -> float:
    means: tuple[float, float] = (
        rows["classification"]["small_mean_us"],
        rows["classification"]["large_mean_us"],
    )
    rate = 1e6 / max(means)
    cpu_rate = n / statistics.median([x for v in cpu_s.values() for x in v])
    print(
        f"\nclassification: {rate:,.0f} msg/s wall (slower size; faster {1e6 / min(means):,.0f}),"
        f" {cpu_rate:,.0f} msg/s per CPU second, one thread pinned to CPU {cpu}"
    )
    rows["classification"]["msgs_per_cpu_s"] = round(cpu_rate, 1)
    return rate


def main(argv: list[str] | None = None) -> int:
    p = _arg_parser()
    args = p.parse_args(argv)
    _check(p, args)
    from daemon import logging as logmod

    logmod.configure("warning", "json", stream=sys.stderr)
    cpu = pin_cpu(args.cpu)
    scratch = Path(args.workdir) / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cfg_text = BASE_TOML + (f'[triage]\nmodel = "{args.model}"\n' if args.model else "")
    triager = Triager.from_config(config_mod.parse(cfg_text, base=scratch, source="bench"))
    params = Params(args.per_day, args.customers, args.burst, args.seed)
    samples = load_samples()
    tl = Timeline(params, samples)
    report: dict[str, Any] = {
        "bench": "triage",
        "database": args.database,
        "sizes": [args.small, args.large],
        "messages": args.messages,
        "rounds": args.rounds,
        "params": asdict(params),
        "cpu": cpu,
    }
    print(
        f"{args.database}, pinned to CPU {cpu}; {len(samples)} samples from {TUNE.name}; "
        f"learned model: {'yes' if triager.model else 'none (rules only)'}"
    )
    desks = _open_desks(args, tl, scratch, report)

    probes = make_probes(tl, args.small, args.messages, args.seed, triager)
    report["probes"] = {k: sum(1 for pr in probes if pr.kind == k) for k, _ in KINDS}
    print(f"probes: {report['probes']}")
    one_of_each = list({pr.kind: pr for pr in probes}.values())
    report["plans"] = [plan for d in desks for plan in _print_plans(d, one_of_each)]
    report["same_candidates"] = _compare_candidates(desks, probes)

    facts = [_facts(s.subject, s.body, s.channel, s.to) for s in samples]
    facts = [facts[i % len(facts)] for i in range(args.messages)]
    print(f"\n{args.rounds} round(s) x {args.messages} messages per size, sizes alternating:")
    stats, cpu_s, outcomes = _measure(desks, probes, facts, triager, args.rounds)
    _outcomes(outcomes, report)
    rows = _table(stats, desks[0].label, desks[1].label)
    rate = _classification_rate(rows, cpu_s, args.messages, cpu)
    report["per_message"] = rows
    report["classification_msgs_per_s"] = round(rate, 1)
    report["goals"] = _goals(rows, rate)
    if args.profile:
        print(f"\ncProfile of one lookup pass at {desks[1].label} (top {args.profile}):")
        print(_profile(desks[1], probes, args.profile))
    for d in desks:
        d.db.dispose()
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
