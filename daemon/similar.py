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

Incidents ("falla masiva", seed 001): a ticket whose matter is like those of tickets
from at least ``incident_tickets - 1`` *other* customers in the last
``incident_window_minutes`` (same category when classified) opens an incident linking
them all; a later similar ticket joins the open incident, taking along any ticket of the
window still in none that is like one of the incident's (one that committed while the
incident was being opened elsewhere, so neither saw the other). Counting customers, not
tickets, keeps one customer writing five times from looking like an outage. In an outage
every instance links tickets to the same incident at once: counts are added in its row
by the last step (``count_incident``), so the instances wait for each other's commit
only, and no link is lost from a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from daemon.ticketops import join
from daemon.work import JoinedIncident, Work
from storage import incidents
from storage import repository as repo
from storage.models import Incident, Ticket
from triage.similarity import duplicate_score, incident_matches, incident_score, informative


def collapse_duplicate(work: Work, customer: str) -> bool:
    """Join the customer's open ticket this message repeats; False when there is none."""
    m = work.matching
    if not informative(work.fingerprint) or customer in ("", "unknown"):
        return False
    since = work.received_at - timedelta(days=m.duplicate_window_days)
    best: tuple[float, int] | None = None
    for tid, match_text in repo.open_tickets_of_customer(
        work.session, customer, since=since, limit=m.duplicate_candidates
    ):
        score = duplicate_score(work.fingerprint, match_text)
        if score >= m.duplicate_similarity and (best is None or score > best[0]):
            best = (score, tid)
    if best is None:
        return False
    score, tid = best
    ticket = work.session.get(Ticket, tid)
    if ticket is None:  # deleted since the read (an admin's purge)
        return False
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


def _scan(work: Work, t: Ticket) -> list[tuple[float, repo.Candidate]]:
    """The recent tickets of other customers whose matter is like ``t``'s, with scores."""
    m = work.matching
    since = t.created_at - timedelta(minutes=m.incident_window_minutes)
    cands = repo.tickets_created_since(
        work.session, since, limit=m.incident_candidates, category=t.category or None
    )
    # By position, and the ticket's own values read once: an ORM attribute or a row's
    # name read per candidate cost more than scoring them (up to 500 a message).
    own, customer = t.id, t.customer
    texts = [None if c[0] == own or c[1] == customer else c[2] for c in cands]
    return [
        (score, repo.Candidate(*cands[i]))
        for i, score in incident_matches(t.match_text, texts, m.incident_similarity)
    ]


def _join_open(work: Work, t: Ticket, close: list[tuple[float, repo.Candidate]]) -> bool:
    """Link ``t`` to the most recently active open incident of the ``close`` tickets."""
    ids = {c.incident_id for _, c in close if c.incident_id is not None}
    found = (work.session.get(Incident, i) for i in ids)
    open_incidents = [i for i in found if i is not None and i.status == "open"]
    if not open_incidents:
        return False
    inc = max(open_incidents, key=lambda i: i.last_at)
    _link(work, inc, t, swept=_sweep(work, inc, t, close))
    return True


def _sweep(
    work: Work, inc: Incident, t: Ticket, close: list[tuple[float, repo.Candidate]]
) -> list[Ticket]:
    """Link to ``inc``, along with ``t``, the ``close`` tickets in no incident that are
    like one of the incident's tickets in ``close`` (all of ``t``'s window).

    A ticket committed in the moment between another instance's detection scan and its
    commit saw neither that incident nor enough similar tickets to open one, and the
    detection could not see it: left alone it would stay outside its outage. Being like
    ``t`` is not enough (similarity is not transitive: ``t`` may sit between two
    matters); the stray must also be like a ticket the incident already holds, the
    narrower rule: a stray like only ``t`` stays out.
    """
    least = work.matching.incident_similarity
    members = [c.match_text for _, c in close if c.incident_id == inc.id]
    strays = [
        c.id
        for _, c in close
        if c.incident_id is None and any(incident_score(c.match_text, o) >= least for o in members)
    ]
    if not strays:
        return []
    tickets = [work.session.get_one(Ticket, i) for i in strays]
    linked = incidents.attach_unlinked(work.session, inc.id, tickets, skip_locked=True)
    for other in linked:
        _linked_event(work, inc, other, "similar to a ticket that joined it later")
    return linked


