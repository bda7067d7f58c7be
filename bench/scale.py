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

Run from the repository root (PostgreSQL must accept ``postgres`` on 127.0.0.1)::

    .venv/bin/python bench/scale.py                                   # 1,2,3 x 300 s at 200/s
    .venv/bin/python bench/scale.py --duration 30                     # a quick look
    .venv/bin/python bench/scale.py --duration 30 --text natural      # real mail's lengths
    .venv/bin/python bench/scale.py --instances 1 --duration 30 --profile /tmp/prof

The last line printed is one JSON object with all the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import pstats
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from benchlib import PG_ADMIN, libpq, scratch_database, tree_cpu
from triage.similarity import STOP_WORDS, fingerprint, informative

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
RCPT = "soporte@example.com"
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


# --- messages ------------------------------------------------------------------------------


class Corpus:
    """Deterministic messages: each a new matter, from one of ``customers`` senders.

    Content words are random consonant-vowel strings from a 20,000-word vocabulary: two
    messages share few stems, so duplicate and incident matching compare candidates
    (their real cost) but join nothing; every message opens, classifies and stamps a ticket.

    ``text="long"`` (the default, as in every earlier run): 64 content words a message and
    no stop words, so every fingerprint has 64 stems. ``text="natural"``: each message
    takes the shape of a support message of ``tests/data/triage/tune.jsonl`` drawn at
    random, as many content words as its fingerprint has stems and its other words stop
    words, so fingerprints are as long as real support mail's (median 18 stems). The
    incident scan's cost grows faster than the stems (``bench/incident_scan.py``).
    """

    def __init__(self, run: str, customers: int, seed: int = 8, text: str = "long") -> None:
        if text not in TEXTS:
            raise ValueError(f"text must be one of {', '.join(TEXTS)}, not {text!r}")
        self.run = run
        self.customers = customers
        rnd = random.Random(seed)
        cons, vow = "bcdfglmnprstvz", "aeiou"
        self.words = [
            "".join(rnd.choice(cons) + rnd.choice(vow) for _ in range(rnd.randint(2, 4)))
            for _ in range(20_000)
        ]
        self.rnd = rnd
        self.shapes = natural_shapes() if text == "natural" else []
        self.stop = sorted(w for w in STOP_WORDS if w.isascii())

    def message_id(self, seq: int) -> str:
        return f"scale-{self.run}-{seq}@loadgen.example.net"

    def sender(self, seq: int) -> str:
        return f"cliente{seq % self.customers}@empresa{seq % 97}.example.net"

    def text(self, words: int = 64) -> tuple[str, str]:
        """A new matter's subject (its first 4 words) and body lines (10 words each):
        ``words`` content words, or with natural text a drawn message's shape."""
        if self.shapes:
            stems, total = self.rnd.choice(self.shapes)
            w = self.rnd.sample(self.words, stems)
            w += [self.rnd.choice(self.stop) for _ in range(total - stems)]
            self.rnd.shuffle(w)
        else:
            w = self.rnd.sample(self.words, words)
        lines = [" ".join(w[i : i + 10]) for i in range(4, len(w), 10)]
        return " ".join(w[:4]).capitalize(), ".\r\n".join(lines)

    def make(self, seq: int) -> bytes:
        subject, text = self.text()
        body = "Hola,\r\n\r\n" + text + ".\r\n\r\nGracias,\r\nCliente\r\n"
        return (
            f"From: Cliente {seq % self.customers} <{self.sender(seq)}>\r\n"
            f"To: Soporte <{RCPT}>\r\n"
            f"Subject: {subject}\r\n"
            f"Message-ID: <{self.message_id(seq)}>\r\n"
            "Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n" + body
        ).encode()


TEXTS = ("long", "natural")
TUNE = REPO / "tests" / "data" / "triage" / "tune.jsonl"


def natural_shapes() -> list[tuple[int, int]]:
    """(fingerprint stems, words) of each message of ``TUNE`` that is long enough to match:
    the lengths of the support mail the triage model was tuned on (es, bg)."""
    shapes = []
    for line in TUNE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        fp = fingerprint(row["subject"], row["body"])
        if informative(fp):
            stems = fp.count(" ") + 1
            shapes.append((stems, max(stems, len(f"{row['subject']} {row['body']}".split()))))
    return shapes


