"""What the scheduler bench's generated desk holds: ticket shapes made through daemon.sla.

The data: real rows made the daemon's way. Each distinct ticket "shape" (policy x
state x moments) is built once through ``daemon.sla`` on a scratch in-memory
database: a ``created`` event, ``sla.stamp`` (the ``stamped`` event with policy,
calendar, channel, selection, facts), then the agent actions of its state
(``sla.assign``, ``sla.respond``, ``sla.wait``, ``sla.close``), with the real
scheduler run at every moment something fell due before the pass's downtime began:
the model is a scheduler stopped for the 6 hours before ``NOW`` (Thursday
2026-12-03 15:00 Madrid), so its first pass catches up. The ticket's columns and
events are then copied verbatim into the measured database (times are not shifted:
business-day deadlines do not survive a shift), so every column is what
``daemon.sla.cache`` wrote; the bench re-checks a sample by replay
(``scheduler_store.verify``, as ``buzon sla explain`` does). Shapes: ~400, drawn from
``tests/data/triage/tune.jsonl`` samples (subject, body, language, category, priority,
severity; ``triage`` = the shipped classifier's ``as_dict`` of the sample, ~2-3 KB as
the daemon stores it).

Due tickets (all e-mail, requester with an address, one ``done`` message each,
~1 KB raw, which the sender reads for In-Reply-To when it composes): ~60 % an
at-risk or breach alarm due ("support" and "setup" policies, open or assigned), ~30 %
a follow-up due ("setup": 4bd follow-ups, 0-2 already sent), ~10 % an auto-close due
("support": closed 72 h after waiting, before its first 4bd follow-up). The rest are
not due: ~90 % closed (next_due_at NULL; by an agent or auto-closed by the scheduler),
~5 % open with nothing pending (answered, or every alarm already sent; NULL), ~5 % with
next_due_at ahead (recent, or waiting). Non-due tickets have no message rows (a pass
never reads them); the message table holds one row per due ticket only. Ticket ids
follow ``created_at``, so the due tickets are the newest ids, as on a real desk.

Here: the shapes (``load_samples``, ``Planner``, ``Builder``, ``build_shapes``), the
layout of a ``Case``'s N tickets (``layout``) and their table rows (``rows_of``).
Writing them into a database is ``bench/scheduler_store.py``'s; measuring passes over
it, ``bench/scheduler.py``'s.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from benchlib import BASE_TOML, TUNE, jsonl

ROOT = Path(__file__).resolve().parents[1]  # benchlib put it first on sys.path

from sqlalchemy import delete, select  # noqa: E402

from daemon import config as config_mod  # noqa: E402
from daemon import sla  # noqa: E402
from daemon.config_desk import SlaConfig  # noqa: E402
from daemon.scheduler import Scheduler  # noqa: E402
from daemon.triager import Triager  # noqa: E402
from storage import repository as repo  # noqa: E402
from storage.engine import Database  # noqa: E402
from storage.models import Base, Ticket  # noqa: E402
from triage.classify import MessageFacts  # noqa: E402
from triage.durations import Duration  # noqa: E402
from triage.refs import ref_for  # noqa: E402
from triage.similarity import fingerprint  # noqa: E402

GENERATOR = 2  # bump when the generated data changes: cached databases are rebuilt
NOW = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)  # Thursday 15:00 in Madrid: the pass
DOWN = timedelta(hours=6)  # the scheduler was stopped since 09:00 Madrid
CUTOFF = NOW - DOWN
SHAPES = {"alarm": 120, "followup": 60, "close": 20, "closed": 120, "idle": 40, "future": 40}
DUE_MIX = (("alarm", 0.6), ("followup", 0.3), ("close", 0.1))
REST_MIX = (("closed", 0.9), ("idle", 0.05), ("future", 0.05))
BLOCK = 1000  # rows drawn per seeded block: row i's shape never depends on N
TABLES = Base.metadata.tables
AGENT, AGENT_ADDRESS = "ana", "ana@desk.example.com"


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Sample:
    """One labelled message of tune.jsonl: what a ticket's subject, labels and triage are."""

    subject: str
    body: str
    channel: str
    category: str
    priority: str
    severity: int | None
    language: str
    triage: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """A ticket to build: its opening message, creation and the agents' actions."""

    sample: Sample
    created: datetime
    actions: tuple[tuple[datetime, str], ...] = ()


@dataclass(frozen=True)
class Shape:
    """A ticket as daemon.sla left it: its columns and its events, ready to copy."""

    kind: str  # alarm | followup | close (due) | closed | idle | future
    ticket: dict[str, Any]  # column -> value, without id, ref, customer, requester
    events: tuple[tuple[str, datetime, dict[str, Any]], ...]  # kind, at, data
    body: str


