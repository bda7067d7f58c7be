"""Tickets about the same matter: a customer's repeat collapses, many customers form an incident.

Both read a bounded set of candidates through indexed queries (the customer's
recent open tickets; the tickets opened in the last minutes), so their cost
depends on the traffic in the window, never on the size of the database. The
comparison is ``triage.similarity`` over fingerprints stored on the tickets.

Duplicates (seed 001 rule 5): a new message that threads nowhere but is nearly
the same as an open ticket of the same customer joins that ticket as
``duplicate``; ``buzon tickets split`` undoes it. The customer is the sender's
own address or the customer they are an authorised contact of, so a stranger
copying a ticket's text only ever matches their own tickets.

Incidents ("falla masiva", seed 001): a ticket whose matter is like those of
tickets from at least ``incident_tickets - 1`` *other* customers in the last
``incident_window_minutes`` (same category when classified) opens an incident
linking them all; a later similar ticket joins the open incident. Counting
customers, not tickets, keeps one customer writing five times from looking
like an outage.
"""

from __future__ import annotations

from datetime import timedelta

from daemon.ticketops import join
from daemon.work import Work
from storage import repository as repo
from storage.models import Incident, Ticket
from triage.similarity import duplicate_score, incident_score, informative


def collapse_duplicate(work: Work, customer: str) -> bool:
    """Join the customer's open ticket this message repeats; False when there is none."""
    m = work.matching
    if not informative(work.fingerprint) or customer in ("", "unknown"):
        return False
    since = work.received_at - timedelta(days=m.duplicate_window_days)
    best: tuple[float, Ticket] | None = None
    for t in repo.open_tickets_of_customer(
        work.session, customer, since=since, limit=m.duplicate_candidates
    ):
        score = duplicate_score(work.fingerprint, t.match_text)
        if score >= m.duplicate_similarity and (best is None or score > best[0]):
            best = (score, t)
    if best is None:
        return False
    score, ticket = best
    reason = (
        f"same customer, near-identical matter ({score:.2f} >= {m.duplicate_similarity:.2f}) "
        f"to open ticket {ticket.ref}: collapsed as a duplicate (seed 001 rule 5)"
    )
    join(
        work,
        ticket,
        "duplicate",
        reason,
        {"score": round(score, 3), "duplicate_of": ticket.ref, "customer": customer},
    )
    work.events.append(("message.duplicate_collapsed", {"score": round(score, 3)}))
    return True


def incident(work: Work) -> None:
    """Link a ticket this message opened to an incident, opening one at the threshold."""
    t, m = work.ticket, work.matching
    if t is None or not work.opened or t.incident_id is not None:
        return
    if not informative(t.match_text):
        return
    since = t.created_at - timedelta(minutes=m.incident_window_minutes)
    similar: list[tuple[float, Ticket]] = []
    for other in repo.tickets_created_since(
        work.session, since, limit=m.incident_candidates, category=t.category or None
    ):
        if other.id == t.id or other.customer == t.customer:
            continue
        score = incident_score(t.match_text, other.match_text)
        if score >= m.incident_similarity:
            similar.append((score, other))
    open_incidents = [
        o.incident for _, o in similar if o.incident is not None and o.incident.status == "open"
    ]
    if open_incidents:
        _link(work, max(open_incidents, key=lambda i: i.last_at), t)
        return
    customers = {o.customer for _, o in similar} | {t.customer}
    if len(customers) < m.incident_tickets:
        return
    inc = Incident(
        status="open",
        title=t.subject[:300],
        category=t.category,
        opened_at=work.now,
        last_at=work.now,
        detection={
            "rule": f"{m.incident_tickets} customers within {m.incident_window_minutes:g} min, "
            f"similarity >= {m.incident_similarity:.2f}",
            "customers": len(customers),
            "tickets": [t.ref, *(o.ref for _, o in similar)],
            "scores": {o.ref: round(s, 3) for s, o in similar},
        },
    )
    work.session.add(inc)
    work.session.flush()
    inc.ref = f"I-{inc.id}"
    for _, other in similar:
        if other.incident_id is None:
            _attach(work, inc, other, "detected with " + (t.ref or ""))
    _attach(work, inc, t, "detected")
    work.events.append(
        (
            "incident.detected",
            {
                "incident": inc.ref,
                "tickets": inc.ticket_count,
                "customers": inc.customer_count,
                "category": inc.category,
                "title": inc.title[:200],
            },
        )
    )


def _link(work: Work, inc: Incident, t: Ticket) -> None:
    _attach(work, inc, t, "similar to tickets of the open incident")
    inc.last_at = work.now
    work.events.append(("incident.updated", {"incident": inc.ref, "tickets": inc.ticket_count}))


def _attach(work: Work, inc: Incident, t: Ticket, why: str) -> None:
    # Counted as they come: loading every linked ticket would make each report of a
    # large outage cost more than the one before.
    new_customer = not repo.incident_has_customer(work.session, inc.id, t.customer)
    t.incident = inc
    inc.ticket_count = (inc.ticket_count or 0) + 1
    inc.customer_count = (inc.customer_count or 0) + int(new_customer)
    repo.add_event(
        work.session, t, "incident_linked", work.now, data={"incident": inc.ref, "reason": why}
    )
