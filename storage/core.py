"""Core statements run on a session's connection, past the ORM's work for each statement.

``Session.execute`` of a statement that names ORM attributes (``select(Ticket.id)``,
``update(Incident)``) goes through the ORM's execution path: its compile state, its
loading or bulk-update machinery, the session's events. A statement that only reads
columns, or writes with ``synchronize_session=False``, needs none of it. On PostgreSQL
that path cost ~90 µs of CPU a statement over the same statement on the connection
(``select(Message.id, Message.received_at)``: 254 against 162 µs, median of five runs of
2,000), and an ingested message runs several such statements.

Only for statements whose result the session need not know about: rows as tuples, or
writes whose objects the caller does not hold loaded (or expires itself).
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session


def connection(session: Session) -> Connection:
    """The session's connection in its transaction, after the flush ``Session.execute``
    would have done: a session that autoflushes sees its pending objects in the
    statement's results either way."""
    if session.autoflush:
        session.flush()
    return session.connection()
