"""One round of the scale bench: N daemons on a scratch PostgreSQL database, the open-loop
load, the drain, and the numbers (rates, latencies, CPU, accounting, baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchlib import free_port, libpq, scratch_database, tree_cpu

# isort: split
from scale_daemons import HOST, Instance, cpu_by_depth, daemon_env, stamped_times, start_all
from scale_mail import RCPT, Corpus


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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
