"""An outage reported through several instances at once: one incident, its counts exact.

Each instance is an OS process of its own (``buzon ingest`` on its own spool) on one
PostgreSQL database, all linking tickets to the same open incident at the same time.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from daemon import pipeline, similar
from daemon.config import load
from daemon.parts import Parts, open_parts
from daemon.work import Work
from storage.models import Ticket
from support.daemon import free_port, write_config
from support.ingest import ingest_raw
from support.mail import message

WORDINGS = (
    "El correo no funciona: Outlook no puede enviar ni recibir, error de conexión al servidor.",
    "Desde hace un rato el correo no funciona, Outlook da error de conexión con el servidor.",
    "No funciona el correo, ni enviar ni recibir. Outlook error conexión servidor de correo.",
    "Outlook dice error de conexión al servidor y el correo no funciona para nadie.",
    "Nos falla el correo: error de conexión al servidor desde Outlook, no podemos enviar.",
)
INSTANCES, PER_INSTANCE = 3, 25


def _write_reports(directory: Path, instance: int) -> None:
    """Reports from customers the other instances hear from too, each in its own words."""
    directory.mkdir()
    for j in range(PER_INSTANCE):
        body = WORDINGS[(j + instance) % len(WORDINGS)] + f"\nCliente {j}, aviso {instance}.\n"
        raw = message("Problema con el correo", sender=f"c{j}@empresa{j}.es", body=body)
        (directory / f"{j:03}.eml").write_bytes(raw)


class _Race:
    """Instances A and B on one database (3 customers in 10 minutes make an incident);
    A holds its transaction open after its incident step (``paused``) until ``release``.
    ``report`` ingests one outage report at 10:00 + ``minute`` and keeps its ticket ref."""

    def __init__(self, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        extra = "[matching]\nincident_tickets = 3\nincident_window_minutes = 10\n"
        self.cfg_a, self.cfg_b = (
            load(str(write_config(tmp_path / n, free_port(), database=pg_url, extra=extra)))
            for n in ("a", "b")
        )
        self.paused, self.release = threading.Event(), threading.Event()
        self.refs: dict[str, str] = {}
        count = pipeline.STEPS["count_incident"]

        def pause_a(work: Work) -> None:
            if work.ticket is not None and work.ticket.customer.endswith("@a.es"):
                self.paused.set()
                self.release.wait(30)
            count(work)

        monkeypatch.setitem(pipeline.STEPS, "count_incident", pause_a)

    def report(self, parts: Parts, who: str, minute: int) -> None:
        day = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
        raw = message("Correo caído", sender=who, body=WORDINGS[minute % len(WORDINGS)] + "\n")
        out = ingest_raw(parts, raw, received_at=day + timedelta(minutes=minute))
        assert out.ticket_ref, out
        self.refs[who] = out.ticket_ref

    def a_detects(self, a: Parts, b: Parts, *, second: int, at: int) -> threading.Thread:
        """B stores reports at 10:00 and 10:``second``; A detects with one at 10:``at`` and
        holds its transaction open. The thread to join once ``release`` is set."""
        self.report(b, "uno@x1.es", 0)
        self.report(b, "dos@x2.es", second)
        first = threading.Thread(target=self.report, args=(a, "tres@a.es", at))
        first.start()
        assert self.paused.wait(30), "A never reached its detection"
        return first


def _linked(s: Session) -> dict[str, str]:
    """Ticket ref -> incident ref of every linked ticket."""
    query = "SELECT t.ref, i.ref FROM tickets t JOIN incidents i ON i.id = t.incident_id"
    return {t: i for t, i in s.execute(text(query)).all()}


@pytest.mark.timeout(300)
def test_instances_linking_to_one_incident_at_once_keep_its_counts_exact(
    tmp_path: Path, pg_url: str
) -> None:
    """Three processes ingest 75 outage reports at once: every ticket joins the one open
    incident, whose ticket and customer counts equal the tickets and customers linked."""
    configs = [
        write_config(tmp_path / f"i{n}", free_port(), database=pg_url) for n in range(INSTANCES)
    ]
    with open_parts(load(str(configs[0])), recover=False) as parts:
        for i, body in enumerate(WORDINGS):
            ingest_raw(
                parts, message("Correo caído", sender=f"primero{i}@otra{i}.es", body=body + "\n")
            )
    for n in range(INSTANCES):
        _write_reports(tmp_path / f"mail{n}", n)
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "daemon.cli", "--config", str(cfg)),
                *("ingest", "--json", str(tmp_path / f"mail{n}")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, cfg in enumerate(configs)
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        assert '"failed": 0' in out, out

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            incidents = conn.execute(
                text(
                    "SELECT i.ticket_count, i.customer_count, count(t.id), "
                    "count(DISTINCT t.customer) FROM incidents i "
                    "LEFT JOIN tickets t ON t.incident_id = i.id GROUP BY i.id"
                )
            ).all()
            unlinked = conn.execute(
                text("SELECT count(*) FROM tickets WHERE incident_id IS NULL")
            ).scalar_one()
    finally:
        engine.dispose()
    ((ticket_count, customer_count, linked, customers),) = incidents
    assert unlinked == 0
    assert (ticket_count, customer_count) == (linked, customers)
    assert customers == len(WORDINGS) + PER_INSTANCE


@pytest.mark.timeout(120)
def test_two_instances_detecting_one_outage_at_once_open_one_incident(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance A detects the outage from the 10:00 reports and has not committed when
    instance B, whose 30-minute window holds only the 10:15 reports (A's own 10:09 ticket
    is not committed yet), reaches the threshold too: B waits for A's commit, sees A's
    ticket and its incident, and joins it. Before the detection lock it opened a second."""
    race = _Race(tmp_path, pg_url, monkeypatch)
    release, refs, report = race.release, race.refs, race.report
    with open_parts(race.cfg_a, recover=False) as a, open_parts(race.cfg_b, recover=False) as b:
        first = race.a_detects(a, b, second=1, at=9)
        report(b, "cuatro@x4.es", 15)
        report(b, "cinco@x5.es", 15)
        second = threading.Thread(target=report, args=(b, "seis@x6.es", 16))
        second.start()
        second.join(3)  # with the lock it waits for A; without, it is done by now
        release.set()
        first.join(30)
        second.join(30)
        assert not first.is_alive() and not second.is_alive()
        with b.db.transaction() as s:
            opened = s.execute(text("SELECT ref FROM incidents")).scalars().all()
            linked = _linked(s)
    assert len(opened) == 1, f"one outage opened {opened}"
    assert linked[refs["tres@a.es"]] == linked[refs["seis@x6.es"]] == opened[0]


