"""Durable SMTP accept rate: Buzón's daemon against a bare aiosmtpd + fsync baseline.

What is measured, in one run and with one load generator for both servers:

* **baseline**: a bare aiosmtpd server (in a child process) whose ``handle_DATA``
  writes each message to its own file and fsyncs it in a thread
  (``asyncio.to_thread``), then answers ``250``. This is the floor any durable
  Python SMTP intake has to pay.
* **buzon**: the real daemon (``python -m daemon.cli --config … run``) on a fresh
  SQLite database and spool in a temp dir. Its ingest runner consumes the spool
  while the load runs, as in production, so intake competes with parsing and
  database commits for the machine's CPUs and disk.

The load is ``--clients`` concurrent SMTP sessions sending ``--messages``
messages of ``--size`` bytes to 127.0.0.1 only. Postfix's ``smtp-source`` is
used when installed (``apt-get install postfix``; it is only the client, no
Postfix daemon runs), else an aiosmtplib script with one connection per client
(RSET between messages). Messages/s = accepted messages / wall time of the load.
The printed ratio is buzon / baseline (goal >= 0.8); the median of ``--rounds``
rounds, whose order alternates. The servers' CPU time during the load (from /proc,
child processes included) is printed per message too. Afterwards the daemon is
given ``--drain`` seconds to ingest, stopped with SIGTERM, and every accepted
message is looked for in its spool (new/, cur/, bad/) or its ``deliveries`` table;
the exit code is 1 when one is missing or a message was refused.

``--intake-only`` is a diagnostic: the daemon runs with its ingest process
threads never started, which separates the cost of intake from the cost of
ingesting in the same process. It is not how production runs.

The load generators are ``bench/smtp_load.py``'s; the baseline server and the
intake-only daemon (this script re-executed with a hidden option), ``bench/smtp_servers.py``'s;
finding the accepted messages afterwards, ``bench/smtp_account.py``'s. This module runs
the rounds and reports.

Run from the repository root::

    .venv/bin/python bench/smtp_intake.py                       # defaults: 2000 msgs, 20 clients
    .venv/bin/python bench/smtp_intake.py --messages 500 --rounds 1
    .venv/bin/python bench/smtp_intake.py --loadgen aiosmtplib  # without smtp-source
    .venv/bin/python bench/smtp_intake.py --keep-connection     # smtp-source -d
    .venv/bin/python bench/smtp_intake.py --intake-only         # ingest runner disabled

The last line printed is one JSON object with all the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import REPO, free_port, tree_cpu

# isort: split
from smtp_account import _account, _count_deliveries, _entry_count, _log_summary
from smtp_load import HELO_NAME, HOST, LoadResult, make_messages, run_aiosmtplib, run_smtp_source
from smtp_servers import _serve_baseline, _serve_intake_only, stop_process, wait_for_port

START_TIMEOUT = 60.0
STALL_SECONDS = 5.0


@dataclass
class Run:
    server: str
    accepted: int
    failed: int
    seconds: float
    rate: float
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, loadgen: str, smtp_source: str | None) -> None:
        self.args = args
        self.loadgen = loadgen
        self.smtp_source = smtp_source
        self.raws = make_messages(args.messages, args.size) if loadgen == "aiosmtplib" else []

    def load(self, port: int) -> LoadResult:
        a = self.args
        if self.loadgen == "smtp-source":
            assert self.smtp_source is not None
            return run_smtp_source(
                self.smtp_source,
                port,
                messages=a.messages,
                clients=a.clients,
                size=a.size,
                keep=a.keep_connection,
                timeout=a.timeout,
            )
        return run_aiosmtplib(port, self.raws, a.clients, a.timeout)

    def baseline(self) -> Run:
        with tempfile.TemporaryDirectory(prefix="buzon-bench-base-", dir=self.args.tmpdir) as tmp:
            port = free_port()
            argv = [sys.executable, __file__, "--serve-baseline", tmp, "--port", str(port)]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
            try:
                wait_for_port(port, proc, START_TIMEOUT)
                cpu = tree_cpu(proc.pid)
                res = self.load(port)
                cpu = tree_cpu(proc.pid) - cpu
            finally:
                stop_process(proc)
            out = proc.stdout.read().decode() if proc.stdout else ""
            files = len(os.listdir(tmp))
        server_count = json.loads(out.strip().splitlines()[-1])["accepted"] if out else -1
        return Run(
            "baseline",
            res.accepted,
            res.failed,
            res.seconds,
            res.rate,
            res.detail,
            {"files": files, "server_accepted": server_count, "server_cpu_s": round(cpu, 2)},
        )

    def buzon(self) -> Run:
        tmp = Path(tempfile.mkdtemp(prefix="buzon-bench-", dir=self.args.tmpdir))
        try:
            return self._buzon(tmp)
        finally:
            if not self.args.keep_tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _buzon(self, tmp: Path) -> Run:
        port = free_port()
        cfg = tmp / "buzon.toml"
        cfg.write_text(
            "[storage]\n"
            f'database = "sqlite:///{tmp}/b.db"\n'
            f'spool = "{tmp}/spool"\n'
            f'attachments = "{tmp}/att"\n'
            "[smtp]\n"
            f'listen = "{HOST}:{port}"\n'
            f'hostname = "{HELO_NAME}"\n'
            'domains = ["example.com"]\n'
            "[pipeline]\n"
            f"nice = {self.args.nice}\n"
            "[log]\n"
            'level = "warning"\n'
            'format = "json"\n'
        )
        log_path = tmp / "daemon.log"
        argv = [sys.executable, "-m", "daemon.cli", "--config", str(cfg), "run"]
        if self.args.intake_only:
            argv[1:3] = [__file__, "--serve-intake-only"]
        if self.args.profile_daemon:
            # cProfile sees the event-loop thread: SMTP sessions and the handler.
            argv[1:1] = ["-m", "cProfile", "-o", str(Path(self.args.profile_daemon).resolve())]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            try:
                wait_for_port(port, proc, START_TIMEOUT)
                cpu = tree_cpu(proc.pid)
                res = self.load(port)
                cpu = tree_cpu(proc.pid) - cpu
                ingested_during_load = _count_deliveries(tmp / "b.db")
                drain = self._drain(tmp, res.accepted)
            finally:
                stop_seconds = stop_process(proc)
        found = _account(tmp)
        events = _log_summary(log_path)
        extra: dict[str, Any] = {
            "server_cpu_s": round(cpu, 2),
            "ingested_during_load": ingested_during_load,
            **drain,
            "stored_or_spooled": found["total"],
            "spool_new": found["new"],
            "spool_cur": found["cur"],
            "spool_bad": found["bad"],
            "deliveries": found["deliveries"],
            "messages": found["messages"],
            "all_accepted_found": found["total"] == res.accepted,
            "exit_code": proc.returncode,
            "stop_seconds": round(stop_seconds, 2),
            "log_events": events,
        }
        return Run("buzon", res.accepted, res.failed, res.seconds, res.rate, res.detail, extra)

    def _drain(self, tmp: Path, accepted: int) -> dict[str, Any]:
        """Let the ingest runner work for up to --drain s; stop early when the spool is empty."""
        started = time.monotonic()
        before = _count_deliveries(tmp / "b.db")
        spool = tmp / "spool"
        last, last_change = (-1, -1), started
        limit = 0.0 if self.args.intake_only else self.args.drain
        while time.monotonic() - started < limit:
            waiting = _entry_count(spool / "new") + _entry_count(spool / "cur")
            if waiting == 0:
                break
            state = (waiting, _count_deliveries(tmp / "b.db"))
            if state != last:
                last, last_change = state, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                break  # no progress (e.g. no parser yet): do not wait out --drain
            time.sleep(0.5)
        seconds = time.monotonic() - started
        after = _count_deliveries(tmp / "b.db")
        return {
            "drain_seconds": round(seconds, 2),
            "ingested_after_load": after,
            "drain_rate": round((after - before) / seconds, 1) if seconds > 0 else 0.0,
            "drained_all": after >= accepted,
        }


def _cpu_ms(run: Run) -> float:
    cpu: float = run.extra.get("server_cpu_s", 0.0)
    return 1000 * cpu / run.accepted if run.accepted else 0.0


def parser_available() -> bool:
    try:
        import parsers
    except ImportError:
        return False
    return hasattr(parsers, "parse_message")


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=2000, help="messages per server per round")
    p.add_argument("--clients", type=int, default=20, help="concurrent SMTP sessions")
    p.add_argument("--size", type=int, default=4096, help="payload bytes per message")
    p.add_argument("--rounds", type=int, default=3, help="baseline+buzon pairs (order alternates)")
    p.add_argument("--loadgen", choices=("auto", "smtp-source", "aiosmtplib"), default="auto")
    p.add_argument(
        "--keep-connection",
        action="store_true",
        help="smtp-source -d: reuse one connection per client (aiosmtplib always does)",
    )
    p.add_argument("--drain", type=float, default=20.0, help="max seconds to let buzon ingest")
    p.add_argument("--timeout", type=float, default=150.0, help="max seconds for one load run")
    p.add_argument(
        "--tmpdir",
        metavar="DIR",
        help="where both servers write (default: the system temp dir); put it on the "
        "filesystem the production spool would use",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the daemon's temp dirs")
    p.add_argument(
        "--profile-daemon",
        metavar="FILE",
        help="run the daemon under cProfile and write its stats to FILE (slows it down)",
    )
    p.add_argument(
        "--intake-only",
        action="store_true",
        help="diagnostic: run buzon with its ingest runner disabled, to separate SMTP intake "
        "cost from the cost of ingesting concurrently (not how production runs)",
    )
    p.add_argument("--serve-baseline", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument(
        "--nice", type=int, default=19, help="[pipeline] nice of the daemon under test (19)"
    )
    p.add_argument("--serve-intake-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def _report(args: argparse.Namespace, loadgen: str, has_parser: bool, runs: list[Run]) -> None:
    base_rate = statistics.median(r.rate for r in runs if r.server == "baseline")
    buzon_rate = statistics.median(r.rate for r in runs if r.server == "buzon")
    base_cpu = statistics.median(_cpu_ms(r) for r in runs if r.server == "baseline")
    buzon_cpu = statistics.median(_cpu_ms(r) for r in runs if r.server == "buzon")
    ratio = buzon_rate / base_rate if base_rate else 0.0
    buzon_runs = [r for r in runs if r.server == "buzon"]
    print()
    print(f"{'server':<10} {'msg/s (median)':>15} {'CPU ms/msg (median)':>20}")
    print(f"{'baseline':<10} {base_rate:>15.1f} {base_cpu:>20.2f}")
    print(f"{'buzon':<10} {buzon_rate:>15.1f} {buzon_cpu:>20.2f}")
    print("(server CPU during the load, child processes included", end="")
    print(")" if args.intake_only else "; for buzon it includes the concurrent ingest work)")
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"ratio buzon/baseline: {ratio:.2f} (goal >= 0.80: {verdict})")
    for r in buzon_runs:
        x = r.extra
        print(
            f"buzon accounting: accepted {r.accepted}, found {x['stored_or_spooled']} "
            f"(deliveries {x['deliveries']}, spool new {x['spool_new']} cur {x['spool_cur']} "
            f"bad {x['spool_bad']}) -> {'OK' if x['all_accepted_found'] else 'MISMATCH'}; "
            f"ingested during load {x['ingested_during_load']}, after {x['drain_seconds']} s "
            f"drain {x['ingested_after_load']}; exit {x['exit_code']} in {x['stop_seconds']} s"
        )
        if x["log_events"]:
            print(f"  daemon warnings/errors: {x['log_events']}")
    print(
        json.dumps(
            {
                "bench": "smtp_intake",
                "loadgen": loadgen,
                "keep_connection": args.keep_connection,
                "intake_only": args.intake_only,
                "messages": args.messages,
                "clients": args.clients,
                "size": args.size,
                "parser_present": has_parser,
                "tmpdir": args.tmpdir or tempfile.gettempdir(),
                "baseline_msgs_per_s": round(base_rate, 1),
                "buzon_msgs_per_s": round(buzon_rate, 1),
                "ratio": round(ratio, 3),
                "baseline_cpu_ms_per_msg": round(base_cpu, 3),
                "buzon_cpu_ms_per_msg": round(buzon_cpu, 3),
                "all_accepted_found": all(r.extra["all_accepted_found"] for r in buzon_runs),
                "runs": [asdict(r) for r in runs],
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-intake-only"]:
        return _serve_intake_only(argv[1:])
    p = _arg_parser()
    args = p.parse_args(argv)
    if args.serve_baseline:
        return asyncio.run(_serve_baseline(Path(args.serve_baseline), args.port))
    for name in ("messages", "clients", "size", "rounds"):
        if not 1 <= getattr(args, name) <= 100_000:
            p.error(f"--{name} must be between 1 and 100000")

    smtp_source = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if os.access("/usr/sbin/smtp-source", os.X_OK) else None
    )
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "smtp-source" if smtp_source else "aiosmtplib"
    if loadgen == "smtp-source" and not smtp_source:
        p.error("smtp-source is not installed (Debian package postfix); use --loadgen aiosmtplib")
    bench = Bench(args, loadgen, smtp_source)
    has_parser = parser_available()
    print(
        f"load: {loadgen}{' -d' if args.keep_connection and loadgen == 'smtp-source' else ''}, "
        f"{args.clients} clients, {args.messages} messages of {args.size} B per run, "
        f"{args.rounds} round(s); parser present: {has_parser}; "
        f"files under {args.tmpdir or tempfile.gettempdir()}"
    )
    if args.intake_only:
        print("note: --intake-only: buzon's ingest runner is DISABLED (diagnostic, not production)")
    else:
        print("note: buzon's ingest runner consumes the spool during the load (as in production)")

    runs: list[Run] = []
    for i in range(args.rounds):
        order = (bench.baseline, bench.buzon) if i % 2 == 0 else (bench.buzon, bench.baseline)
        for fn in order:
            run = fn()
            runs.append(run)
            print(
                f"  round {i + 1} {run.server:<8} {run.accepted:>6} accepted "
                f"{run.failed:>4} failed {run.seconds:7.2f} s {run.rate:8.1f} msg/s "
                f"{_cpu_ms(run):6.2f} server CPU ms/msg"
                + (f"  [{run.detail}]" if run.detail else "")
            )
    _report(args, loadgen, has_parser, runs)
    ok = all(r.failed == 0 for r in runs) and all(
        r.extra["all_accepted_found"] for r in runs if r.server == "buzon"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
