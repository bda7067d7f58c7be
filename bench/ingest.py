"""Ingest throughput: spool -> parse -> store -> ticket, against mail-parser's raw parse rate.

What is measured, in one process on the same in-memory corpus:

* **baseline**: ``mailparser.parse_from_bytes(raw)`` over every message (the MIME
  parse Buzón's parser builds on, with no I/O at all).
* **parser**: ``parsers.parse_message(raw)`` called directly in this process, to
  separate Buzón's parse cost from its storage cost.
* **buzon**: the daemon's own parts (``daemon.app.open_parts``) on a fresh SQLite
  database, spool and blob store in a temp dir. Messages are spooled durably with
  ``Spool.put_many`` in batches of ``--batch`` (as ``buzon ingest`` does), then each
  is claimed and run through ``IngestProcessor.process`` (parse in the parser
  worker process, dedupe, store, attachments, thread, SLA stamp, commit, spool
  cleared). Timed end to end; the spooling part is also reported on its own.
  With ``--pg`` the database is a scratch PostgreSQL one (made and dropped each
  round) instead of SQLite: the CPU this process spends a message is then the
  ingest process's on a scaled-out desk, without the SMTP and outbox around it.

The corpus is generated deterministically from ``--seed``: plain text,
multipart/alternative with HTML, small base64 attachments, replies with
In-Reply-To/References to earlier messages of the same customer, RFC 2047
non-ASCII subjects, and exact duplicates. Every phase runs ``--rounds`` times
(default 3, a fresh database each time) and the medians are reported, because
this shared 2-core VM is noisy. Peak RSS (``getrusage``) is reported for this
process and for its finished children (the parser workers).

Run from the repository root::

    .venv/bin/python bench/ingest.py                    # 2000 messages
    .venv/bin/python bench/ingest.py --messages 500 --profile 25
    .venv/bin/python bench/ingest.py --messages 1000 --pg      # on 127.0.0.1:5432

``--profile N`` runs one more, separate pass of the buzon phase under cProfile
and prints the N most expensive functions (the timed numbers are not profiled).
The last line printed is one JSON object with all the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from benchlib import PG_ADMIN, daemon_config, scratch_database

SUPPORT = "soporte@example.com"
START = datetime(2026, 11, 16, 8, 30, tzinfo=UTC)
SETTLED = ("stored", "duplicate", "quarantined")  # anything else: the run is not valid

SUBJECTS_ASCII = (
    "No puedo enviar correos desde Outlook",
    "Error 500 en la tienda online",
    "Consulta sobre la factura de octubre",
    "El panel de control no carga",
    "Cambio de plan de hosting",
    "Certificado SSL caducado",
    "Copia de seguridad de la base de datos",
    "DNS no resuelve el dominio nuevo",
)
SUBJECTS_UTF8 = (
    "¿Cuándo se renueva el dominio?",
    "Falla masiva: ningún buzón recibe correo",
    "Проблем с хостинга — сайтът не се отваря",  # noqa: RUF001
    "Не мога да вляза в контролния панел",  # noqa: RUF001
    "Migración del sitio — urgente pero no crítico",
    "Contraseña olvidada del correo electrónico",
    "Фактура за ноември",
    "Ñandú: acentos y eñes en el asunto",
)
PARAGRAPHS = (
    "Buenos días, desde esta mañana no podemos enviar correos desde ninguna cuenta "
    "de la oficina. El cliente de correo muestra un error de autenticación.",
    "Hemos revisado la contraseña y es correcta. Adjunto una captura del error por si "
    "les sirve para localizar el problema.",
    "Здравейте, от вчера сайтът ни връща грешка 500 при опит за поръчка. Моля, "
    "проверете какво се случва със сървъра.",  # noqa: RUF001
    "La tienda está caída y perdemos ventas, pero el correo funciona con normalidad.",
    "¿Podrían indicarnos cuándo vence el certificado y si la renovación es automática?",
    "Gracias de antemano por la ayuda. Un saludo,\nMaría",
    "> El 12/11/2026, soporte escribió:\n> ¿Nos puede indicar el dominio afectado?\n"
    "El dominio es tienda-ejemplo.es",
)


def _chunks(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def make_corpus(count: int, seed: int) -> tuple[list[bytes], Counter[str]]:
    """A deterministic mix of realistic support mail; returns the raws and the kind counts."""
    rng = random.Random(seed)
    customers = [
        (f"Cliente {i}", f"user{i}@cliente{i % 41}.example.net") for i in range(max(10, count // 8))
    ]
    originals: list[tuple[str, str, str, str]] = []  # (message-id, name, addr, subject)
    raws: list[bytes] = []
    kinds: Counter[str] = Counter()
    for i in range(count):
        roll = rng.random()
        if raws and roll < 0.05:
            raws.append(raws[rng.randrange(len(raws))])  # an exact re-delivery
            kinds["duplicate"] += 1
            continue
        msg = EmailMessage(policy=policy.SMTP)
        mid = f"<{seed}.{i}.{rng.getrandbits(32):08x}@mail.cliente.example.net>"
        if originals and roll < 0.25:
            target_mid, name, addr, subject = originals[rng.randrange(len(originals))]
            msg["Subject"] = f"Re: {subject}"
            msg["In-Reply-To"] = target_mid
            msg["References"] = target_mid
            kind = "reply"
        else:
            name, addr = customers[rng.randrange(len(customers))]
            non_ascii = rng.random() < 0.35
            subject = rng.choice(SUBJECTS_UTF8 if non_ascii else SUBJECTS_ASCII)
            msg["Subject"] = subject
            originals.append((mid, name, addr, subject))
            kind = "utf8-subject" if non_ascii else "plain"
        msg["From"] = f"{name} <{addr}>"
        msg["To"] = SUPPORT
        msg["Date"] = format_datetime(START + timedelta(seconds=37 * i))
        msg["Message-ID"] = mid
        text = "\n\n".join(rng.sample(PARAGRAPHS, rng.randint(1, 4)))
        msg.set_content(text)
        shape = rng.random()
        if shape < 0.3:
            html = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
            msg.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
            kinds["html"] += 1
        elif shape < 0.5:
            payload = rng.randbytes(rng.randint(2048, 6144))
            msg.add_attachment(
                payload, maintype="application", subtype="pdf", filename=f"captura-{i}.pdf"
            )
            kinds["attachment"] += 1
        kinds[kind] += 1
        raws.append(msg.as_bytes())
    return raws, kinds


def rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def bench_mailparser(raws: Sequence[bytes]) -> float:
    import mailparser

    started = time.perf_counter()
    for raw in raws:
        mailparser.parse_from_bytes(raw)
    return time.perf_counter() - started


def bench_parser(raws: Sequence[bytes]) -> float | None:
    try:
        from parsers import parse_message  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    started = time.perf_counter()
    for raw in raws:
        parse_message(raw)
    return time.perf_counter() - started


def bench_buzon(
    raws: Sequence[bytes], batch: int, tmpdir: str | None, pg: str = ""
) -> dict[str, Any]:
    """Spool in batches, then claim + process each entry; returns timings and outcomes.

    ``pg``: an admin URL; the round runs on a scratch PostgreSQL database of its own."""
    database = scratch_database(pg, "buzon_bench_ingest") if pg else contextlib.nullcontext()
    with database as made:
        return _bench_buzon(raws, batch, tmpdir, made[0] if made else "")


def _bench_buzon(
    raws: Sequence[bytes], batch: int, tmpdir: str | None, database: str
) -> dict[str, Any]:
    from daemon.parts import open_parts
    from storage import repository as repo

    tmp = Path(tempfile.mkdtemp(prefix="buzon-bench-ingest-", dir=tmpdir))
    try:
        with open_parts(daemon_config(tmp, database), recover=False) as parts:
            if database:
                parts.db.upgrade()
            parts.parsers.parse(raws[0])  # the parser worker is booted, not timed
            outcomes: Counter[str] = Counter()
            spool_seconds = 0.0
            now = datetime.now(UTC).isoformat()
            started, cpu_started = time.perf_counter(), time.process_time()
            for chunk in _chunks(raws, batch):
                t0 = time.perf_counter()
                results = parts.spool.put_many(
                    [(raw, {"source": "file", "received_at": now}) for raw in chunk]
                )
                spool_seconds += time.perf_counter() - t0
                for result in results:
                    if isinstance(result, BaseException):
                        outcomes["not_spooled"] += 1
                        continue
                    entry = parts.spool.claim(result.id)
                    if entry is None:
                        outcomes["lost_claim"] += 1
                        continue
                    outcomes[parts.processor.process(entry).outcome] += 1
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            with parts.db.transaction() as session:
                counts = repo.counts(session)
            left = parts.spool.depth()
        db_bytes = sum(p.stat().st_size for p in tmp.glob("b.db*"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "spool_seconds": spool_seconds,
        "outcomes": dict(outcomes),
        "db_counts": counts,
        "spool_left": left,
        "db_bytes": db_bytes,
    }


def profile_buzon(
    raws: Sequence[bytes], batch: int, top: int, tmpdir: str | None, pg: str = ""
) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    bench_buzon(raws, batch, tmpdir, pg)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _rate(n: int, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if seconds else None


def _measure(
    raws: Sequence[bytes], args: argparse.Namespace, rss: dict[str, float]
) -> tuple[dict[str, list[float]], dict[str, Any]] | None:
    """Run every phase ``args.rounds`` times; None when there is no parser yet."""
    n = len(raws)
    times: dict[str, list[float]] = {k: [] for k in ("base", "parser", "buzon", "spool", "cpu")}
    buz: dict[str, Any] = {}
    invalid = False
    for i in range(args.rounds):
        times["base"].append(bench_mailparser(raws))
        if i == 0:
            rss["mail-parser"] = rss_mib()
        parser_s = bench_parser(raws)
        if parser_s is None:
            return None
        times["parser"].append(parser_s)
        if i == 0:
            rss["parser"] = rss_mib()
        buz = bench_buzon(raws, args.batch, args.tmpdir, args.pg)
        times["buzon"].append(buz["seconds"])
        times["spool"].append(buz["spool_seconds"])
        times["cpu"].append(buz["cpu_seconds"])
        if i == 0:
            rss["buzon"] = rss_mib()
        print(
            f"  round {i + 1}: mail-parser {n / times['base'][-1]:7.1f} msg/s, "
            f"parser {n / parser_s:7.1f} msg/s, buzon {n / buz['seconds']:6.1f} msg/s"
        )
        unsettled = {k: v for k, v in buz["outcomes"].items() if k not in SETTLED}
        if unsettled:
            print(f"  round {i + 1} INVALID: messages not settled: {unsettled}")
            invalid = True
    buz["invalid"] = invalid
    return times, buz


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3, help="repeat every phase; medians reported")
    p.add_argument("--seed", type=int, default=20261122)
    p.add_argument("--batch", type=int, default=64, help="spool put_many batch size")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N")
    p.add_argument(
        "--pg",
        nargs="?",
        const=PG_ADMIN,
        default="",
        metavar="ADMIN_URL",
        help=f"store in a scratch PostgreSQL database made each round (default {PG_ADMIN})",
    )
    p.add_argument(
        "--tmpdir", metavar="DIR", help="where the spool and database go (default: system temp)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = _arg_parser()
    args = p.parse_args(argv)
    if not 1 <= args.messages <= 50_000:
        p.error("--messages must be between 1 and 50000")
    if not 1 <= args.rounds <= 10:
        p.error("--rounds must be between 1 and 10")
    if not 1 <= args.batch <= 1024:
        p.error("--batch must be between 1 and 1024")

    from daemon import logging as logmod

    logmod.configure("warning", "json", stream=sys.stderr)
    import mailparser  # noqa: F401 — imported before timing

    raws, kinds = make_corpus(args.messages, args.seed)
    n = len(raws)
    size = sum(map(len, raws))
    rss: dict[str, float] = {"corpus": rss_mib()}
    print(f"corpus: {n} messages, {size / 1024:.0f} KiB, seed {args.seed}: {dict(kinds)}")
    print(
        f"spool under {args.tmpdir or tempfile.gettempdir()}, database "
        f"{'a scratch one beside ' + args.pg if args.pg else 'SQLite beside it'}; "
        f"{args.rounds} round(s)"
    )

    measured = _measure(raws, args, rss)
    if measured is None:
        print("parsers.parse_message does not exist yet: the buzon phase cannot run")
        print(json.dumps({"bench": "ingest", "messages": n, "error": "no parser"}))
        return 1
    times, buz = measured
    rss_children = rss_mib(resource.RUSAGE_CHILDREN)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["base"] / med["buzon"]
    rows = [
        ("mail-parser parse_from_bytes", med["base"], "baseline"),
        ("parsers.parse_message (in-process)", med["parser"], f"{med['base'] / med['parser']:.2f}"),
        ("buzon spool put_many only", med["spool"], "-"),
        ("buzon spool+parse+store+ticket", med["buzon"], f"{ratio:.3f}"),
    ]
    print()
    print(f"{'phase (median of rounds)':<36} {'seconds':>8} {'msg/s':>9} {'ratio':>9}")
    for name, secs, r in rows:
        print(f"{name:<36} {secs:>8.2f} {n / secs:>9.1f} {r:>9}")
    print(
        f"buzon phase: {med['cpu']:.2f} s CPU in this process for {med['buzon']:.2f} s wall "
        "(the rest is waiting: parser worker, fsync, file system)"
    )
    print()
    print(f"outcomes (last round): {buz['outcomes']}")
    on_disk = "" if args.pg else f", {buz['db_bytes'] / 1024 / 1024:.1f} MiB on disk"
    print(f"database: {buz['db_counts']}{on_disk}")
    print(f"spool left: {buz['spool_left']}")
    print(
        "peak RSS (MiB, first round): "
        + ", ".join(f"after {k} {v:.0f}" for k, v in rss.items())
        + f"; parser worker processes {rss_children:.0f}"
    )
    if args.profile:
        print(f"\ncProfile of a separate buzon pass (main thread, top {args.profile}):")
        print(profile_buzon(raws, args.batch, args.profile, args.tmpdir, args.pg))
    print(
        json.dumps(
            {
                "bench": "ingest",
                "messages": n,
                "rounds": args.rounds,
                "corpus_bytes": size,
                "tmpdir": args.tmpdir or tempfile.gettempdir(),
                "kinds": dict(kinds),
                "mailparser_msgs_per_s": _rate(n, med["base"]),
                "parser_msgs_per_s": _rate(n, med["parser"]),
                "buzon_msgs_per_s": _rate(n, med["buzon"]),
                "buzon_cpu_s": round(med["cpu"], 2),
                "buzon_wall_s": round(med["buzon"], 2),
                "spool_only_msgs_per_s": _rate(n, med["spool"]),
                "ratio_buzon_vs_mailparser": round(ratio, 4),
                "outcomes": buz["outcomes"],
                "db_counts": buz["db_counts"],
                "peak_rss_mib": round(rss["buzon"], 1),
                "peak_rss_children_mib": round(rss_children, 1),
                "runs_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                "valid": not buz["invalid"],
            }
        )
    )
    return 1 if buz["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
