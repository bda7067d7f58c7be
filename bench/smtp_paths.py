"""Reading MAIL FROM and RCPT TO paths: Buzón's SMTP protocol against aiosmtpd's own parser.

Every message's MAIL FROM and RCPT TO path is read into an address and its parameters.
This script times that read alone, in one process pinned to one CPU, on the same paths:

* **baseline**: ``aiosmtpd.smtp.SMTP._getaddr``, which parses each path with the email
  package's RFC 5322 header parser;
* **buzon**: ``daemon.smtp.IntakeSMTP._getaddr``, the same answers (held to aiosmtpd's by
  ``tests/daemon/test_smtp_paths.py``), plain ``<local@domain>`` paths by a regex.

The paths: ``--paths`` senders and recipients of the shapes real mail carries (plain
addresses with dots, plus tags and hyphens, with and without SIZE/BODY parameters), and
``--odd`` per cent of other shapes (quoted local parts, address literals, UTF-8, the null
path) that still take aiosmtpd's parser. Printed: µs per path (median of ``--rounds``)
for each, and their ratio. The last line is one JSON object.

Run from the repository root::

    .venv/bin/python bench/smtp_paths.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

from aiosmtpd.smtp import SMTP

from benchlib import pin_cpu
from daemon.smtp import IntakeSMTP

ODD = ['<"ana maria"@example.com>', "<soporte@[192.0.2.7]>", "<josé@ejemplo.es>", "<>"]


def paths(n: int, odd: float, rnd: random.Random) -> list[str]:
    out = []
    for i in range(n):
        if rnd.random() < odd / 100:
            out.append(rnd.choice(ODD))
            continue
        local = rnd.choice(["ana", "j.perez", "soporte+b-12", "no-reply", f"cliente{i}"])
        domain = rnd.choice(["example.com", "mail.cliente-1.es", "abv.bg", "correo.gob.mx"])
        params = rnd.choice(["", " SIZE=4096", " SIZE=48213 BODY=8BITMIME"])
        out.append(f"<{local}@{domain}>{params}")
    return out


def per_path(read: Callable[[str], object], batch: list[str], rounds: int) -> float:
    """Median µs per path over ``rounds`` passes through ``batch``."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for arg in batch:
            read(arg)
        times.append((time.perf_counter() - started) / len(batch) * 1e6)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--paths", type=int, default=20_000)
    p.add_argument("--odd", type=float, default=2.0, help="per cent of paths of other shapes")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--cpu", type=int, default=-1)
    args = p.parse_args()
    cpu = pin_cpu(args.cpu)
    batch = paths(args.paths, args.odd, random.Random(20261208))
    theirs, ours = SMTP.__new__(SMTP), IntakeSMTP.__new__(IntakeSMTP)
    theirs.local_part_limit = ours.local_part_limit = 0
    wrong = sum(theirs._getaddr(a) != ours._getaddr(a) for a in batch)
    baseline = per_path(theirs._getaddr, batch, args.rounds)
    buzon = per_path(ours._getaddr, batch, args.rounds)
    print(f"{len(batch):,} paths ({args.odd:g} % odd), median of {args.rounds}, CPU {cpu}")
    print(f"  aiosmtpd's parser  {baseline:8.2f} µs a path")
    print(f"  buzon              {buzon:8.2f} µs a path   ratio {baseline / buzon:.1f}x faster")
    print(f"  answers that differ: {wrong}")
    result = {"bench": "smtp_paths", "paths": len(batch), "odd_percent": args.odd,
              "baseline_us": round(baseline, 3), "buzon_us": round(buzon, 3),
              "ratio": round(baseline / buzon, 2), "differ": wrong}  # fmt: skip
    print(json.dumps(result))
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
