"""``buzon verify``: check the invariants of RELIABILITY.md on a live or stopped installation.

Six checks, each a function returning findings (check name, severity, how many
rows are wrong, a few examples by id, and the fix): ``integrity`` (SQLite's
``PRAGMA integrity_check``), ``raw-hashes`` (every kept byte still hashes to its
recorded SHA-256), ``states`` (every row in a known state, every reference
resolves), ``spool`` (committed entries not removed, stale ``tmp/`` files,
quarantined entries), ``outbox`` (each state's columns agree with it) and
``sla-cache`` (stored deadlines equal the replay of the ticket's events, exactly
as ``buzon sla explain`` computes them). Exit 0 without errors (warnings allowed),
1 with any. The test suite runs the same checks (``tests/support/invariants.py``).

It only reads, in short transactions: on SQLite every transaction takes the write
lock (``storage.engine``), so one long read would stall intake for as long as the
check runs. Row-by-row work goes in id ranges of ``BATCH`` rows (at most ``RAW_BYTES``
of raw bytes in memory), the rest are single aggregate queries, and the integrity
check runs outside any transaction.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from daemon.config_desk import SlaConfig
from daemon.spool import DIRS, SUFFIX
from storage import outbox as box
from storage.engine import Database
from storage.models import Delivery, Message, OutboxMail, Ticket, Voicemail

BATCH = 200  # rows per read transaction: bounds memory and how long the lock is held
RAW_BYTES = 32 * 1024 * 1024  # raw bytes loaded at once by the hash check
EXAMPLES = 5
SLA_SAMPLE = 1000  # newest open tickets replayed unless --all
TMP_STALE = 3600.0  # seconds: a tmp/ file older than this was left by a dead writer

MESSAGE_STATES = ("done", "quarantined", "parked", "dropped")
TICKET_STATUSES = ("open", "closed", "merged")
VOICEMAIL_STATES = ("pending", "running", "done", "failed")
OUTBOX_STATES = (box.PENDING, box.SENDING, box.SENT, box.FAILED, box.CANCELLED)

OK, INFO, WARNING, ERROR = "ok", "info", "warning", "error"


@dataclass(frozen=True, slots=True)
class Finding:
    """One result line: ``ok`` with what was checked, or a problem with examples and a fix."""

    check: str
    severity: str  # ok | info | warning | error
    summary: str
    count: int = 0  # rows or files found wrong
    examples: tuple[str, ...] = ()
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    """What the checks read: the database, the spool root and the settings they compare to."""

    db: Database
    spool_root: Path
    sla: SlaConfig
    outbox_max_attempts: int
    sla_limit: int | None = SLA_SAMPLE  # None: every open ticket
    now: float = field(default_factory=time.time)


def count_text(value: int) -> str:
    return f"{value:,}"


class Problems:
    """One kind of problem: how many were found, the first few examples, and the fix."""

    def __init__(self, severity: str, what: str, fix: str) -> None:
        self.severity, self.what, self.fix = severity, what, fix
        self.count = 0
        self.examples: list[str] = []

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


def report(check: str, ok_summary: str, problems: Sequence[Problems]) -> list[Finding]:
    """A finding per kind of problem found, or one ``ok`` finding saying what was checked."""
    found = [
        Finding(
            check, p.severity, f"{p.what}: {count_text(p.count)}", p.count, tuple(p.examples), p.fix
        )
        for p in problems
        if p.count
    ]
    return found or [Finding(check, OK, ok_summary)]


def id_ranges(db: Database, stmt_for: Callable[[int], Any]) -> Iterator[Sequence[Any]]:
    """Rows of ``stmt_for(last_id)`` (ordered by id, id first), one transaction per batch."""
    last = 0
    while True:
        with db.transaction() as s:
            rows = s.execute(stmt_for(last).limit(BATCH)).all()
        if not rows:
            return
        yield rows
        last = int(rows[-1][0])


# -- 1. integrity --------------------------------------------------------------------------


def check_integrity(ctx: Context) -> list[Finding]:
    if ctx.db.backend != "sqlite":
        with ctx.db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return [
            Finding(
                "integrity",
                INFO,
                f"{ctx.db.backend}: reachable; PRAGMA "
                "integrity_check is SQLite's (use pg_amcheck for PostgreSQL)",
            )
        ]
    # The raw DBAPI connection runs in autocommit: no BEGIN IMMEDIATE, so a long check
    # of a big file never holds the write lock.
    raw = ctx.db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA integrity_check")
        lines = [str(row[0]) for row in cur.fetchall()]
        cur.close()
    finally:
        raw.close()
    if lines == ["ok"]:
        return [Finding("integrity", OK, "PRAGMA integrity_check: ok")]
    return [
        Finding(
            "integrity",
            ERROR,
            f"PRAGMA integrity_check: {count_text(len(lines))} problems",
            len(lines),
            tuple(lines[:EXAMPLES]),
            "stop the daemon, restore the newest `buzon backup`, or try `sqlite3 buzon.db "
            "'.recover'` into a new file; keep the damaged file",
        )
    ]


# -- 2. raw hashes -------------------------------------------------------------------------


def _by_size(db: Database, model: Any) -> Iterator[list[int]]:
    """Ids of ``model`` rows in groups holding at most ``RAW_BYTES`` of raw bytes (or one row).

    Sizes come from the database's own ``length()`` of the column, not the rows' bytes, so
    a batch of big messages is cut before it is loaded.
    """
    for rows in id_ranges(
        db,
        lambda last: (
            select(model.id, func.coalesce(func.length(model.raw), 0))
            .where(model.id > last)
            .order_by(model.id)
        ),
    ):
        group: list[int] = []
        size = 0
        for pk, length in rows:
            if group and size + int(length) > RAW_BYTES:
                yield group
                group, size = [], 0
            group.append(int(pk))
            size += int(length)
        yield group


def check_raw_hashes(ctx: Context) -> list[Finding]:
    bad = Problems(
        ERROR,
        "rows whose bytes do not match their hash",
        "the stored bytes changed after the commit (disk or manual edit): restore those rows "
        "from the newest `buzon backup` and check the disk",
    )
    messages = deliveries = 0
    for ids in _by_size(ctx.db, Message):
        with ctx.db.transaction() as s:
            msg_rows = s.execute(
                select(Message.id, Message.raw, Message.raw_sha256).where(Message.id.in_(ids))
            ).all()
        for pk, raw, sha in msg_rows:
            messages += 1
            if hashlib.sha256(raw or b"").hexdigest() != sha:
                bad.add(f"message {pk}: raw bytes do not hash to raw_sha256 {sha[:12]}…")
    kept = aliased(Message)
    for ids in _by_size(ctx.db, Delivery):
        with ctx.db.transaction() as s:
            rows = s.execute(
                select(Delivery.id, Delivery.raw, Delivery.raw_sha256, kept.raw_sha256)
                .join(kept, kept.id == Delivery.message_pk)
                .where(Delivery.id.in_(ids))
            ).all()
        for pk, own, sha, message_sha in rows:
            deliveries += 1
            # A delivery keeps its own bytes only when they differ from its message's.
            if own is None and sha != message_sha:
                bad.add(
                    f"delivery {pk}: no bytes of its own, yet its hash differs from its message's"
                )
            elif own is not None and hashlib.sha256(own).hexdigest() != sha:
                bad.add(f"delivery {pk}: raw bytes do not hash to raw_sha256 {sha[:12]}…")
    return report(
        "raw-hashes", f"{count_text(messages)} messages, {count_text(deliveries)} deliveries", [bad]
    )


# -- 3. states and references --------------------------------------------------------------


def _unknown(ctx: Context, model: Any, column: Any, known: Sequence[str], what: str) -> Problems:
    found = Problems(
        ERROR,
        f"{what} rows in an unknown state (known: {', '.join(known)})",
        "set the row to a known state by hand, or restore it from a backup; report the bug",
    )
    with ctx.db.transaction() as s:
        for pk, state in s.execute(
            select(model.id, column).where(column.not_in(known)).order_by(model.id)
        ):
            found.add(f"{what} {pk}: {state!r}")
    return found


def _merge_chains(ctx: Context) -> Problems:
    """Merged tickets must name an existing ticket, and following the names must end."""
    found = Problems(
        ERROR,
        "merged tickets with a broken merge chain",
        "`buzon tickets split … --into` moves the messages back",
    )
    with ctx.db.transaction() as s:
        into = dict(
            s.execute(
                select(Ticket.id, Ticket.merged_into_id).where(Ticket.status == "merged")
            ).all()
        )
        known = set(
            s.scalars(
                select(Ticket.id).where(
                    Ticket.id.in_(select(Ticket.merged_into_id).where(Ticket.status == "merged"))
                )
            )
        )
    for pk, first in sorted(into.items()):
        if first is None:
            found.add(f"ticket {pk}: merged, but names no ticket it was merged into")
        elif first not in known:
            found.add(f"ticket {pk}: merged into ticket {first}, which does not exist")
        else:
            seen: set[int] = {pk}
            target: int | None = first
            while target in into and target is not None:
                if target in seen:
                    found.add(f"ticket {pk}: merge chain loops back to ticket {target}")
                    break
                seen.add(target)
                target = into[target]
    return found


def check_states(ctx: Context) -> list[Finding]:
    problems = [
        _unknown(ctx, Message, Message.state, MESSAGE_STATES, "message"),
        _unknown(ctx, Ticket, Ticket.status, TICKET_STATUSES, "ticket"),
        _unknown(ctx, Voicemail, Voicemail.state, VOICEMAIL_STATES, "voicemail"),
        _unknown(ctx, OutboxMail, OutboxMail.state, OUTBOX_STATES, "outbox mail"),
        _merge_chains(ctx),
    ]
    dangling = Problems(
        ERROR,
        "messages pointing to a missing ticket",
        "restore the ticket from a backup, or clear ticket_id and "
        "`buzon quarantine retry` the message",
    )
    counts = Problems(
        WARNING,
        "tickets whose message_count is wrong",
        "harmless for intake; set message_count to the real count",
    )
    unreasoned = Problems(
        WARNING, "quarantined messages without a reason", "report it: quarantine must say why"
    )
    with ctx.db.transaction() as s:
        for pk, ticket_id in s.execute(
            select(Message.id, Message.ticket_id)
            .outerjoin(Ticket, Ticket.id == Message.ticket_id)
            .where(Message.ticket_id.is_not(None), Ticket.id.is_(None))
            .order_by(Message.id)
        ):
            dangling.add(f"message {pk}: ticket {ticket_id} does not exist")
        actual = (
            select(Message.ticket_id.label("tid"), func.count().label("n"))
            .where(Message.ticket_id.is_not(None))
            .group_by(Message.ticket_id)
            .subquery()
        )
        for pk, ref, stored, real in s.execute(
            select(Ticket.id, Ticket.ref, Ticket.message_count, func.coalesce(actual.c.n, 0))
            .outerjoin(actual, actual.c.tid == Ticket.id)
            .where(Ticket.message_count != func.coalesce(actual.c.n, 0))
            .order_by(Ticket.id)
        ):
            counts.add(f"ticket {ref or pk}: message_count {stored}, messages {real}")
        for (pk,) in s.execute(
            select(Message.id).where(Message.state == "quarantined", Message.state_reason == "")
        ):
            unreasoned.add(f"message {pk}: quarantined without a reason")
        totals = s.execute(
            select(
                select(func.count()).select_from(Message).scalar_subquery(),
                select(func.count()).select_from(Ticket).scalar_subquery(),
            )
        ).one()
    summary = f"{count_text(totals[0])} messages, {count_text(totals[1])} tickets"
    return report("states", summary, [*problems, dangling, counts, unreasoned])


# -- 4. spool ------------------------------------------------------------------------------


def _entry_sha(path: Path) -> str:
    """The SHA-256 of the bytes after the entry's header line.

    Computed, not read from the header: the header says what arrived, the bytes are
    what the runner would store, and only they can contradict the delivery.
    """
    return hashlib.sha256(path.read_bytes().partition(b"\n")[2]).hexdigest()


def _committed(ctx: Context, names: dict[str, list[str]]) -> tuple[Problems, Problems]:
    """Entries in new/ or cur/ already stored as a delivery: (same bytes, other bytes)."""
    root = ctx.spool_root
    queued = [
        (d, n[: -len(SUFFIX)]) for d in ("new", "cur") for n in names[d] if n.endswith(SUFFIX)
    ]
    stored: dict[str, str] = {}
    ids = [i for _, i in queued]
    for start in range(0, len(ids), BATCH):
        with ctx.db.transaction() as s:
            rows = s.execute(
                select(Delivery.spool_id, Delivery.raw_sha256).where(
                    Delivery.spool_id.in_(ids[start : start + BATCH])
                )
            )
            stored.update((spool_id, sha) for spool_id, sha in rows)
    committed = Problems(
        WARNING,
        "entries committed but not removed from the spool",
        "start the daemon: its runner finds each already stored and removes it",
    )
    clash = Problems(
        ERROR,
        "spool entries whose id is a stored delivery with different bytes",
        "move them out of the spool and ingest them with `buzon ingest FILE`; report it",
    )
    for d, entry_id in queued:
        if entry_id not in stored:
            continue
        try:
            sha = _entry_sha(root / d / f"{entry_id}{SUFFIX}")
        except FileNotFoundError:
            continue  # the runner removed it while we looked: that is the normal end
        if sha == stored[entry_id]:
            committed.add(f"{d}/{entry_id}{SUFFIX}")
        else:
            clash.add(f"{d}/{entry_id}{SUFFIX}: delivery {entry_id} holds other bytes")
    return committed, clash


def check_spool(ctx: Context) -> list[Finding]:
    root = ctx.spool_root
    if not all((root / d).is_dir() for d in DIRS):
        return [Finding("spool", INFO, f"no spool at {root} yet")]  # verify never creates it
    names = {d: sorted(os.listdir(root / d)) for d in DIRS}
    queued = sum(1 for d in ("new", "cur") for n in names[d] if n.endswith(SUFFIX))
    committed, clash = _committed(ctx, names)
    stale = Problems(
        WARNING,
        "tmp/ files older than an hour",
        "never acknowledged: the daemon removes them at its next start",
    )
    for n in names["tmp"]:
        try:
            age = ctx.now - (root / "tmp" / n).stat().st_mtime
        except FileNotFoundError:
            continue
        if age > TMP_STALE:
            stale.add(f"tmp/{n} ({int(age // 60)} min old)")
    bad = Problems(
        WARNING,
        "entries quarantined in spool/bad",
        "`buzon quarantine list`, then `buzon quarantine retry ID`",
    )
    for n in names["bad"]:
        if n.endswith(SUFFIX):
            bad.add(f"bad/{n}")
    summary = (
        f"{count_text(queued)} waiting or in progress, none committed, nothing stale or quarantined"
    )
    return report("spool", summary, [clash, committed, stale, bad])


# -- 5. outbox -----------------------------------------------------------------------------


def check_outbox(ctx: Context) -> list[Finding]:
    o = OutboxMail
    rules: list[tuple[str, Any, str]] = [
        (
            "sent without sent_at",
            (o.state == box.SENT) & o.sent_at.is_(None),
            "set sent_at from the relay's log (or state = 'pending' if it never went)",
        ),
        ("pending without due_at", (o.state == box.PENDING) & o.due_at.is_(None), "set due_at"),
        (
            f"pending with attempts >= max_attempts ({ctx.outbox_max_attempts})",
            (o.state == box.PENDING) & (o.attempts >= ctx.outbox_max_attempts),
            "mark them failed, or raise [outbound] max_attempts",
        ),
        (
            "sending without a lease (claimed_until)",
            (o.state == box.SENDING) & o.claimed_until.is_(None),
            "set state = 'pending': a sender claims it again",
        ),
        (
            "failed without last_error",
            (o.state == box.FAILED) & (o.last_error == ""),
            "report it: a failure must say why",
        ),
    ]
    problems: list[Problems] = []
    with ctx.db.transaction() as s:
        total = int(s.scalar(select(func.count()).select_from(o)) or 0)
        for what, where, fix in rules:
            found = Problems(ERROR, f"rows {what}", fix)
            for pk, state in s.execute(select(o.id, o.state).where(where).order_by(o.id)):
                found.add(f"outbox {pk} ({state})")
            problems.append(found)
        twice = Problems(
            ERROR,
            "tickets with two unsent acknowledgements",
            "cancel all but the oldest (state = 'cancelled')",
        )
        for tid, n in s.execute(
            select(o.ticket_id, func.count())
            .where(o.kind == "ack", o.state.in_((box.PENDING, box.SENDING)))
            .group_by(o.ticket_id)
            .having(func.count() > 1)
        ):
            twice.add(f"ticket {tid}: {n} acknowledgements waiting")
    return report("outbox", f"{count_text(total)} mails", [*problems, twice])
