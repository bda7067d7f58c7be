"""One statement run for many rows, each value converted by its column's processor once.

``Session.execute(statement, rows)`` sends every row through SQLAlchemy's generic
parameter machinery (per row: a parameter dictionary built, each bind's processor
looked up and called); for a scheduler batch of thousands of events and ticket
updates that machinery costs more than the database's own ``executemany``
(bench/scheduler.py). ``executemany`` compiles the statement once per dialect and
set of keys, keeps each bind's processor (the same ones SQLAlchemy calls, so the
database receives the same values) and hands the driver plain rows in the
session's transaction.

For statements whose values are all given as parameters: INSERT of a table's
columns, UPDATE ... WHERE through ``bindparam``. Column defaults are not applied.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Insert, Update
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    keys: tuple[str, ...]  # the row's keys, in the driver's parameter order
    processors: tuple[_Processor, ...]
    positional: bool


def executemany(
    session: Session, statement: Insert | Update, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Run ``statement`` once per row of ``rows`` (all with the same keys); the rows it
    changed in all (the driver's count; both drivers add up an executemany's).

    ``statement`` should live as long as the process (a module constant, or made by a
    cached function): its compiled form is kept for the next call with it.
    """
    if not rows:
        return 0
    conn = session.connection()
    plan = _compile(statement, conn.dialect, tuple(rows[0]))
    # The row's values in the driver's order in one C call, then only the columns that
    # have a processor converted (integers and plain strings have none).
    keys = plan.keys
    get: Callable[[Mapping[str, Any]], Any] = (
        operator.itemgetter(*keys) if keys else (lambda _row: ())
    )
    convert = [(i, p) for i, p in enumerate(plan.processors) if p is not None]
    params: list[Any] = []
    for row in rows:
        values = [get(row)] if len(keys) == 1 else list(get(row))
        for i, process in convert:
            values[i] = process(values[i])
        params.append(
            tuple(values) if plan.positional else dict(zip(plan.keys, values, strict=True))
        )
    return max(conn.exec_driver_sql(plan.sql, params).rowcount, 0)


@functools.lru_cache(maxsize=64)
def _compile(statement: Insert | Update, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    # for_executemany: an INSERT must not grow a RETURNING of its new keys (psycopg).
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    if (
        compiled.escaped_bind_names
        or compiled.post_compile_params
        or compiled.literal_execute_params
    ):
        # The driver would get names or values SQLAlchemy rewrites at execution time.
        raise TypeError(
            f"executemany takes plain bound parameters only, not expanding IN, literal "
            f"or renamed binds: {compiled.string!r}"
        )
    order = list(compiled.positiontup or ()) if dialect.positional else list(compiled.binds)
    missing = set(order) - set(keys)
    if missing:
        raise ValueError(f"rows lack the parameters {sorted(missing)} of {compiled.string!r}")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order
    )
    return _Compiled(compiled.string, tuple(order), processors, dialect.positional)
