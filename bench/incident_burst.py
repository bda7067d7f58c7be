"""A burst of new matters on several instances: all one incident ("falla masiva") vs unrelated.

What is measured, per mode (``--modes same,unrelated``, each on a fresh scratch
PostgreSQL database ``buzon_burst_<hex>``, dropped at the end):

* **setup**: ``--instances`` OS processes (instances are processes), each with the
  daemon's own parts (``daemon.parts.open_parts``: migrated database, its own
  spool, parser pool, triager, ``[outbound]`` so acknowledgements are queued) on
  the one database. ``--messages`` mails are spooled before the clock starts,
  message ``i`` into instance ``i mod N``'s spool, so the burst is the backlog a
  spool holds after an outage wave. Each process warms its parser and triager,
  then all start together and process their spool with one worker
  (``IngestProcessor.process``: parse, then one transaction per message), as
  ``[pipeline] parse_workers = 1`` does.
* **mail**: every message opens a ticket of its own customer (``cliente<i>@…``).
  ``same``: a report of one mail outage in one of a dozen wordings (so triage links
  every ticket into one incident, the case several instances exist for);
  ``unrelated``: pseudo-words, a matter each (the candidates are still read and
  scored, nothing links).
* **numbers**: messages/s from start to the last commit (wall), the ratio
  same/unrelated (same run), the statements' own time per message by kind (from
  SQLAlchemy's cursor events, so a statement waiting for a row lock counts its
  wait), how long each transaction held the incident row after it updated it,
  and samples of ``pg_stat_activity`` (every ``--sample-ms``) of the burst's
  backends: what they were waiting for (``Lock/transactionid`` = another
  transaction's row lock) and on which statement.
* **correctness**: after the burst, each incident's ``ticket_count`` and
  ``customer_count`` against the tickets actually linked to it; a difference is
  a lost update. Every message must be stored and ticketed.

Run from the repository root (PostgreSQL must accept ``postgres`` on 127.0.0.1)::

    .venv/bin/python bench/incident_burst.py                        # 3 x 600, both modes
    .venv/bin/python bench/incident_burst.py --messages 300 --instances 2

The last line printed is one JSON object with all the numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg

from benchlib import PG_ADMIN, libpq, pseudo_words, scratch_database

RCPT = "soporte@example.com"

# One outage, a dozen wordings: different customers describe it in their own words.
OUTAGE = (
    "El correo no funciona: Outlook no puede enviar ni recibir, error de conexión al servidor.",
    "Desde hace un rato el correo no funciona, Outlook da error de conexión con el servidor.",
    "No funciona el correo, ni enviar ni recibir. Outlook error conexión servidor de correo.",
    "Outlook dice error de conexión al servidor y el correo no funciona para nadie.",
    "Nos falla el correo: error de conexión al servidor desde Outlook, no podemos enviar.",
    "El servidor de correo no responde, Outlook no conecta y no podemos enviar ni recibir.",
    "Ningún buzón recibe correo, Outlook da error de conexión al servidor de correo.",
    "Correo caído: error de conexión con el servidor, no se puede enviar ni recibir.",
)
SUBJECTS = ("Problema con el correo", "No funciona el correo", "Correo caído", "Error de correo")


def outage_mail(seq: int, rnd: random.Random) -> tuple[str, str]:
    body = " ".join(rnd.sample(OUTAGE, 2)) + f"\r\n\r\nGracias,\r\nCliente {seq}\r\n"
    return rnd.choice(SUBJECTS), body


class Words:
    """Random consonant-vowel words: two messages share few stems (bench/scale.py's mail)."""

    def __init__(self, rnd: random.Random) -> None:
        self.words = pseudo_words(rnd)

    def mail(self, seq: int, rnd: random.Random) -> tuple[str, str]:
        words = rnd.sample(self.words, 64)
        lines = [" ".join(words[i : i + 10]) for i in range(4, 64, 10)]
        body = "Hola,\r\n\r\n" + ".\r\n".join(lines) + f".\r\n\r\nGracias,\r\nCliente {seq}\r\n"
        return " ".join(words[:4]).capitalize(), body


def corpus(mode: str, count: int, run: str, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    words = Words(rnd) if mode == "unrelated" else None
    raws = []
    for seq in range(count):
        subject, body = words.mail(seq, rnd) if words else outage_mail(seq, rnd)
        sender = f"cliente{seq}@empresa{seq}.example.net"  # a customer each
        raws.append(
            (
                f"From: Cliente {seq} <{sender}>\r\nTo: Soporte <{RCPT}>\r\n"
                f"Subject: {subject}\r\nMessage-ID: <burst-{run}-{seq}@example.net>\r\n"
                "Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n" + body
            ).encode()
        )
    return raws


# --- one instance (a process of its own) ----------------------------------------------------


def _kind(statement: str) -> str:
    """``UPDATE incidents``, ``INSERT INTO tickets``, ``SELECT tickets`` ...: a statement's kind."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    if verb == "SELECT":
        up = [w.upper() for w in words]
        table = words[up.index("FROM") + 1] if "FROM" in up else "?"
        return f"SELECT {table}"
    if verb in ("INSERT", "DELETE"):
        return f"{verb} {words[2] if len(words) > 2 else '?'}"
    if verb == "UPDATE":
        return f"UPDATE {words[1] if len(words) > 1 else '?'}"
    return verb


def instance_main(cfg_path: str, ready: Event, go: Event, results: Queue[dict[str, Any]]) -> None:
    from sqlalchemy import event

    from daemon import logging as logmod
    from daemon.config import load
    from daemon.parts import open_parts

    cfg = load(cfg_path)
    logmod.configure("error", "json")
    spent: Counter[str] = Counter()
    count: Counter[str] = Counter()
    holds: list[float] = []
    state: dict[str, float] = {}

    with open_parts(cfg, recover=False) as parts:

        @event.listens_for(parts.db.engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info["bench_t0"] = time.perf_counter()

        @event.listens_for(parts.db.engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            t0 = conn.info.pop("bench_t0", None)
            kind = _kind(statement)
            if t0 is not None:
                spent[kind] += time.perf_counter() - t0
                count[kind] += 1
            if kind == "UPDATE incidents" and "held_from" not in state:
                state["held_from"] = t0 or time.perf_counter()

        @event.listens_for(parts.db.engine, "commit")
        def _commit(conn: Any) -> None:
            state["commit_t0"] = time.perf_counter()

        parts.parsers.start()
        parts.triager()  # rules and language model loaded before the clock
        ready.set()
        go.wait()
        outcomes: Counter[str] = Counter()
        commit_s = 0.0
        started = time.perf_counter()
        while True:
            pending = parts.spool.pending()
            if not pending:
                break
            for entry_id in pending:
                entry = parts.spool.claim(entry_id)
                if entry is None:
                    continue
                state.clear()
                out = parts.processor.process(entry)
                done = time.perf_counter()
                outcomes[out.outcome] += 1
                if "commit_t0" in state:
                    commit_s += done - state["commit_t0"]
                if "held_from" in state:
                    holds.append(done - state["held_from"])
        elapsed = time.perf_counter() - started
    results.put(
        {
            "elapsed_s": elapsed,
            "finished_at": time.time(),
            "outcomes": dict(outcomes),
            "statement_s": dict(spent),
            "statement_n": dict(count),
            "commit_s": commit_s,
            "holds": holds,
        }
    )


# --- the run -------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Samples what the burst's backends are doing, every ``interval`` seconds."""

    def __init__(self, url: str, name: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.interval = libpq(url), name, interval
        self.stopping = threading.Event()
        self.samples: Counter[tuple[str, str]] = Counter()
        self.ticks = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.wait(self.interval):
                rows = conn.execute(
                    "SELECT coalesce(wait_event_type || '/' || wait_event, 'CPU or network'), "
                    "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() AND state = 'active'",
                    (self.name,),
                ).fetchall()
                self.ticks += 1
                for wait, query in rows:
                    self.samples[(wait, query)] += 1


def write_config(root: Path, url: str) -> Path:
    root.mkdir(parents=True)
    path = root / "buzon.toml"
    path.write_text(
        f'[storage]\ndatabase = "{url}"\nspool = "{root / "spool"}"\n'
        f'attachments = "{root / "att"}"\n'
        '[smtp]\nhostname = "burst.buzon.invalid"\ndomains = ["example.com"]\n'
        '[log]\nlevel = "error"\nformat = "json"\n'
        '[outbound]\nrelay = "127.0.0.1:9"\nfrom = "soporte@example.com"\n'
    )
    return path


def db_checks(url: str) -> dict[str, Any]:
    with psycopg.connect(libpq(url)) as conn:
        tickets, linked = conn.execute(
            "SELECT count(*), count(incident_id) FROM tickets"
        ).fetchone() or (0, 0)
        rows = conn.execute(
            "SELECT i.ref, i.ticket_count, i.customer_count, count(t.id), "
            "count(DISTINCT t.customer) FROM incidents i LEFT JOIN tickets t "
            "ON t.incident_id = i.id GROUP BY i.id ORDER BY i.id"
        ).fetchall()
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()
        acks = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return {
        "messages": messages[0] if messages else 0,
        "tickets": tickets,
        "linked": linked,
        "acks": acks[0] if acks else 0,
        "incidents": [
            {
                "ref": r[0],
                "ticket_count": r[1],
                "customer_count": r[2],
                "tickets": r[3],
                "customers": r[4],
            }
            for r in rows
        ],
        "counts_exact": all(r[1] == r[3] and r[2] == r[4] for r in rows),
    }


def run_mode(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from daemon.config import load
    from daemon.parts import open_parts

    run = uuid.uuid4().hex[:8]
    raws = corpus(mode, args.messages, run, args.seed)
    with scratch_database(args.pg, "buzon_burst") as (url, name):
        paths = [write_config(tmp / f"{mode}-{run}-{i}", url) for i in range(args.instances)]
        now = datetime.now(UTC).isoformat()
        for i, path in enumerate(paths):
            with open_parts(load(str(path)), recover=False) as parts:  # migrates, once
                mine = raws[i :: args.instances]
                meta = {
                    "source": "smtp",
                    "received_at": now,
                    "envelope": {"mail_from": "x@example.net", "rcpt_tos": [RCPT]},
                }
                for out in parts.spool.put_many([(raw, dict(meta)) for raw in mine]):
                    assert not isinstance(out, BaseException), out
        ctx = multiprocessing.get_context("spawn")
        go, results = ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in paths]
        procs = [
            ctx.Process(target=instance_main, args=(str(p), r, go, results), name=f"burst-{i}")
            for i, (p, r) in enumerate(zip(paths, readies, strict=True))
        ]
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(180):
                raise SystemExit("an instance did not start")
        sampler = Sampler(url, name, args.sample_ms / 1000)
        sampler.start()
        t0 = time.time()
        go.set()
        outs = [results.get(timeout=3600) for _ in procs]
        for p in procs:
            p.join(30)
        wall = max(o["finished_at"] for o in outs) - t0
        sampler.stopping.set()
        sampler.join()
        checks = db_checks(url)
    n = args.messages
    spent: Counter[str] = Counter()
    executed: Counter[str] = Counter()
    for o in outs:
        spent.update(o["statement_s"])
        executed.update(o["statement_n"])
    holds = sorted(h for o in outs for h in o["holds"])
    outcomes: Counter[str] = Counter()
    for o in outs:
        outcomes.update(o["outcomes"])
    waits: Counter[str] = Counter()
    for (wait, _), k in sampler.samples.items():
        waits[wait] += k
    return {
        "mode": mode,
        "wall_s": round(wall, 2),
        "msg_per_s": round(n / wall, 1),
        "outcomes": dict(outcomes),
        "statement_ms_per_msg": {k: round(v * 1000 / n, 2) for k, v in spent.most_common(12)},
        "statements_per_msg": {k: round(executed[k] / n, 2) for k, _ in spent.most_common(12)},
        "commit_ms_per_msg": round(sum(o["commit_s"] for o in outs) * 1000 / n, 2),
        "incident_row_held_ms": {
            "n": len(holds),
            "mean": round(sum(holds) * 1000 / len(holds), 2) if holds else None,
            # One link at a time holds the row: this is the most links a second can make.
            "cap_links_per_s": round(len(holds) / sum(holds), 1) if holds else None,
            "p50": round(holds[len(holds) // 2] * 1000, 2) if holds else None,
            "p99": round(holds[int(len(holds) * 0.99)] * 1000, 2) if holds else None,
        },
        "activity_ticks": sampler.ticks,
        "backend_waits": dict(waits.most_common()),
        "top_waits": [
            {"wait": w, "query": q, "samples": k} for (w, q), k in sampler.samples.most_common(8)
        ],
        "db": checks,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--modes", default="same,unrelated")
    ap.add_argument("--pg", default=PG_ADMIN, help="admin URL where CREATE DATABASE is issued")
    ap.add_argument("--sample-ms", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="buzon-burst-") as tmp:
        for mode in args.modes.split(","):
            r = run_mode(mode, args, Path(tmp))
            results.append(r)
            inc = r["db"]["incidents"]
            print(
                f"{mode:>9}: {args.messages} msgs, {args.instances} instances: "
                f"{r['wall_s']:.1f} s, {r['msg_per_s']:.1f} msg/s; outcomes {r['outcomes']}; "
                f"incidents {len(inc)} linking {r['db']['linked']} of {r['db']['tickets']} "
                f"tickets; counts exact: {r['db']['counts_exact']}"
            )
            print(f"           statements ms/msg: {r['statement_ms_per_msg']}")
            print(f"           statements per msg: {r['statements_per_msg']}")
            print(
                f"           commit ms/msg {r['commit_ms_per_msg']}; incident row held "
                f"{r['incident_row_held_ms']}"
            )
            print(f"           backend samples ({r['activity_ticks']} ticks): {r['backend_waits']}")
            for w in r["top_waits"]:
                print(f"             {w['samples']:>6}  {w['wait']:<28} {w['query']}")
            for i in inc[:5]:
                print(f"           incident {i}")
    by = {r["mode"]: r for r in results}
    summary: dict[str, Any] = {"messages": args.messages, "instances": args.instances}
    if "same" in by and "unrelated" in by:
        ratio = by["same"]["msg_per_s"] / by["unrelated"]["msg_per_s"]
        summary["same_over_unrelated"] = round(ratio, 2)
        print(f"ratio same/unrelated msg/s: {ratio:.2f}")
    summary["modes"] = results
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
