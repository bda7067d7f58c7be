"""What the triage bench's databases hold, and the probe messages looked up in them.

The databases hold generated tickets with the real schema (``storage.engine.Database`` +
the Alembic migrations, like ``open_parts``):

* one deterministic timeline of a desk taking ``--per-day`` tickets a day now and fewer
  in the past (rate ``per_day / (1 + age / 3000 days)``): the newest ``--small`` tickets
  of it are the small database, the newest ``--large`` the large one. With the defaults
  the 10k database is the desk's last ~15 days and the 1M database its last ~5.5 years.
  The newest 10k rows are the same in both, so every lookup window shorter than the
  small database's span (duplicates: 14 days; incidents: 30 minutes) holds the same
  rows in both, and the ratio measures the size of the database, not the traffic.
  The script checks that both databases give the same candidates and outcomes.
* ``--customers`` distinct customers (default 200,000 = 1M/5), skewed: a few write
  daily, most once or twice; open/closed by age (75 % open under 2 days, 35 % under
  14, 8 % under 60, 1 % older, plus 0.5 % merged); subjects and texts are the
  Spanish/English/Bulgarian ``tune.jsonl`` messages with sentences dropped, swapped
  and random details (names, order numbers, hosts) added; ``match_text`` is
  ``fingerprint`` of that text; category, priority, severity, language from the
  sample's labels (the ``triage`` document lives in ``classified`` events since
  migration 0008, which matching never reads).
* an ongoing outage: the newest ``--burst`` tickets (last 20 minutes) are one e-mail
  failure reported by different customers, linked to an open incident.

Probe messages (``--messages``, the same list at both sizes), all received one minute
after the newest ticket: ~25 % repeat an open ticket of their customer (collapsed),
~35 % come from a customer in the database with a new matter, ~25 % from a customer
never seen, ~15 % report the outage (linked to its incident).

Here: the samples, the timeline's rows (``Timeline``) and the probes (``make_probes``).
Writing the rows into a database is ``bench/triage_store.py``'s; running the probes
through the daemon's steps, ``bench/triage_desk.py``'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from benchlib import TUNE, jsonl  # (repository first on sys.path)
from daemon.triager import Triager
from triage.classify import MessageFacts
from triage.refs import ref_for
from triage.similarity import fingerprint

GENERATOR = 2  # bump when the generated data changes: cached databases are rebuilt
END = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # the newest ticket; probes arrive 1 min later
ARRIVAL = END + timedelta(minutes=1)
HALF_RATE_DAYS = 3000.0  # the desk took half its current rate this many days ago
BLOCK = 1000  # rows generated per seeded block: row i's data never depends on N
KINDS = (("repeat", 0.25), ("known", 0.35), ("unknown", 0.25), ("outage", 0.15))

NAMES = (
    "Marta", "Jorge", "Lucía", "Iván", "Elena", "Carlos", "Sofía", "Laura", "Tom", "Sarah",
    "James", "Emily", "Петър", "Мария", "Георги", "Николай", "Десислава", "Ana", "Pablo", "Irene",
)  # fmt: skip
DETAILS = (
    "pedido {n}", "factura {n}", "ticket interno {n}", "servidor srv{k}", "dominio cliente{k}.es",
    "extensión {k}", "order {n}", "invoice {n}", "host web{k}", "account {n}",
    "поръчка {n}", "фактура {n}", "сървър srv{k}", "IP 10.{a}.{b}.{k}",
)  # fmt: skip
OUTAGE = (
    ("es", "No funciona el correo", "El correo no funciona: Outlook no puede enviar ni recibir, "
     "error de conexión al servidor de correo desde esta mañana."),
    ("en", "Email down", "Our email stopped working: Outlook cannot send or receive, connection "
     "error to the mail server since this morning."),
    ("bg", "Пощата не работи", "Пощата не работи: Outlook не може да изпраща и получава, "
     "грешка при връзка със пощенския сървър от тази сутрин."),
)  # fmt: skip
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Sample:
    """One labelled message of tune.jsonl, the material tickets and probes are made of."""

    subject: str
    body: str
    channel: str
    to: str
    category: str
    priority: str
    severity: int | None
    language: str


@dataclass(frozen=True)
class Params:
    """What the generated data depends on (with N and the schema: the cache key)."""

    per_day: float
    customers: int
    burst: int
    seed: int

    def key(self, n: int, schema: str) -> str:
        blob = json.dumps({**asdict(self), "n": n, "schema": schema, "generator": GENERATOR})
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Probe:
    """One incoming message: what the thread, classify and incident steps would see."""

    kind: str
    subject: str
    text: str
    customer: str
    category: str = ""
    fingerprint: str = ""


def load_samples() -> list[Sample]:
    out = []
    for r in jsonl(TUNE):
        labels = r["labels"]
        out.append(
            Sample(
                r["subject"],
                r["body"],
                r["channel"],
                r["to"],
                labels["category"],
                labels["priority"],
                labels.get("severity"),
                r["language"],
            )
        )
    return out


def _facts(subject: str, body: str, channel: str, to: str) -> MessageFacts:
    return MessageFacts(
        subject=subject,
        text=body,
        channel="voicemail" if channel == "voicemail" else "email",
        recipients=(to,),
    )


def _detail(rng: random.Random) -> str:
    return rng.choice(DETAILS).format(
        n=rng.randrange(10_000, 999_999), k=rng.randrange(1, 500), a=rng.randrange(256),
        b=rng.randrange(256),
    )  # fmt: skip


def vary(rng: random.Random, subject: str, body: str) -> tuple[str, str]:
    """The same kind of matter in other words: sentences dropped or swapped, details added."""
    parts = [s for s in _SENTENCE.split(body) if s.strip()] or [body]
    kept = [s for j, s in enumerate(parts) if j == 0 or rng.random() < 0.75]
    if len(kept) > 2 and rng.random() < 0.3:
        a, b = rng.sample(range(1, len(kept)), 2)
        kept[a], kept[b] = kept[b], kept[a]
    extra = ", ".join(_detail(rng) for _ in range(rng.randint(1, 3)))
    kept.insert(rng.randint(1, len(kept)), f"Ref: {extra}.")
    return subject, " ".join(kept) + f"\n\n{rng.choice(NAMES)}"


class Timeline:
    """The desk's tickets, newest first: row ``i``'s data depends on ``i`` and the seed only."""

    def __init__(self, params: Params, samples: Sequence[Sample]) -> None:
        self.p, self.samples = params, samples
        self.rate = params.per_day
        self.outage = [
            Sample(s, b, "email", "soporte@example.com", "email", "high", 1, lang)
            for lang, s, b in OUTAGE
        ]

    def age_days(self, i: int) -> float:
        """Age of the i-th newest ticket; the burst rows sit apart, in the last 20 minutes."""
        if i < self.p.burst:
            return (i * 20 / max(1, self.p.burst) + 0.1) / 1440
        # rate(a) = R / (1 + a/H)  =>  count younger than a = R*H*ln(1 + a/H)
        return HALF_RATE_DAYS * math.expm1((i - self.p.burst) / (self.rate * HALF_RATE_DAYS))

    def span_days(self, n: int) -> float:
        return self.age_days(n - 1)

    def _customer(self, rng: random.Random, channel: str) -> str:
        c = int(self.p.customers * rng.random() ** 3)  # skewed: low numbers write often
        return f"tel:+34{600_000_000 + c}" if channel == "voicemail" else f"user{c}@cliente{c}.es"

    def row(self, i: int, rng: random.Random) -> dict[str, Any]:
        burst = i < self.p.burst
        sample = self.outage[i % 3] if burst else rng.choice(self.samples)
        subject, body = vary(rng, sample.subject, sample.body)
        age = self.age_days(i)
        created = END - timedelta(days=age)
        roll = rng.random()
        open_share = 1.0 if burst else 0.75 if age < 2 else 0.35 if age < 14 else 0.08
        if age >= 60:
            open_share = 0.01
        status = "open" if roll < open_share else "merged" if roll > 0.995 else "closed"
        customer = self._customer(rng, sample.channel)
        updated = min(END, created + timedelta(hours=rng.uniform(0.1, 72)))
        return {
            "status": status,
            "subject": subject,
            "customer": customer,
            "requester": customer,
            "channel": sample.channel,
            "message_count": 1 + int(rng.random() ** 4 * 6),
            "created_at": created,
            "updated_at": created if status == "open" and rng.random() < 0.5 else updated,
            "assign_by": created + timedelta(minutes=30),
            "respond_by": created + timedelta(hours=4),
            "category": sample.category,
            "priority": sample.priority,
            "severity": sample.severity,
            "language": sample.language,
            "flags": [],
            "match_text": fingerprint(subject, body),
            "incident_id": 1 if burst else None,
            "_body": body,
        }

    def block(self, b: int) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.p.seed}:{b}")
        return [self.row(i, rng) for i in range(b * BLOCK, (b + 1) * BLOCK)]

    def newest(self, n: int) -> list[dict[str, Any]]:
        """Rows 0..n-1, newest first (for building probes)."""
        out: list[dict[str, Any]] = []
        for b in range(math.ceil(n / BLOCK)):
            out.extend(self.block(b))
        return out[:n]

    def oldest_first(self, n: int) -> Iterator[dict[str, Any]]:
        """Rows 0..n-1 as table rows, oldest first, with ids 1..n (id order = time order)."""
        for b in range(math.ceil(n / BLOCK) - 1, -1, -1):
            rows = self.block(b)
            for i in range(min(n, (b + 1) * BLOCK) - 1, b * BLOCK - 1, -1):
                r = rows[i - b * BLOCK]
                row_id = n - i
                r = {k: v for k, v in r.items() if k != "_body"}
                r["id"], r["ref"], r["merged_into_id"] = row_id, ref_for(row_id), None
                if r["status"] == "merged":  # into the ticket before it, already inserted
                    r["status"] = "merged" if row_id > 1 else "closed"
                    r["merged_into_id"] = row_id - 1 if row_id > 1 else None
                yield r


def incident_row() -> dict[str, Any]:
    return {
        "id": 1,
        "ref": "I-1",
        "status": "open",
        "title": OUTAGE[0][1],
        "category": "email",
        "opened_at": END - timedelta(minutes=20),
        "last_at": END,
        "ticket_count": 0,
        "customer_count": 0,
        "detection": {"rule": "generated by bench/triage.py"},
    }


def make_probes(tl: Timeline, n_small: int, count: int, seed: int, triager: Triager) -> list[Probe]:
    """The messages looked up at both sizes; their customers and matters are in both DBs."""
    rng = random.Random(f"{seed}:probes")
    newest = tl.newest(n_small)
    cut = (ARRIVAL - END).total_seconds() / 86400 + 13.5
    repeatable = [
        r
        for i, r in enumerate(newest)
        if i >= tl.p.burst and r["status"] == "open" and r["channel"] == "email"
        and tl.age_days(i) < cut and r["match_text"].count(" ") >= 2
    ]  # fmt: skip
    probes = []
    for k in range(count):
        roll, acc, kind = rng.random(), 0.0, KINDS[-1][0]
        for name, share in KINDS:
            acc += share
            if roll < acc:
                kind = name
                break
        if kind == "repeat" and repeatable:
            r = rng.choice(repeatable)
            probe = Probe(kind, r["subject"], "Hola de nuevo,\n" + r["_body"], r["customer"])
        elif kind == "outage":
            _lang, subject, body = OUTAGE[k % 3]
            s, b = vary(rng, subject, body)
            probe = Probe(kind, s, b, f"nuevo{k}@afectado{k}.es")
        else:
            sample = rng.choice(tl.samples)
            s, b = vary(rng, sample.subject, sample.body)
            who = rng.choice(newest)["customer"] if kind == "known" else f"nunca{k}@visto{k}.es"
            probe = Probe(kind, s, b, who)
        probe.fingerprint = fingerprint(probe.subject, probe.text)
        facts = _facts(probe.subject, probe.text, "email", "soporte@example.com")
        probe.category = triager.classify(facts).category.value
        probes.append(probe)
    return probes
