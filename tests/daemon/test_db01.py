"""DB-01: the whole corpus gives the same per-message outcome on SQLite and on PostgreSQL.

Both databases are filled by the same ``buzon ingest`` run over the same files and
then read back through the storage models; every message, delivery, ticket and
outbox row is described without database ids, so the two descriptions must be equal.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from conftest import corpus_files
from daemon.sources import expand
from storage.engine import Database
from storage.models import Delivery, Message, OutboxMail, Ticket
from support.daemon import free_port, run_cli, write_config

pytestmark = pytest.mark.postgres

# One description per name (a corpus file, ``file#n`` inside an mbox, or a ticket
# named after its first message): field -> a plain, comparable value.
Outcomes = dict[str, dict[str, Any]]


def _digest(value: bytes | str) -> str:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def _corpus_items(corpus: Path) -> tuple[list[str], dict[str, bytes]]:
    """The files to ingest, and every message in them by origin, exactly as on disk.

    mbox files are split by the same code ``buzon ingest`` uses; each piece must
    still be a contiguous slice of its file, so "as on disk" stays true for them.
    """
    files = [str(f) for f in corpus_files(corpus)]
    items = {item.origin: item.raw for item in expand(files)}
    for origin, raw in items.items():
        path, _, index = origin.partition("#")
        whole = Path(path).read_bytes()
        assert (raw in whole) if index else (raw == whole), f"{origin}: split is not the file"
    return files, items


def _ingest(directory: Path, database: str | None, files: list[str]) -> str:
    """Ingest ``files`` with acknowledgements on, so the outbox takes part; the db URL."""
    cfg = write_config(directory, free_port(), database=database)
    out = run_cli("--config", str(cfg), "ingest", "--json", "--acknowledge", *files)
    assert json.loads(out.stdout)["failed"] == 0, out.stdout
    return database or f"sqlite:///{directory / 'buzon.db'}"


def _read(url: str, items: dict[str, bytes], short: Callable[[str], str]) -> Outcomes:
    """Every outcome in the database at ``url``, named by corpus file, ids left out.

    Also asserts, on this database alone, that every corpus message's bytes are
    stored exactly: on its message row, or on its delivery when it was recognised
    as a duplicate of a message with other bytes.
    """
    db = Database(url)
    try:
        with db.session() as session:
            return _describe(session, items, short, db.backend)
    finally:
        db.dispose()


def _describe(
    session: Session, items: dict[str, bytes], short: Callable[[str], str], backend: str
) -> Outcomes:
    messages = list(
        session.scalars(
            select(Message)
            .options(selectinload(Message.attachments), selectinload(Message.deliveries))
            .order_by(Message.id)
        )
    )
    deliveries = list(session.scalars(select(Delivery).order_by(Delivery.id)))
    tickets = list(
        session.scalars(select(Ticket).options(selectinload(Ticket.events)).order_by(Ticket.id))
    )
    outbox = list(session.scalars(select(OutboxMail).order_by(OutboxMail.id)))

    # A message is named by the first corpus file whose bytes it holds; ids never
    # leave this function, since the two databases number rows independently.
    origin_of = {str(d.envelope.get("origin")): d for d in deliveries}
    by_sha: dict[str, list[str]] = defaultdict(list)
    for origin, raw in items.items():
        by_sha[_digest(raw)].append(short(origin))
    name = {
        m.id: by_sha[m.raw_sha256][0] if m.raw_sha256 in by_sha else m.raw_sha256 for m in messages
    }
    members: dict[int | None, list[str]] = defaultdict(list)
    for m in messages:
        members[m.ticket_id].append(name[m.id])
    ticket_name = {
        t.id: f"ticket of {members[t.id][0]}" if members[t.id] else f"ticket {t.ref}"
        for t in tickets
    }

    out: Outcomes = {}
    for origin, raw in items.items():
        delivery = origin_of.get(origin)
        assert delivery is not None, f"{backend}: {short(origin)}: no delivery stored"
        kept = delivery.raw if delivery.raw is not None else delivery.message.raw
        assert delivery.raw_sha256 == _digest(raw), f"{backend}: {short(origin)}: raw_sha256"
        assert bytes(kept) == raw, f"{backend}: {short(origin)}: stored bytes differ from file"
        out[short(origin)] = {
            "delivery.message": name[delivery.message_pk],
            "delivery.duplicate": delivery.duplicate,
            "delivery.raw_kept": delivery.raw is not None,
        }
    for m in messages:
        assert m.raw_sha256 == _digest(m.raw), f"{backend}: {name[m.id]}: hash of raw"
        out[f"message {name[m.id]}"] = {
            "state": m.state,
            "state_reason": m.state_reason,
            "raw_sha256": m.raw_sha256,
            "size": m.size,
            "message_id": m.message_id,
            "message_id_generated": m.message_id_generated,
            "subject": m.subject,
            "from": (m.from_addr, m.from_name, m.from_verified),
            "to_cc": (m.to_addrs, m.cc_addrs),
            "date": m.date.isoformat() if m.date else None,
            "threading": (m.in_reply_to, m.references),
            "text": m.text,
            "text_from_html": m.text_from_html,
            "defects": m.defects,
            "auto": m.auto,
            "is_automatic": m.is_automatic,
            "parser": m.parser,
            "no_ack_reason": m.no_ack_reason,
            "attachments": [
                (a.filename, a.content_type, a.size, a.sha256, a.disposition) for a in m.attachments
            ],
            "deliveries": sorted(short(str(d.envelope.get("origin"))) for d in m.deliveries),
            # The partition of messages into tickets, by names: equal sets on both sides.
            "ticket": ticket_name.get(m.ticket_id) if m.ticket_id else None,
            "shares_ticket_with": members[m.ticket_id] if m.ticket_id else [],
        }
    incident_members: dict[int | None, list[str]] = defaultdict(list)
    for t in tickets:
        incident_members[t.incident_id].append(ticket_name[t.id])
    for t in tickets:
        out[ticket_name[t.id]] = {
            "subject": t.subject,
            "status": t.status,
            "category": t.category,
            "priority": t.priority,
            "severity": t.severity,
            "language": t.language,
            "flags": t.flags,
            "customer": t.customer,
            "requester": t.requester,
            "channel": t.channel,
            "message_count": t.message_count,
            "team": (t.team, t.sla_policy, t.sla_calendar),
            "merged_into": ticket_name.get(t.merged_into_id) if t.merged_into_id else None,
            "incident_with": incident_members[t.incident_id] if t.incident_id else [],
            "events": [(e.kind, name[e.message_pk] if e.message_pk else None) for e in t.events],
            # The subject carries the ticket's ref, which is its id: compared without it.
            "outbox": [
                (o.kind, o.recipient, o.envelope_from, o.subject.replace(t.ref or "-", "REF"))
                for o in outbox
                if o.ticket_id == t.id
            ],
        }
    out["(outbox rows without a ticket)"] = {
        "rows": [(o.kind, o.recipient, o.subject) for o in outbox if o.ticket_id is None]
    }
    return out


def _show(left: Any, right: Any) -> str:
    """Both values, cut to a window from where their reprs first differ."""
    a, b = repr(left), repr(right)
    start = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)
    start = max(0, min(start, len(a), len(b)) - 60)

    def cut(text: str) -> str:
        window = text[start : start + 240]
        return ("…" if start else "") + window + ("…" if len(text) > start + 240 else "")

    return f"sqlite={cut(a)} postgresql={cut(b)}"


def _differences(sqlite: Outcomes, pg: Outcomes) -> list[str]:
    """One line per differing field: ``name: field: sqlite=… postgresql=…``."""
    lines = []
    for key in sorted(sqlite.keys() | pg.keys()):
        left, right = sqlite.get(key), pg.get(key)
        if left is None or right is None:
            lines.append(f"{key}: only on {'sqlite' if right is None else 'postgresql'}")
            continue
        for field in sorted(left.keys() | right.keys()):
            if left.get(field) != right.get(field):
                lines.append(f"{key}: {field}: {_show(left.get(field), right.get(field))}")
    return lines


def test_db01_corpus_same_outcomes_on_sqlite_and_postgresql(
    corpus: Path, tmp_path: Path, pg_url: str
) -> None:
    """Every corpus message is stored byte for byte on both databases, and its state,
    reason, ticket partition, ticket triage, event kinds and outbox rows are equal."""
    files, items = _corpus_items(corpus)

    def short(origin: str) -> str:
        return str(Path(origin).relative_to(corpus))

    # One after the other: each ingest keeps both cores busy with its parser
    # processes, so running them side by side saved nothing measurable.
    outcomes = {
        name: _read(_ingest(tmp_path / name, database, files), items, short)
        for name, database in (("sqlite", None), ("postgresql", pg_url))
    }

    assert len(outcomes["sqlite"]) > len(items)
    diffs = _differences(outcomes["sqlite"], outcomes["postgresql"])
    assert not diffs, f"{len(diffs)} differences between SQLite and PostgreSQL (first 40):\n" + (
        "\n".join(diffs[:40])
    )
