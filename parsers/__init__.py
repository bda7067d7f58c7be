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
    Voicemail,
    VoicemailAudio,
)

__all__ = [
    "Address",
    "Attachment",
    "AutoSignals",
    "ParseLimits",
    "ParsedMessage",
    "Voicemail",
    "VoicemailAudio",
    "generated_message_id",
    "parse_message",
]