# --- PostgreSQL ----------------------------------------------------------------------------


def baseline_inserts(url: str, corpus: Corpus, seconds: float) -> float:
    """Rows/s of one connection inserting one message-sized row per committed transaction."""
    with psycopg.connect(libpq(url)) as conn:
        conn.execute(
            "CREATE TABLE scale_baseline (id bigserial PRIMARY KEY, message_id text UNIQUE, "
            "raw bytea, at timestamptz)"
        )
        conn.commit()
        raws = [corpus.make(i) for i in range(200)]
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute(
                "INSERT INTO scale_baseline (message_id, raw, at) VALUES (%s, %s, now())",
                (f"b{n}", raws[n % len(raws)]),
            )
            conn.commit()
            n += 1
        rate = n / (time.perf_counter() - started)
        conn.execute("DROP TABLE scale_baseline")
        conn.commit()
    return rate


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


def backend_cpu(url: str) -> float:
    """CPU seconds of the PostgreSQL backends serving the scratch database now."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        ]
    return sum(tree_cpu(pid) for pid in pids)


# --- the daemons ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


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


# --- the load ------------------------------------------------------------------------------


@dataclass
class Sent:
    seq: int
    due: float
    accepted: float = 0.0  # epoch seconds the 250 was read; 0 = not accepted
    error: str = ""


async def _client(
    port: int, jobs: asyncio.Queue[tuple[Sent, bytes] | None], corpus: Corpus
) -> None:
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=60)
    await smtp.connect()
    try:
        while (job := await jobs.get()) is not None:
            sent, raw = job
            try:
                await smtp.sendmail(corpus.sender(sent.seq), [RCPT], raw)
                sent.accepted = time.time()
            except (aiosmtplib.SMTPException, OSError) as exc:
                sent.error = f"{type(exc).__name__}: {exc}"[:200]
                with contextlib.suppress(Exception):
                    await smtp.quit()
                smtp = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=60)
                await smtp.connect()
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()


async def _load(
    ports: list[int], rate: float, duration: float, clients: int, corpus: Corpus
) -> list[Sent]:
    queues: list[asyncio.Queue[tuple[Sent, bytes] | None]] = [asyncio.Queue() for _ in ports]
    tasks = [
        asyncio.create_task(_client(port, q, corpus))
        for port, q in zip(ports, queues, strict=True)
        for _ in range(clients)
    ]
    await asyncio.sleep(0.5)  # connections up before the clock starts
    total = int(rate * duration)
    out: list[Sent] = []
    t0 = time.time()
    for seq in range(total):
        due = t0 + seq / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = Sent(seq, due)
        out.append(sent)
        queues[seq % len(ports)].put_nowait((sent, corpus.make(seq)))
    for q in queues:
        for _ in range(clients):
            q.put_nowait(None)
    await asyncio.gather(*tasks)
    return out


# --- one round -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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


def start_all(instances: list[Instance], env: dict[str, str]) -> None:
    first, *others = instances
    first.start(env)
    first.wait_for('"spool.recovered"')  # migrated before the others look
    for inst in others:
        inst.start(env)
    for inst in instances:
        inst.wait_for('"daemon.ready"')
    time.sleep(1.0)


@dataclass
class Window:
    """What happened while the load ran and drained."""

    sent: list[Sent]
    started: float
    load_end: float
    drained: float
    spool_at_end: int
    cpu: float  # daemon process trees, seconds
    pg_cpu: float  # their PostgreSQL backends, seconds
    by_process: dict[str, float]


def load_and_drain(
    instances: list[Instance], url: str, args: argparse.Namespace, corpus: Corpus
) -> Window:
    pids = [i.proc.pid for i in instances if i.proc]
    cpu0, pg0 = sum(map(tree_cpu, pids)), backend_cpu(url)
    parts0 = [cpu_by_depth(pid) for pid in pids]
    started = time.time()
    sent = asyncio.run(
        _load([i.port for i in instances], args.rate, args.duration, args.clients, corpus)
    )
    load_end = time.time()
    depth = sum(i.spool_depth() for i in instances)
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and sum(i.spool_depth() for i in instances):
        time.sleep(0.2)
    time.sleep(1.0)  # the last log lines
    drained = time.time()
    parts1 = [cpu_by_depth(pid) for pid in pids]
    by_process = {
        k: sum(b[k] - a[k] for a, b in zip(parts0, parts1, strict=True))
        for k in ("main", "ingest", "parser")
    }
    cpu, pg = sum(map(tree_cpu, pids)) - cpu0, backend_cpu(url) - pg0
    return Window(sent, started, load_end, drained, depth, cpu, pg, by_process)


def db_counts(url: str) -> dict[str, Any]:
    with psycopg.connect(libpq(url)) as conn:
        messages = conn.execute(
            "SELECT count(*) FROM messages WHERE message_id LIKE 'scale-%%'"
        ).fetchone()
        stamped = conn.execute(
            "SELECT count(DISTINCT t.id), count(*) FROM messages m JOIN tickets t "
            "ON m.ticket_id = t.id WHERE m.message_id LIKE 'scale-%%' AND t.sla_policy <> ''"
        ).fetchone()
        outbox = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
    return {
        "db_messages": messages[0] if messages else 0,
        "db_stamped_tickets": stamped[0] if stamped else 0,
        "db_stamped_messages": stamped[1] if stamped else 0,
        "outbox": {str(state): int(n) for state, n in outbox},
    }


def run_round(n: int, args: argparse.Namespace, tmp: Path, relay: int, run: str) -> dict[str, Any]:
    corpus = Corpus(f"{run}n{n}", args.customers, text=args.text)
    env = daemon_env(n, args, tmp)
    with scratch_database(args.pg, "buzon_scale") as (url, _name):
        baseline = baseline_inserts(url, corpus, args.baseline) if args.baseline > 0 else 0.0
        instances = [Instance(tmp / f"n{n}-{i}", free_port()) for i in range(n)]
        for inst in instances:
            inst.write_config(url, relay, args.parse_workers, args.nice, args.incident_candidates)
        try:
            start_all(instances, env)
            w = load_and_drain(instances, url, args, corpus)
        finally:
            codes = [inst.stop() for inst in instances]
        spool_left = sum(i.spool_depth(("new", "cur", "bad")) for i in instances)
        counts = db_counts(url)
    stamps = stamped_times(instances)
    accepted = [s for s in w.sent if s.accepted]
    lat: list[float] = []
    in_window = 0
    for s in accepted:
        at = stamps.get(corpus.message_id(s.seq), (float("inf"), ""))[0]
        lat.append(at - s.accepted)
        in_window += at <= w.load_end
    last_stamp = max((at for at, _ in stamps.values()), default=w.load_end)
    window, n_acc = w.load_end - w.started, max(1, len(accepted))
    return {
        "instances": n,
        "offered_per_s": round(len(w.sent) / args.duration, 1),
        "accepted": len(accepted),
        "refused": len(w.sent) - len(accepted),
        "accepted_per_s": round(len(accepted) / window, 1),
        "achieved_per_s": round(in_window / window, 1),
        "p50_s": round(percentile(lat, 0.50), 3),
        "p99_s": round(percentile(lat, 0.99), 3),
        "max_s": round(max(lat, default=float("nan")), 3),
        "not_stamped": sum(1 for x in lat if x == float("inf")),
        "backlog_at_end": len(accepted) - in_window,
        "spool_at_end": w.spool_at_end,
        "drain_s": round(max(0.0, last_stamp - w.load_end), 1),
        "daemon_cpu_ms_per_msg": round(w.cpu * 1000 / n_acc, 2),
        "pg_cpu_ms_per_msg": round(w.pg_cpu * 1000 / n_acc, 2),
        "cpu_ms_per_msg_by_process": {
            k: round(v * 1000 / n_acc, 2) for k, v in w.by_process.items()
        },
        "wall_s": round(w.drained - w.started, 1),
        **counts,
        "exit_codes": codes,
        "spool_left": spool_left,
        "baseline_inserts_per_s": round(baseline, 1),
        "errors": sorted({s.error for s in w.sent if s.error})[:5],
    }


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