def _customers(t: Ticket, close: list[tuple[float, repo.Candidate]]) -> set[str]:
    return {c.customer for _, c in close} | {t.customer}


def _to_detect(work: Work, t: Ticket) -> list[tuple[float, repo.Candidate]] | None:
    """Scan; join an open incident, or stop below the threshold (None); else the tickets
    an incident would be opened with."""
    close = _scan(work, t)
    if _join_open(work, t, close) or len(_customers(t, close)) < work.matching.incident_tickets:
        return None
    return close


def incident(work: Work) -> None:
    """Link a ticket this message opened to an incident, opening one at the threshold."""
    t = work.ticket
    if t is None or not work.opened or t.incident_id is not None:
        return
    if not informative(t.match_text) or (close := _to_detect(work, t)) is None:
        return
    # Another instance may have opened this outage's incident since the scan, from
    # tickets this one could not see then (its own, uncommitted): once it has committed
    # (the lock waits for that), the scan sees them and the ticket joins that incident.
    locked = repo.lock_incident_detection(work.session, t.category or "")
    if locked and (close := _to_detect(work, t)) is None:
        return
    _detect(work, t, close)


def _detect(work: Work, t: Ticket, close: list[tuple[float, repo.Candidate]]) -> None:
    """Open an incident of ``t`` and the ``close`` tickets (or join one opened meanwhile)."""
    m = work.matching
    customers = _customers(t, close)
    # Detecting is rare (once an outage): now the similar tickets are worth loading.
    similar = [(score, work.session.get_one(Ticket, c.id)) for score, c in close]
    # Only tickets still in no incident: another instance may have detected the same
    # outage since they were read, and taking its tickets would make its counts wrong.
    # When it has taken some, its incident is this outage: the ticket joins it instead.
    savepoint = work.session.begin_nested()
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
    unlinked = [o for _, o in similar if o.incident_id is None]
    linked = incidents.attach_unlinked(work.session, inc.id, unlinked)
    taken = [o.incident for o in unlinked if o not in linked]  # read again: committed
    taken_open = [i for i in taken if i is not None and i.status == "open"]
    if taken_open:
        savepoint.rollback()
        joined = max(taken_open, key=lambda i: i.last_at)
        # The scan's rows predate the other instance's commit: read their links again.
        now_close = [
            (score, c._replace(incident_id=o.incident_id))
            for (score, c), (_, o) in zip(close, similar, strict=True)
        ]
        _link(work, joined, t, swept=_sweep(work, joined, t, now_close))
        return
    savepoint.commit()
    for other in linked:
        _linked_event(work, inc, other, "detected with " + (t.ref or ""))
    t.incident = inc
    _linked_event(work, inc, t, "detected")
    # Nobody else sees this incident before commit: its counts are simply what it holds.
    inc.ticket_count = len(linked) + 1
    inc.customer_count = len({o.customer for o in linked} | {t.customer})
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


def _link(work: Work, inc: Incident, t: Ticket, *, swept: Sequence[Ticket] = ()) -> None:
    t.incident = inc
    _linked_event(work, inc, t, "similar to tickets of the open incident")
    logged: dict[str, Any] = {"incident": inc.ref}
    if swept:
        logged["swept"] = [o.ref for o in swept]
    work.events.append(("incident.updated", logged))
    work.joined_incident = JoinedIncident(inc.id, logged, tuple((o.id, o.customer) for o in swept))


def count_incident(work: Work) -> None:
    """Count the ticket ``incident`` linked in its incident's row: the pipeline's last step.

    Counted in the row, as they come (loading every linked ticket would make each report
    of a large outage cost more than the one before). The UPDATE locks that row until
    commit, and in an outage every instance's transactions link to it: run last, they
    wait for each other's commit, not for each other's whole pipeline
    (bench/incident_burst.py).
    """
    joined, t = work.joined_incident, work.ticket
    if joined is None or t is None:
        return
    linked = [(t.id, t.customer), *joined.swept]
    tickets, _ = incidents.count_link(work.session, joined.incident_id, linked, work.now)
    joined.logged["tickets"] = tickets


def _linked_event(work: Work, inc: Incident, t: Ticket, why: str) -> None:
    repo.add_event(
        work.session, t, "incident_linked", work.now, data={"incident": inc.ref, "reason": why}
    )
