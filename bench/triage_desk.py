"""One triage bench database opened the daemon's way, and the probes run through its steps.

A probe runs the daemon's own duplicate step (``daemon.similar.collapse_duplicate``) and
incident step (``daemon.similar.incident``) with a real ``daemon.work.Work``, each in its
own session whose transaction is opened before the clock starts (the daemon's step runs
inside the message's open transaction) and rolled back after, so the database never
changes. Also here, untimed: the candidates each query returns, and the plans of the
statements the two steps issue.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchlib import explain  # (repository first on sys.path)

# isort: split
from sqlalchemy import event
from triage_data import ARRIVAL, Probe

from daemon import config as config_mod
from daemon.similar import collapse_duplicate, incident
from daemon.work import Work
from storage import repository as repo
from storage.blobs import BlobStore
from storage.engine import Database
from storage.models import Message, Ticket


class Desk:
    """One database opened the daemon's way, and how one probe runs through the two steps."""

    def __init__(self, label: str, url: str, workdir: Path) -> None:
        self.label, self.url = label, url
        self.db = Database(url)  # the daemon's engine settings (WAL, synchronous=FULL, ...)
        self.blobs = BlobStore(workdir / "blobs")
        from daemon.logging import get_logger

        self.log = get_logger(component="bench")

    def work(self, session: Any, p: Probe) -> Work:
        msg = Message(
            message_id=f"probe-{id(p)}@bench.invalid",
            raw=b"",
            raw_sha256="0" * 64,
            size=0,
            state="done",
            source="bench",
            received_at=ARRIVAL,
            stored_at=ARRIVAL,
            subject=p.subject,
            from_addr=p.customer,
            text=p.text,
        )
        return Work(
            spool_id="bench",
            raw=b"",
            sha256="0" * 64,
            source="bench",
            envelope={},
            received_at=ARRIVAL,
            parsed=None,
            quarantine_reason="",
            session=session,
            blobs=self.blobs,
            now=ARRIVAL,
            log=self.log,
            message=msg,
            fingerprint=p.fingerprint,
        )

    def run_duplicate(self, p: Probe) -> tuple[int, tuple[Any, ...]]:
        with self.db.session() as s:
            s.connection()  # the message's transaction is open before the step runs
            work = self.work(s, p)
            t0 = time.perf_counter_ns()
            hit = collapse_duplicate(work, p.customer)
            ns = time.perf_counter_ns() - t0
            outcome = (hit, work.ticket.created_at if work.ticket is not None else None)
            s.rollback()
        return ns, outcome

    def run_incident(self, p: Probe) -> tuple[int, tuple[Any, ...]]:
        with self.db.session() as s:
            ticket = Ticket(
                status="open",
                subject=p.subject,
                customer=p.customer,
                requester=p.customer,
                channel="email",
                message_count=1,
                created_at=ARRIVAL,
                updated_at=ARRIVAL,
                category=p.category,
                match_text=p.fingerprint,
                flags=[],
            )
            s.add(ticket)
            s.flush()  # open_ticket flushed it in the thread step, before incident runs
            work = self.work(s, p)
            work.ticket, work.opened = ticket, True
            t0 = time.perf_counter_ns()
            incident(work)
            ns = time.perf_counter_ns() - t0
            outcome = tuple(name for name, _ in work.events)
            s.rollback()
        return ns, outcome

    def lookups(self, probes: Sequence[Probe]) -> tuple[list[int], list[int], list[Any]]:
        dup, inc, outcomes = [], [], []
        for p in probes:
            d_ns, d_out = self.run_duplicate(p)
            i_ns, i_out = self.run_incident(p)
            dup.append(d_ns)
            inc.append(i_ns)
            outcomes.append((d_out, i_out))
        return dup, inc, outcomes

    def candidates(self, probes: Sequence[Probe]) -> tuple[list[int], list[int], list[Any]]:
        """What the two queries return per probe (untimed): counts, and the candidates'
        fingerprints (ids differ by size)."""
        m = config_mod.MatchingConfig()
        dup, inc, seen = [], [], []
        with self.db.session() as s:
            for p in probes:
                a = repo.open_tickets_of_customer(
                    s,
                    p.customer,
                    since=ARRIVAL - timedelta(days=m.duplicate_window_days),
                    limit=m.duplicate_candidates,
                )
                b = repo.tickets_created_since(
                    s,
                    ARRIVAL - timedelta(minutes=m.incident_window_minutes),
                    limit=m.incident_candidates,
                    category=p.category or None,
                )
                dup.append(len(a))
                inc.append(len(b))
                seen.append(([t.match_text for t in a], [t.match_text for t in b]))
            s.rollback()
        return dup, inc, seen

    def plans(self, probes: Sequence[Probe]) -> list[tuple[str, str, list[str]]]:
        """(step, statement, plan lines) for every SELECT the two steps issue for these probes."""
        captured: list[tuple[str, str, Any]] = []
        step = [""]

        def grab(_c: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, _many: bool) -> None:
            if stmt.lstrip().upper().startswith("SELECT") and step[0]:
                captured.append((step[0], stmt, params))

        event.listen(self.db.engine, "before_cursor_execute", grab)
        try:
            for p in probes:
                step[0] = "duplicate"
                self.run_duplicate(p)
                # The setup flush before the clock is an INSERT: every SELECT is incident()'s.
                step[0] = "incident"
                self.run_incident(p)
                step[0] = ""
        finally:
            event.remove(self.db.engine, "before_cursor_execute", grab)
        out, done = [], set()
        for name, stmt, params in captured:
            if (name, stmt) in done:
                continue
            done.add((name, stmt))
            out.append((name, stmt, explain(self.db, stmt, params)))
        return out
