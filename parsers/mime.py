"""Parse prepared bytes into a MIME tree: mail-parser first, stdlib compat32 after.

mail-parser (the product's chosen parser) builds a compat32 ``Message`` tree
and adds its own checks; its defect categories (``AddressHeaderDefect``,
``DateHeaderDefect``, …) are kept. When it raises (4.8.0 does on an mbox
``From `` line and on some epilogues; any exception counts), the same bytes
are parsed with ``email.parser.BytesParser(policy=compat32)``, which never
raises on malformed input and never touches ``policy.default``'s fragile
header parser (cpython gh-83281, ``KeyError`` from ``get_content()``). The
parsed tree is read, never re-serialised.
"""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

import mailparser

from parsers.text import clean_line

PARSER_MAILPARSER = "mail-parser"
PARSER_COMPAT32 = "compat32"


def parse_tree(data: bytes) -> tuple[Message, str, list[str]]:
    """Return the root Message, the parser that built it, and parser defects.

    ``RecursionError`` is not caught here: if compat32 recurses too deeply as
    well the message is beyond saving and ``parse_message`` reports it fatal.
    """
    try:
        parsed = mailparser.parse_from_bytes(data)
        root = parsed.message
        if not isinstance(root, Message):
            raise TypeError("no message object")
        categories = sorted(str(c) for c in parsed.defects_categories)
        return root, PARSER_MAILPARSER, categories
    except Exception as exc:  # any failure of the primary parser means fall back
        reason = clean_line(f"{type(exc).__name__}: {exc}", 160)
        fallback = f"mail-parser failed: {reason}; parsed with compat32"
    root = BytesParser(policy=compat32).parsebytes(data)
    return root, PARSER_COMPAT32, [fallback]
