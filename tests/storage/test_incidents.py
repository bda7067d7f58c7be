"""An incident's links and counts are written in place, never from a value read earlier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from storage import incidents
from storage.engine import Database
from storage.models import Incident, Ticket, TicketEvent
from support.rows import open_ticket

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _ticket(customer: str, incident: Incident | None = None) -> Ticket:
    return open_ticket(customer, NOW, incident=incident)


def _incident(tickets: int, customers: int) -> Incident:
    return Incident(
        status="open",
        opened_at=NOW,
        last_at=NOW,
        ticket_count=tickets,
        customer_count=customers,
    )


def test_count_link_adds_a_ticket_and_a_customer_only_when_new(db: Database) -> None:
    """A second ticket of a customer already linked counts as a ticket, not a customer;
    ``last_at`` only moves forward."""
    with db.transaction() as s:
        inc = _incident(1, 1)
        s.add_all([inc, _ticket("ana@a.es", inc)])
        s.flush()
        again, other = _ticket("ana@a.es", inc), _ticket("luis@b.es", inc)
        s.add_all([again, other])
        s.flush()
        assert incidents.count_link(s, inc.id, [(again.id, "ana@a.es")], NOW) == (2, 1)
        assert incidents.count_link(s, inc.id, [(other.id, "luis@b.es")], NOW - timedelta(1)) == (
            3,
            2,
        )
        inc_id = inc.id
    with db.transaction() as s:
        row = s.get(Incident, inc_id)
        assert row is not None
        assert (row.ticket_count, row.customer_count, row.last_at) == (3, 2, NOW)


def test_attach_unlinked_never_takes_a_ticket_linked_since_it_was_read(pg_url: str) -> None:
    """A ticket another transaction linked after this one loaded it (READ COMMITTED) keeps
    its incident; the others are linked."""
    db = Database(pg_url)
    db.upgrade()
    try:
        with db.transaction() as s:
            first, mine = _incident(0, 0), _incident(0, 0)
            s.add_all([first, mine, _ticket("ana@a.es"), _ticket("luis@b.es")])
        with db.transaction() as s:
            taken, free = s.query(Ticket).order_by(Ticket.id).all()
            assert taken.incident_id is None  # as this transaction read it
            with db.transaction() as other:  # another instance links it meanwhile
                other.get(Ticket, taken.id).incident_id = first.id  # type: ignore[union-attr]
            linked = incidents.attach_unlinked(s, mine.id, [taken, free])
            assert linked == [free]
            assert (taken.incident_id, free.incident_id) == (first.id, mine.id)
    finally:
        db.dispose()


def test_count_link_counts_tickets_linked_together_and_each_new_customer_once(
    db: Database,
) -> None:
    """A ticket joining with strays taken along: every ticket counts, a customer already
    in the incident or twice among them counts once."""
    with db.transaction() as s:
        inc = _incident(1, 1)
        s.add_all([inc, _ticket("ana@a.es", inc)])
        s.flush()
        joining = [_ticket(c, inc) for c in ("luis@b.es", "ana@a.es", "eva@c.es", "eva@c.es")]
        s.add_all(joining)
        s.flush()
        pairs = [(t.id, t.customer) for t in joining]
        assert incidents.count_link(s, inc.id, pairs, NOW) == (5, 3)


def test_attach_unlinked_skipping_locked_passes_over_a_ticket_being_linked(pg_url: str) -> None:
    """With ``skip_locked`` a ticket another transaction holds is left to it at once,
    instead of waited for; the others are linked."""
    db = Database(pg_url)
    db.upgrade()
    try:
        with db.transaction() as s:
            mine = _incident(0, 0)
            s.add_all([mine, _ticket("ana@a.es"), _ticket("luis@b.es")])
        with db.transaction() as other, db.transaction() as s:
            held, free = s.query(Ticket).order_by(Ticket.id).all()
            other.execute(select(Ticket.id).where(Ticket.id == held.id).with_for_update()).one()
            s.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait would fail, not hang
            linked = incidents.attach_unlinked(s, mine.id, [held, free], skip_locked=True)
            assert linked == [free]
            assert (held.incident_id, free.incident_id) == (None, mine.id)
    finally:
        db.dispose()


def test_attach_unlinked_skipping_locked_links_a_ticket_another_transaction_refers_to(
    pg_url: str,
) -> None:
    """A transaction that only inserts a row referring to a ticket (an event: a key-share
    lock) does not make the ticket skipped: the sweep's lock is FOR NO KEY UPDATE."""
    db = Database(pg_url)
    db.upgrade()
    try:
        with db.transaction() as s:
            mine = _incident(0, 0)
            s.add_all([mine, _ticket("ana@a.es")])
        with db.transaction() as other, db.transaction() as s:
            (referred,) = s.query(Ticket).all()
            other.add(TicketEvent(ticket_id=referred.id, at=NOW, kind="note", data={}))
            other.flush()  # the INSERT's foreign-key check holds FOR KEY SHARE on the ticket
            s.execute(text("SET LOCAL lock_timeout = '2s'"))
            linked = incidents.attach_unlinked(s, mine.id, [referred], skip_locked=True)
            assert linked == [referred]
    finally:
        db.dispose()
