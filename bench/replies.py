"""A reply's cost as its ticket grows: the last replies of a long thread against its first.

One customer opens a ticket and writes ``--replies`` more mails on it (In-Reply-To the
first), each stored by the daemon's own parts (``daemon.parts.open_parts``: spool, parser
worker, the whole ingest pipeline with SLA re-stamps and chase checks) on a fresh SQLite
file, or a scratch PostgreSQL database with ``--pg``. The CPU time of each
``IngestProcessor.process`` is taken in this process (the parse in the worker is not in
it). Reported: the median of the first ``--window`` replies (the baseline, same run) and
of the last ``--window``, and their ratio. A reply whose work does not grow with the
ticket's history has a ratio near 1; one that reads the history back grows with it.

    .venv/bin/python bench/replies.py                       # 120 replies, SQLite
    .venv/bin/python bench/replies.py --replies 300 --pg    # on 127.0.0.1:5432

The last line printed is one JSON object with the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import PG_ADMIN, daemon_config, scratch_database


def mail(n: int) -> bytes:
    """The first mail (``n`` 0) or the ``n``-th reply to it, each with a body of its own."""
    reply = n > 0
    return (
        "From: Ana Ruiz <ana@cliente.es>\r\n"
        "To: soporte@example.com\r\n"
        f"Subject: {'Re: ' if reply else ''}El correo no llega\r\n"
        f"Message-ID: <{'r' + str(n) if reply else 'first'}@cliente.es>\r\n"
        + ("In-Reply-To: <first@cliente.es>\r\n" if reply else "")
        + "Date: Mon, 7 Dec 2026 10:00:00 +0100\r\n\r\n"
        f"Sigue sin llegar nada a la bandeja de entrada, intento {n}.\r\n"
    ).encode()


def run(replies: int, database: str) -> list[float]:
    """CPU seconds of each reply's processing, in order."""
    from daemon.parts import open_parts

    tmp = Path(tempfile.mkdtemp(prefix="buzon-bench-replies-"))
    try:
        with open_parts(daemon_config(tmp, database), recover=False) as parts:
            if database:
                parts.db.upgrade()
            parts.parsers.parse(mail(0))  # the parser worker is booted, not timed
            cpu: list[float] = []
            for n in range(replies + 1):
                entry = parts.spool.put(
                    mail(n), {"source": "file", "received_at": datetime.now(UTC).isoformat()}
                )
                claimed = parts.spool.claim(entry.id)
                assert claimed is not None
                started = time.process_time()
                outcome = parts.processor.process(claimed)
                cpu.append(time.process_time() - started)
                if outcome.outcome != "stored":
                    raise SystemExit(f"message {n} was {outcome.outcome}: {outcome.reason}")
            return cpu[1:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replies", type=int, default=120)
    ap.add_argument("--window", type=int, default=20, help="replies in each median")
    ap.add_argument("--pg", nargs="?", const=PG_ADMIN, default="", metavar="ADMIN_URL")
    args = ap.parse_args()
    from daemon import logging as logmod

    # Unconfigured, structlog prints every info line to stdout inside the timed region.
    logmod.configure("warning", "json", stream=sys.stderr)
    if args.replies < 2 * args.window:
        ap.error("--replies must be at least twice --window")
    database = scratch_database(args.pg, "buzon_bench_replies") if args.pg else None
    with database or contextlib.nullcontext() as made:
        cpu = run(args.replies, made[0] if made else "")
    first = statistics.median(cpu[: args.window])
    last = statistics.median(cpu[-args.window :])
    w, n = args.window, args.replies
    print(f"replies 1-{w}: {1000 * first:.2f} ms CPU (median, baseline)")
    print(f"replies {n - w + 1}-{n}: {1000 * last:.2f} ms CPU (median)")
    print(f"ratio last/first: {last / first:.2f} (near 1: a reply does not grow with its ticket)")
    out: dict[str, Any] = {
        "bench": "replies",
        "database": "postgresql" if args.pg else "sqlite",
        "replies": n,
        "window": w,
        "first_ms": round(1000 * first, 3),
        "last_ms": round(1000 * last, 3),
        "ratio": round(last / first, 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
