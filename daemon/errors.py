"""One exception hierarchy: transient failures are retried, permanent ones quarantined."""

from __future__ import annotations


class BuzonError(Exception):
    """Base of every error Buzón raises on purpose."""


class TransientError(BuzonError):
    """Raised when retrying later may succeed (database locked or down, disk full)."""


class PermanentError(BuzonError):
    """Raised when retrying cannot help; the item is quarantined with this reason."""


class ConfigError(BuzonError):
    """Raised for an invalid configuration; the message names the key and the fix (exit 2)."""


class SpoolFullError(TransientError):
    """Raised when the spool has too little free space or inodes to take a message safely."""


class DatabaseUnavailableError(TransientError):
    """Raised when the database cannot be reached or is locked past the busy timeout."""


class WorkerCrashedError(BuzonError):
    """Raised when a worker process died while handling an item.

    Neither transient nor permanent: the item is retried, but each crash counts
    one attempt so a poison message ends in quarantine instead of a crash loop.
    """


class ParseTimeoutError(PermanentError):
    """Raised when parsing one message exceeded the configured time limit."""


class UsageError(Exception):
    """Raised by a CLI command for a bad argument or missing setting (exit 2)."""
