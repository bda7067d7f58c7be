"""What scoring one new ticket against an incident window costs, by message length.

The incident step (``daemon.similar``) compares a new ticket's fingerprint with up to
``[matching] incident_candidates`` (500) recent tickets of its category. This script
measures that comparison alone, in one process pinned to one CPU, for messages of
``--words`` words each (fingerprints of about as many stems):

* **baseline**: ``incident_score`` called once per pair, as the scan did before
  ``incident_matches`` (same process, same fingerprints);
* **buzon**: ``triage.similarity.incident_matches`` over the whole window, as the daemon
  scans now.

Messages are ``bench/scale.py``'s (``scale_mail.Corpus``: random consonant-vowel words
from a 20,000-word vocabulary), so no pair is similar and the threshold never cuts the
work short.
Printed per length: ms per message (median of ``--rounds``), µs per pair, the ratio
baseline / buzon, and what share of one core the scan alone takes at ``--rate``
messages/s. The last line is one JSON object.

Run from the repository root::

    .venv/bin/python bench/incident_scan.py
    .venv/bin/python bench/incident_scan.py --words 16,64 --candidates 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

from scale_mail import Corpus

import benchlib  # noqa: F401  (puts the repository first on sys.path)
from triage.similarity import fingerprint, incident_matches, incident_score


def _median_seconds(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def one_length(corpus: Corpus, words: int, args: argparse.Namespace) -> dict[str, float]:
    """Both ways of scoring one new ticket against a window of ``words``-word messages."""
    fps = [fingerprint(*corpus.text(words)) for _ in range(args.candidates + 1)]
    new, window, least = fps[0], fps[1:], args.similarity
    pairwise = _median_seconds(
        lambda: [s for o in window if (s := incident_score(new, o)) >= least], args.rounds
    )
    batch = _median_seconds(lambda: incident_matches(new, window, least), args.rounds)
    return {
        "words": words,
        "stems": round(statistics.mean(f.count(" ") + 1 for f in fps), 1),
        "pairwise_ms": round(pairwise * 1000, 3),
        "buzon_ms": round(batch * 1000, 3),
        "us_per_pair": round(batch * 1e6 / len(window), 2),
        "ratio": round(pairwise / batch, 2),
        "core_share": round(batch * args.rate, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--words", default="16,32,64", help="message lengths, comma-separated")
    p.add_argument("--candidates", type=int, default=500, help="[matching] incident_candidates")
    p.add_argument("--similarity", type=float, default=0.6, help="[matching] incident_similarity")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--rate", type=float, default=200.0, help="messages/s for the core share")
    p.add_argument("--seed", type=int, default=8, help="the corpus's (bench/scale.py's is 8)")
    args = p.parse_args()
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    corpus = Corpus("scan", 1, seed=args.seed)
    print(
        f"incident scan: {args.candidates} candidates, similarity {args.similarity}, "
        f"median of {args.rounds} rounds, pinned to CPU {cpu}"
    )
    print(
        f"{'words':>5} {'stems':>5} {'pairwise ms':>12} {'buzon ms':>9} {'µs/pair':>8} "
        f"{'ratio':>6} {'core share at ' + format(args.rate, 'g') + '/s':>20}"
    )
    results = []
    for words in (int(x) for x in args.words.split(",")):
        row = one_length(corpus, words, args)
        results.append(row)
        print(
            f"{words:>5} {row['stems']:>5.0f} {row['pairwise_ms']:>12.2f} "
            f"{row['buzon_ms']:>9.2f} {row['us_per_pair']:>8.1f} {row['ratio']:>6.2f} "
            f"{row['core_share']:>20.2f}"
        )
    print(
        json.dumps(
            {
                "bench": "incident_scan",
                "candidates": args.candidates,
                "similarity": args.similarity,
                "rate": args.rate,
                "cpu": cpu,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
