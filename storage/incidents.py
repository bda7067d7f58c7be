"""An incident's links and counts, exact when several instances link tickets at once.

An outage is the moment many instances link tickets to one incident together, so
nothing here reads a count and writes it back (two transactions would write the
same number, and a link would be lost from the count), and a ticket already
linked by another transaction is never taken from it:

* ``attach_unlinked``: link tickets that are in no incident, each only if it is
  still in none when its row is written (and, with ``skip_locked``, only if no
  other transaction is linking it right now).
* ``count_link``: add linked tickets to the counts in the row itself
  (``ticket_count + 1``, never a number read before). Its ``UPDATE`` locks the
  incident row until the transaction ends, so the daemon runs it last, just
  before commit: the transactions linking to one incident wait for each other's
  commit only, not for each other's whole pipeline. On PostgreSQL (READ
  COMMITTED) the check for the customer, run after that ``UPDATE``, sees every
  link committed before the lock was granted, and later links wait for this one,
  so the customer count is exact too; SQLite has one writer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, case, select, update
from sqlalchemy.orm import Session

from storage import core
from storage.models import Incident, Ticket


def attach_unlinked(
    session: Session, incident_id: int, tickets: Sequence[Ticket], *, skip_locked: bool = False
) -> list[Ticket]:
    """Link those of ``tickets`` that are still in no incident; the ones linked.

    ``skip_locked`` leaves out a ticket another transaction is updating (PostgreSQL;
    SQLite has one writer): it may be being linked there, and waiting for that would only
    find it taken; or a scheduler pass or an agent is changing it, and a later ticket that
    joins may take it along instead of this message's transaction waiting behind it. The
    lock is ``FOR NO KEY UPDATE``, what the UPDATE takes anyway: a transaction that only
    inserts rows referring to the ticket (an event, a message) does not make it skipped.
    """
    ids = [t.id for t in tickets]
    if not ids:
        return []
    free: list[ColumnElement[bool]] = [Ticket.id.in_(ids), Ticket.incident_id.is_(None)]
    if skip_locked:
        free.append(
            Ticket.id.in_(
                select(Ticket.id).where(*free).with_for_update(skip_locked=True, key_share=True)
            )
        )
    linked = set(
        core.connection(session).scalars(
            update(Ticket)
            .where(*free)
            .values(incident_id=incident_id)
            .returning(Ticket.id)
            .execution_options(synchronize_session=False)
        )
    )
    for t in tickets:
        # The rows were written above; the loaded tickets only learn the outcome.
        session.expire(t, ["incident_id", "incident"])
    return [t for t in tickets if t.id in linked]


# In an outage every linked ticket runs these: built once, with bound parameters. The
# CASE's result is typed by hand (a bare bound value there would skip the column's own
# conversion of the time).
_ROW = update(Incident).where(Incident.id == bindparam("incident_id"))
_ADD = (
    _ROW.values(
        ticket_count=Incident.ticket_count + bindparam("tickets"),
        customer_count=Incident.customer_count + bindparam("customers"),
        last_at=case(
            (Incident.last_at < bindparam("at"), bindparam("at", type_=Incident.last_at.type)),
            else_=Incident.last_at,
        ),
    )
    .returning(Incident.ticket_count, Incident.customer_count)
    .execution_options(synchronize_session=False)
)
_SEEN = (
    select(Ticket.customer)
    .where(
        Ticket.incident_id == bindparam("incident_id"),
        Ticket.customer.in_(bindparam("linked_customers", expanding=True)),
        Ticket.id.not_in(bindparam("ids", expanding=True)),
    )
    .distinct()
)
_UNCOUNT = _ROW.values(
    customer_count=Incident.customer_count - bindparam("seen")
).execution_options(synchronize_session=False)


def count_link(
    session: Session, incident_id: int, linked: Sequence[tuple[int, str]], at: datetime
) -> tuple[int, int]:
    """Count the ``linked`` tickets, (id, customer) pairs linked at ``at``, in the
    incident's row; the new (ticket_count, customer_count)."""
    if not linked:
        raise ValueError("count_link needs at least one linked ticket")
    ids = [i for i, _ in linked]
    customers_linked = {c for _, c in linked}
    # Counted as new customers first: in an outage nearly every link is one, and the row
    # stays locked from here to commit, so the common case is one statement shorter.
    db = core.connection(session)  # rows only: the session holds no incident it must learn of
    tickets, customers = db.execute(
        _ADD,
        {
            "incident_id": incident_id,
            "tickets": len(ids),
            "customers": len(customers_linked),
            "at": at,
        },
    ).one()
    seen = set(
        db.scalars(
            _SEEN,
            {"incident_id": incident_id, "linked_customers": list(customers_linked), "ids": ids},
        )
    )
    if seen:
        db.execute(_UNCOUNT, {"incident_id": incident_id, "seen": len(seen)})
        customers -= len(seen)
    return int(tickets), int(customers)
