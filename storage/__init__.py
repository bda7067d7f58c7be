"""Persistence: SQLAlchemy 2 models, sessions, repositories and Alembic migrations.

The only package that writes SQL. SQLite (WAL, synchronous=FULL) by default,
PostgreSQL through the same URL setting.
"""
