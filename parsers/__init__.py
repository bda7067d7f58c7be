"""Bytes in, frozen dataclasses out: everything Buzón reads from a raw message.

No I/O and no database here; ``parse_message`` never raises.
"""

from __future__ import annotations

from parsers.message import generated_message_id, parse_message
from parsers.model import (
    Address,
    Attachment,
    AutoSignals,
    ParsedMessage,
    ParseLimits,
)

__all__ = [
    "Address",
    "Attachment",
    "AutoSignals",
    "ParseLimits",
    "ParsedMessage",
    "generated_message_id",
    "parse_message",
]