@pytest.mark.timeout(120)
def test_a_ticket_committed_while_the_incident_was_being_opened_joins_it_later(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detects the outage at 10:05 and has not committed when B stores a 10:12 report:
    its 10-minute window holds none of the 10:00 reports and not A's ticket (uncommitted),
    so it opens nothing and stays in no incident. The next report, at 10:13, sees A's
    ticket in the open incident and that stray, joins, and takes the stray along, counted
    once. Before, the stray stayed outside its outage (598 of 600 in bench/incident_burst)."""
    race = _Race(tmp_path, pg_url, monkeypatch)
    release, refs, report = race.release, race.refs, race.report
    with open_parts(race.cfg_a, recover=False) as a, open_parts(race.cfg_b, recover=False) as b:
        first = race.a_detects(a, b, second=0, at=5)
        report(b, "suelto@x4.es", 12)  # the stray: done while A's incident is uncommitted
        release.set()
        first.join(30)
        assert not first.is_alive()
        report(b, "cinco@x5.es", 13)
        with b.db.transaction() as s:
            counts = s.execute(
                text("SELECT ref, ticket_count, customer_count FROM incidents")
            ).all()
            linked = _linked(s)
            swept = (
                s.execute(
                    text(
                        "SELECT e.data FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id "
                        "WHERE t.ref = :ref AND e.kind = 'incident_linked'"
                    ),
                    {"ref": refs["suelto@x4.es"]},
                )
                .scalars()
                .all()
            )
    ((ref, tickets, customers),) = counts
    assert linked == {r: ref for r in refs.values()}, "every report is in the one incident"
    assert (tickets, customers) == (5, 5)
    assert [e["reason"] for e in swept] == ["similar to a ticket that joined it later"]


@pytest.mark.timeout(120)
def test_a_detection_whose_tickets_were_taken_meanwhile_joins_the_incident_that_took_them(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the detecting scan and its links, another instance commits one of the
    similar tickets into an open incident of its own. The detection is undone and the
    ticket joins that incident, taking along the other similar ticket, which is like the
    taken one: the scan's rows are read again, or the taken ticket would not count as
    the incident's and the other would stay out."""
    race = _Race(tmp_path, pg_url, monkeypatch)
    taken: list[str] = []
    attach = similar.incidents.attach_unlinked

    def another_instance_takes_one(
        session: Session, incident_id: int, tickets: Sequence[Ticket], *, skip_locked: bool = False
    ) -> list[Ticket]:
        if not taken and tickets:
            first = tickets[0]
            other = create_engine(pg_url, isolation_level="AUTOCOMMIT")
            with other.connect() as conn:
                conn.execute(
                    text(
                        "INSERT INTO incidents (ref, status, title, category, opened_at, "
                        "last_at, ticket_count, customer_count, detection) VALUES ('I-other', "
                        "'open', 'el correo', :cat, now(), now(), 1, 1, '{}')"
                    ),
                    {"cat": first.category},
                )
                conn.execute(
                    text(
                        "UPDATE tickets SET incident_id = "
                        "(SELECT id FROM incidents WHERE ref = 'I-other') WHERE id = :id"
                    ),
                    {"id": first.id},
                )
            other.dispose()
            taken.append(first.ref or "")
        return attach(session, incident_id, tickets, skip_locked=skip_locked)

    monkeypatch.setattr(similar.incidents, "attach_unlinked", another_instance_takes_one)
    with open_parts(race.cfg_b, recover=False) as b:
        race.report(b, "uno@x1.es", 0)
        race.report(b, "dos@x2.es", 1)
        race.report(b, "tres@x3.es", 2)
        with b.db.transaction() as s:
            incidents = s.execute(
                text("SELECT ref, ticket_count, customer_count FROM incidents")
            ).all()
            linked = _linked(s)
    assert taken, "the detection never linked tickets"
    assert incidents == [("I-other", 3, 3)], "the detection was undone, nothing else opened"
    assert linked == {ref: "I-other" for ref in race.refs.values()}
