"""Bytes in, frozen dataclasses out: everything Buzón reads from a raw message.

No I/O and no database here; ``parse_message`` never raises.
"""

from __future__ import annotations

from parsers.authresults import dmarc_fail_for
from parsers.message import generated_message_id, parse_message
from parsers.model import (
    AUTO_KINDS,
    Address,
    Attachment,
    AuthResult,
    AutoKind,
    AutoSignals,
    ParsedMessage,
    ParseLimits,
    Voicemail,
    VoicemailAudio,
)

__all__ = [
    "AUTO_KINDS",
    "Address",
    "Attachment",
    "AuthResult",
    "AutoKind",
    "AutoSignals",
    "ParseLimits",
    "ParsedMessage",
    "Voicemail",
    "VoicemailAudio",
    "dmarc_fail_for",
    "generated_message_id",
    "parse_message",
]
