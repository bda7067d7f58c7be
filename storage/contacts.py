"""Authorised contacts: which addresses and domains act for which customer.

A pattern is an address (``ana@cliente.es``) or a whole domain
(``@cliente.es``). An address entry wins over its domain's entry, so one
person at a shared domain can belong to a different customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from storage import core
from storage.models import AuthorisedContact


@dataclass(frozen=True, slots=True)
class Authorisation:
    """The customer a sender acts for, and the entry that says so."""

    customer: str
    pattern: str


def normalise(pattern: str) -> str:
    """Lower case, no surrounding space or angle brackets: how patterns are stored."""
    return pattern.strip().strip("<>").strip().lower()


# Every ingested message asks: built once, not a select() and its cache key each time;
# rows on the connection, not entities (``storage.core``).
_AUTHORISING = select(AuthorisedContact.pattern, AuthorisedContact.customer).where(
    AuthorisedContact.pattern.in_([bindparam("address"), bindparam("domain")])
)


def authorisation(session: Session, address: str) -> Authorisation | None:
    """The entry authorising ``address`` (by address, else by domain), or None."""
    address = normalise(address)
    if "@" not in address:
        return None
    domain = "@" + address.rpartition("@")[2]
    rows = core.connection(session).execute(_AUTHORISING, {"address": address, "domain": domain})
    found = {pattern: customer for pattern, customer in rows}
    for wanted in (address, domain):
        if wanted in found:
            return Authorisation(found[wanted], wanted)
    return None


def add(
    session: Session, pattern: str, customer: str, *, note: str, by: str, at: datetime
) -> tuple[AuthorisedContact, bool]:
    """Add or move ``pattern`` to ``customer``; returns the row and whether it was new."""
    pattern = normalise(pattern)
    row = session.scalar(select(AuthorisedContact).where(AuthorisedContact.pattern == pattern))
    if row is None:
        row = AuthorisedContact(
            pattern=pattern, customer=customer, note=note, added_at=at, added_by=by
        )
        session.add(row)
        session.flush()
        return row, True
    row.customer, row.note, row.added_at, row.added_by = customer, note, at, by
    return row, False


def remove(session: Session, pattern: str) -> AuthorisedContact | None:
    """Delete ``pattern``'s entry; returns what was removed, or None if there was none."""
    row = session.scalar(
        select(AuthorisedContact).where(AuthorisedContact.pattern == normalise(pattern))
    )
    if row is not None:
        session.delete(row)
    return row


def listing(session: Session, customer: str | None = None) -> list[AuthorisedContact]:
    query = select(AuthorisedContact).order_by(
        AuthorisedContact.customer, AuthorisedContact.pattern
    )
    if customer:
        query = query.where(AuthorisedContact.customer == customer)
    return list(session.scalars(query))