def load_samples() -> list[Sample]:
    """The tune.jsonl messages with the shipped classifier's triage of each."""
    scratch = Path(tempfile.mkdtemp(prefix="buzon-bench-scheduler-"))
    try:
        triager = Triager.from_config(config_mod.parse(BASE_TOML, base=scratch, source="bench"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = []
    for r in jsonl(TUNE):
        labels = r["labels"]
        channel: Literal["email", "voicemail"] = (
            "voicemail" if r["channel"] == "voicemail" else "email"
        )
        facts = MessageFacts(
            subject=r["subject"], text=r["body"], channel=channel, recipients=(r["to"],)
        )
        out.append(
            Sample(
                r["subject"],
                r["body"],
                channel,
                labels["category"],
                labels["priority"],
                labels.get("severity"),
                r["language"],
                triager.classify(facts).as_dict(),
            )
        )
    return out


def _u(rng: random.Random, lo: timedelta, hi: timedelta) -> timedelta:
    return timedelta(seconds=round(rng.uniform(lo.total_seconds(), hi.total_seconds())))


M, H, D = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


class Planner:
    """Random plans aimed at one kind each; the built ticket decides which kind it is."""

    def __init__(self, samples: Sequence[Sample], cfg: SlaConfig) -> None:
        mail = [s for s in samples if s.channel == "email"]
        self.setup = [s for s in mail if s.category == "setup"]
        self.support = [s for s in mail if s.category != "setup"]
        self.any = list(samples)
        self.calendar = cfg.calendar("office")

    def _before(self, every: str, times: int, target: datetime) -> datetime:
        """The latest instant from which ``times`` steps of ``every`` land at or before target."""
        step = Duration.parse(every)
        lo, hi = target - timedelta(days=60), target
        for _ in range(40):  # to well under a second
            mid = lo + (hi - lo) / 2
            t = mid
            for _ in range(times):
                t = step.add(t, self.calendar)
            lo, hi = (mid, hi) if t <= target else (lo, mid)
        return lo.replace(microsecond=0)

    def _worked(self, rng: random.Random, created: datetime, until: datetime) -> list[Any]:
        """Assigned, then answered, both before ``until``."""
        a = min(created + _u(rng, 5 * M, 3 * H), until - 2 * M)
        r = min(a + _u(rng, 5 * M, 6 * H), until - M)
        return [(a, "assign"), (r, "respond")]

    def plan(self, kind: str, rng: random.Random) -> Plan:
        """A plan aimed at ``kind``; the ticket built from it may turn out another kind."""
        make: Callable[[random.Random], Plan] = getattr(self, f"_{kind}")
        return make(rng)

    def _alarm(self, rng: random.Random) -> Plan:
        variant = rng.random()
        if variant < 0.45:  # open, unassigned: the assign and provisional respond clocks
            return Plan(rng.choice(self.support), NOW - _u(rng, 50 * M, DOWN + 2 * H))
        if variant < 0.85:  # assigned: the respond clock
            a = NOW - _u(rng, 48 * M, DOWN + H)
            return Plan(rng.choice(self.support), a - _u(rng, 5 * M, 55 * M), ((a, "assign"),))
        return Plan(rng.choice(self.setup), NOW - _u(rng, 19 * H, DOWN + 48 * H))  # 24 h windows

    def _followup(self, rng: random.Random) -> Plan:
        sent = rng.choice((0, 0, 0, 1, 2))  # follow-ups already sent before this one
        w = self._before("4bd", sent + 1, NOW - _u(rng, 0 * M, DOWN))
        c = w - _u(rng, 2 * H, 5 * D)
        return Plan(rng.choice(self.setup), c, (*self._worked(rng, c, w), (w, "wait")))

    def _close(self, rng: random.Random) -> Plan:
        w = NOW - _u(rng, 0 * M, DOWN) - timedelta(hours=72)
        c = w - _u(rng, 2 * H, 4 * D)
        return Plan(rng.choice(self.support), c, (*self._worked(rng, c, w), (w, "wait")))

    def _closed(self, rng: random.Random) -> Plan:
        sample = rng.choice(self.any)
        c = NOW - _u(rng, 5 * D, 730 * D)
        worked = self._worked(rng, c, c + 2 * D)
        r = worked[-1][0]
        if rng.random() < 0.7:  # closed by an agent; else waiting, then auto-closed
            return Plan(sample, c, (*worked, (r + _u(rng, H, 5 * D), "close")))
        return Plan(sample, c, (*worked, (r + _u(rng, H, 2 * D), "wait")))

    def _idle(self, rng: random.Random) -> Plan:
        c = NOW - _u(rng, 3 * D, 60 * D)
        if rng.random() < 0.5:  # answered, nothing pending
            return Plan(rng.choice(self.support), c, tuple(self._worked(rng, c, c + D)))
        return Plan(rng.choice(self.support + self.setup), c)  # overdue, every alarm sent

    def _future(self, rng: random.Random) -> Plan:
        variant = rng.random()
        if variant < 0.3:
            return Plan(rng.choice(self.support), NOW - _u(rng, 0 * M, 45 * M))
        if variant < 0.6:
            a = NOW - _u(rng, 0 * M, 45 * M)
            return Plan(rng.choice(self.support), a - _u(rng, 5 * M, 50 * M), ((a, "assign"),))
        w = NOW - _u(rng, H, 60 * H)
        sample = rng.choice(self.support if variant < 0.8 else self.setup)
        c = w - _u(rng, 2 * H, 3 * D)
        return Plan(sample, c, (*self._worked(rng, c, w), (w, "wait")))


class Builder:
    """Builds shapes through daemon.sla and the real scheduler on an in-memory database."""

    def __init__(self, cfg: SlaConfig) -> None:
        self.cfg = cfg
        self.db = Database("sqlite://")
        Base.metadata.create_all(self.db.engine)

    def build(self, plan: Plan) -> Shape:
        with self.db.engine.begin() as conn:
            for name in ("outbox", "ticket_events", "messages", "tickets"):
                conn.execute(delete(TABLES[name]))
        s = plan.sample
        address = "cliente@empresa.es" if s.channel == "email" else "tel:+34600000000"
        with self.db.transaction() as session:
            t = Ticket(
                status="open",
                subject=s.subject,
                customer=address,
                requester=address,
                channel=s.channel,
                message_count=1,
                created_at=plan.created,
                updated_at=plan.created,
                category=s.category,
                priority=s.priority,
                severity=s.severity,
                language=s.language,
                flags=[],
                match_text=fingerprint(s.subject, s.body),
            )
            session.add(t)
            session.flush()
            t.ref = ref_for(t.id)
            data = {"reason": "new thread", "message_id": "x@y", "source": "smtp"}
            repo.add_event(
                session, t, "created", plan.created, data={**data, "customer": address, "flags": []}
            )
            repo.add_event(session, t, "classified", plan.created, data=s.triage)
            sla.stamp(session, t, self.cfg, plan.created)
            tid = t.id
        for at, action in sorted(plan.actions):
            self._catch_up(tid, min(at, CUTOFF))
            with self.db.transaction() as session:
                t = session.get_one(Ticket, tid)
                if action == "assign":
                    sla.assign(session, t, self.cfg, at, agent=AGENT, by=AGENT_ADDRESS)
                elif action == "respond":
                    sla.respond(session, t, self.cfg, at, agent=AGENT, via="mail")
                elif action == "wait":
                    sla.wait(session, t, self.cfg, at, by=AGENT_ADDRESS)
                else:
                    sla.close(session, t, self.cfg, at, reason="solved", by=AGENT_ADDRESS)
        self._catch_up(tid, CUTOFF)
        with self.db.engine.connect() as conn:
            row = dict(conn.execute(select(TABLES["tickets"])).one()._mapping)
            events = tuple(
                (e.kind, e.at, e.data)
                for e in conn.execute(
                    select(TABLES["ticket_events"]).order_by(TABLES["ticket_events"].c.id)
                )
            )
        for name in ("id", "ref", "customer", "requester"):
            del row[name]
        return Shape(kind_of(row), row, events, s.body)

    def _catch_up(self, tid: int, until: datetime) -> None:
        """Run the scheduler at each moment the ticket fell due, as a live daemon would."""
        for _ in range(100):
            with self.db.transaction() as session:
                due = session.get_one(Ticket, tid).next_due_at
            if due is None or due > until:
                return
            Scheduler(self.db, self.cfg, None, clock=_fixed(due)).run_once()
        raise RuntimeError("a shape kept falling due; the planner is wrong")


def _fixed(t: datetime) -> Callable[[], datetime]:
    return lambda: t


def kind_of(row: dict[str, Any]) -> str:
    """What the pass at NOW owes a ticket with these columns."""
    if row["status"] == "closed":
        return "closed"
    if row["close_due_at"] is not None and row["close_due_at"] <= NOW:
        return "close"
    if row["followup_due_at"] is not None and row["followup_due_at"] <= NOW:
        return "followup"
    if row["next_due_at"] is None:
        return "idle"
    return "alarm" if row["next_due_at"] <= NOW else "future"


def build_shapes(
    samples: Sequence[Sample], cfg: SlaConfig, seed: int, most: int = 0
) -> dict[str, list[Shape]]:
    """SHAPES[kind] distinct shapes of every kind (at most ``most`` if given), the same for
    every database size."""
    planner, builder = Planner(samples, cfg), Builder(cfg)
    rng = random.Random(f"{seed}:shapes")
    pools: dict[str, list[Shape]] = {k: [] for k in SHAPES}
    tries = 0
    for kind, count in SHAPES.items():
        want = min(count, most) if most else count
        while len(pools[kind]) < want:
            tries += 1
            if tries > 20 * sum(SHAPES.values()):
                raise RuntimeError(f"cannot build {kind} shapes; got {len(pools[kind])}")
            shape = builder.build(planner.plan(kind, rng))
            if shape.kind == kind:
                pools[kind].append(shape)
    builder.db.dispose()
    return pools


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Case:
    """A database size and how many of its tickets are due."""

    n: int
    due: int

    @property
    def label(self) -> str:
        return f"{_short(self.n)}/{self.due:,} due"


def _short(n: int) -> str:
    return (
        f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    )


def _draw(mix: Sequence[tuple[str, float]], x: float) -> str:
    acc = 0.0
    for name, share in mix:
        acc += share
        if x < acc:
            return name
    return mix[-1][0]


def layout(case: Case, pools: dict[str, list[Shape]], seed: int) -> list[tuple[Shape, int, bool]]:
    """(shape, address number, due) per ticket, oldest first: the index + 1 is the id.

    Due ticket k and non-due ticket i depend on (seed, k) and (seed, i) only, so the 10k
    and 1M databases with 100 due hold the same 100 due tickets.
    """
    rows: list[tuple[datetime, int, Shape, int, bool]] = []
    for what, count, mix in (("due", case.due, DUE_MIX), ("rest", case.n - case.due, REST_MIX)):
        for b in range((count + BLOCK - 1) // BLOCK):
            rng = random.Random(f"{seed}:{what}:{b}")
            for i in range(b * BLOCK, min(count, (b + 1) * BLOCK)):
                pool = pools[_draw(mix, rng.random())]
                shape = pool[rng.randrange(len(pool))]
                number = i if what == "due" else 10_000_000 + i
                rows.append((shape.ticket["created_at"], number, shape, number, what == "due"))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(shape, number, due) for _, _, shape, number, due in rows]


def _address(number: int, channel: str) -> str:
    if channel != "email":
        return f"tel:+34{600_000_000 + number % 400_000_000}"
    return f"cliente{number}@empresa{number % 997}.es"


def _raw(ref: str, address: str, shape: Shape, number: int) -> bytes:
    created = shape.ticket["created_at"]
    return (
        f"Return-Path: <{address}>\r\nReceived: from mx.empresa.es by bench.buzon.invalid\r\n"
        f"From: Cliente {number} <{address}>\r\nTo: soporte@example.com\r\n"
        f"Subject: {shape.ticket['subject']}\r\nDate: {created:%a, %d %b %Y %H:%M:%S +0000}\r\n"
        f"Message-ID: <m{number}.{ref.lower()}@empresa.es>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{shape.body}\r\n\r\n--\r\nCliente {number}\r\n"
    ).encode()


def rows_of(plan: list[tuple[Shape, int, bool]]) -> Iterator[dict[str, Any]]:
    """Table rows per ticket: its shape, ticket, message (due ones) or None, events."""
    message_id = 0
    for index, (shape, number, due) in enumerate(plan):
        tid = index + 1
        ref = ref_for(tid)
        address = _address(number, shape.ticket["channel"])
        ticket = {**shape.ticket, "id": tid, "ref": ref, "customer": address, "requester": address}
        message = None
        if due:
            message_id += 1
            raw = _raw(ref, address, shape, number)
            created = shape.ticket["created_at"]
            message = {
                "id": message_id, "message_id": f"m{number}.{ref.lower()}@empresa.es",
                "message_id_generated": False, "raw_sha256": hashlib.sha256(raw).hexdigest(),
                "raw": raw, "size": len(raw), "state": "done", "state_reason": "",
                "source": "smtp", "received_at": created, "stored_at": created,
                "subject": shape.ticket["subject"], "from_addr": address,
                "from_name": f"Cliente {number}", "from_verified": True,
                "to_addrs": ["soporte@example.com"], "cc_addrs": [], "date": created,
                "in_reply_to": [], "references": [], "text": shape.body,
                "text_from_html": False, "defects": [], "auto": {}, "is_automatic": False,
                "parser": "stdlib", "no_ack_reason": "", "ticket_id": tid,
            }  # fmt: skip
        events = [
            {
                "ticket_id": tid,
                "at": at,
                "kind": kind,
                "message_pk": message_id if due and kind in ("created", "stamped") else None,
                "data": data,
            }
            for kind, at, data in shape.events
        ]
        yield {"shape": shape, "ticket": ticket, "message": message, "events": events}
