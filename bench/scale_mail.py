"""The scale bench's mail: a deterministic new matter a message, in one of two lengths.

``bench/incident_scan.py`` measures with the same messages.
"""

from __future__ import annotations

import json
import random

from benchlib import TUNE, pseudo_words  # (repository first on sys.path)
from triage.similarity import STOP_WORDS, fingerprint, informative

RCPT = "soporte@example.com"


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
        self.words = pseudo_words(rnd)
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
