"""The scale bench's daemons: each a real ``buzon run`` with its own config, spool and
log; the relay their acknowledgements go to; what they spent and logged.

How they are started and stopped is the daemon's own (``python -m daemon.cli --config
… run``, SIGTERM); the optional profiling hook is a ``sitecustomize`` on their path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import REPO, free_port

HOST = "127.0.0.1"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

SITECUSTOMIZE = '''
"""Bench-only (bench/scale.py --profile): run ingest worker threads under cProfile."""
import cProfile, os, threading, time
_DIR = os.environ.get("BUZON_BENCH_PROFILE_DIR")
if _DIR:
    _run = threading.Thread.run
    def run(self):
        if not self.name.startswith("ingest-"):
            return _run(self)
        cpu = os.environ.get("BUZON_BENCH_PROFILE_CLOCK") == "cpu"
        prof = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        prof.enable()
        try:
            return _run(self)
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(_DIR, f"{os.getpid()}-{self.name}.prof"))
    threading.Thread.run = run
'''


def daemon_env(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    """The daemons' environment: the repository on the path, plus the profiling hook."""
    if not args.profile:
        return {"PYTHONPATH": str(REPO)}
    hook = tmp / "profhook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    prof_dir = Path(args.profile).resolve() / f"n{n}"
    prof_dir.mkdir(parents=True, exist_ok=True)
    return {
        "PYTHONPATH": f"{hook}:{REPO}",
        "BUZON_BENCH_PROFILE_DIR": str(prof_dir),
        "BUZON_BENCH_PROFILE_CLOCK": args.profile_clock,
    }


@dataclass
class Instance:
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "buzon.log"

    def write_config(
        self, database: str, relay: int, workers: int, nice: int, candidates: int = 0
    ) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        matching = f"[matching]\nincident_candidates = {candidates}\n" if candidates else ""
        path = self.root / "buzon.toml"
        path.write_text(
            f'[storage]\ndatabase = "{database}"\nspool = "{self.root / "spool"}"\n'
            f'attachments = "{self.root / "att"}"\n'
            f'[smtp]\nlisten = "{HOST}:{self.port}"\nhostname = "scale.buzon.invalid"\n'
            'domains = ["example.com"]\n'
            f"[pipeline]\nparse_workers = {workers}\nnice = {nice}\n"
            '[log]\nlevel = "info"\nformat = "json"\n'
            f'[outbound]\nrelay = "{HOST}:{relay}"\nfrom = "soporte@example.com"\n{matching}'
        )
        return path

    def start(self, env: dict[str, str]) -> None:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(self.root / "buzon.toml"), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **env},
        )
        out.close()

    def wait_for(self, needle: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and needle in self.log_path.read_text(errors="replace"):
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"daemon exited with {self.proc.returncode}:\n{tail}")
            time.sleep(0.1)
        raise SystemExit(f"timed out waiting for {needle} in {self.log_path}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def spool_depth(self, dirs: tuple[str, ...] = ("new", "cur")) -> int:
        spool = self.root / "spool"
        return sum(1 for d in dirs for p in (spool / d).glob("*") if p.is_file())


def stamped_times(instances: list[Instance]) -> dict[str, tuple[float, str]]:
    """Message-ID -> (epoch seconds the ingest logged it committed, event)."""
    out: dict[str, tuple[float, str]] = {}
    for inst in instances:
        with inst.log_path.open("rb") as f:
            for line in f:
                if b'"ticket.stamped"' not in line and b'"message.stored"' not in line:
                    continue
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                mid = str(e.get("message_id") or "").strip("<>")
                if not mid.startswith("scale-"):
                    continue
                at = datetime.fromisoformat(str(e["timestamp"])).timestamp()
                if e["event"] == "ticket.stamped" or mid not in out:
                    out[mid] = (at, str(e["event"]))
    return out


def start_all(instances: list[Instance], env: dict[str, str]) -> None:
    first, *others = instances
    first.start(env)
    first.wait_for('"spool.recovered"')  # migrated before the others look
    for inst in others:
        inst.start(env)
    for inst in instances:
        # READY comes before the ingest process has started its workers; the bench
        # measures the pipeline once every part of it is up.
        inst.wait_for('"daemon.ready"')
        inst.wait_for('"ingest.started"')
    time.sleep(1.0)


@contextlib.contextmanager
def relay_sink() -> Any:
    """Where acknowledgements go: Postfix's smtp-sink, else aiosmtpd in a thread."""
    port = free_port()
    sink = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if sink is not None:
        proc = subprocess.Popen(
            [sink, "-u", "nobody", "-c", f"{HOST}:{port}", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield port, "smtp-sink"
        finally:
            proc.terminate()
            proc.wait(10)
        return
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    controller = Controller(Sink(), hostname=HOST, port=port)
    controller.start()
    try:
        yield port, "aiosmtpd"
    finally:
        controller.stop()


def cpu_by_depth(pid: int) -> dict[str, float]:
    """CPU seconds of a daemon's processes by their place in its tree: the main process
    (SMTP, scheduler, outbox), its children (the ingest process), their children (parsers).
    A process's own time only; children that exited are left out."""
    tick = os.sysconf("SC_CLK_TCK")
    names = ("main", "ingest", "parser")
    out: dict[str, float] = dict.fromkeys(names, 0.0)
    todo = [(pid, 0)]
    while todo:
        p, depth = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[names[min(depth, 2)]] += (int(stat[11]) + int(stat[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [(int(c), depth + 1) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return out
