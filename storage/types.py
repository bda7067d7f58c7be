"""Column types that make SQLite and PostgreSQL accept and return the same values.

PostgreSQL ``text`` rejects NUL bytes and lone surrogates that SQLite stores
happily, and SQLite forgets time zones; these types remove both differences
at the boundary so no caller has to remember them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import DateTime, Dialect, String, Text
from sqlalchemy.types import TypeDecorator


def clean_text(value: str) -> str:
    """Return ``value`` without NUL and with lone surrogates replaced, so any backend stores it."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    return value


_Processor = Callable[[Any], Any]


class SafeText(TypeDecorator[str]):
    """Unbounded text, sanitised on the way in."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(value)


class SafeString(TypeDecorator[str]):
    """Bounded text (``length`` characters), sanitised and truncated on the way in."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        value = clean_text(value)
        length: int | None = getattr(self.impl, "length", None)
        return value[:length] if length else value


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend; naive input is refused, not guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        # SQLite stores the string; keep it naive-UTC so comparisons sort correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # On SQLite each value went through two processors (this type's, then the dialect's
    # string formatting); the scheduler binds tens of thousands per pass, so SQLite gets
    # one function with the dialect's exact text (``YYYY-MM-DD HH:MM:SS.ffffff``, which
    # must not change: stored times are compared as strings; tests/storage/test_types.py).

    def bind_processor(self, dialect: Dialect) -> _Processor | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # The last value's text is kept: a scheduler batch binds its one ``now`` thousands
        # of times (every event's ``at``, every mail's times), and isoformat is ~1 us.
        # Equal instants give equal text whatever their zone; one tuple, so another thread
        # never sees one value with another's text.
        last: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")

        def process(value: datetime | None) -> str | None:
            nonlocal last
            if value is None:
                return None
            seen, text = last
            if value == seen:
                return text
            t = _as_utc(value)  # formatted from the fields: ``replace`` is ~1 us on its own
            fields = (t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)
            text = _SQLITE_TIME % fields
            last = (value, text)
            return text

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> _Processor | None:
        # Reading, likewise: the dialect's own parse (``fromisoformat``) and this type's in
        # one call, not two; a scheduler batch reads 500 rows of seven times each.
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # The UTC offset is appended to the text rather than set with ``replace``, which
        # costs ~8x the parse; a text that has an offset already (a row written by hand)
        # fails that parse and is read as it is.
        parse = datetime.fromisoformat

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                t = parse(value + "+00:00")
            except ValueError:
                t = parse(value)
            if t.tzinfo is UTC:
                return t
            return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)

        return process


_SQLITE_TIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # SQLAlchemy's SQLite DATETIME text


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column; attach a time zone")
    return value.astimezone(UTC)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def json_dumps(value: Any) -> str:
    """The JSON text of ``value`` with every string storable on any backend.

    The engine's serializer for JSON columns (``storage.engine``): one C-speed
    encode, and only the rare document with a NUL (written ``\\u0000``), a lone
    surrogate (which UTF-8 cannot encode) or a non-string key is cleaned by the
    walk and encoded again. NaN is written ``null``: PostgreSQL refuses ``NaN``.
    """
    try:
        out = _encode(value)
    except (UnicodeEncodeError, TypeError):
        out = _encode(_clean_json(value))  # still a TypeError for a value JSON cannot hold
    else:
        if b"\\u0000" in out:
            out = _encode(_clean_json(value))
    return out.decode()


def json_loads(text: str | bytes) -> Any:
    """The value of a JSON column; rows written before ``json_dumps`` may hold ``NaN``."""
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return json.loads(text)
