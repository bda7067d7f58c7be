"""Parse functions for worker processes that misbehave on purpose (importable by spawn)."""

from __future__ import annotations

import os
import time

from parsers import ParsedMessage, ParseLimits, parse_message


def crash_on_marker(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    """Kill the worker process, like a segfault in a C extension would, on a marked message."""
    if b"X-Crash-Parser: yes" in raw:
        os._exit(70)
    return parse_message(raw, limits=limits)


def hang_on_marker(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    """Never return on a marked message, like a parser stuck in a pathological loop."""
    if b"X-Hang-Parser: yes" in raw:
        time.sleep(3600)
    return parse_message(raw, limits=limits)
