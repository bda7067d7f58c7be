"""An outage reported through several instances at once: one incident, its counts exact.

Each instance is an OS process of its own (``buzon ingest`` on its own spool) on one
PostgreSQL database, all linking tickets to the same open incident at the same time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from daemon.config import load
from daemon.parts import open_parts
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
