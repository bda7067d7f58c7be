"""Collect the evidence that a machine sent a message (RFC 3834 loop prevention).

Headers: ``Auto-Submitted`` (lower-cased, the value before ``;``),
``Precedence``, ``X-Auto-Response-Suppress``, ``List-Id``, ``Return-Path: <>``
(null sender). Reports: ``multipart/report`` with ``report-type=delivery-status``
or ``disposition-notification``, or a ``message/(global-)delivery-status`` or
``message/(global-)disposition-notification`` part outside forwarded messages.
A bounce is a DSN, a message with ``X-Failed-Recipients``, or a classic bounce:
a MAILER-DAEMON / postmaster sender (or a null sender) with a bounce subject
such as "Undelivered Mail Returned to Sender" or "failure notice".
"""

from __future__ import annotations

import re
from email import utils
from email.message import Message

from parsers.headers import HeaderIndex
from parsers.model import Address, AutoSignals
from parsers.text import clean_line

_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:ed|able)|returned mail|returned to sender|delivery status notification"
    r"|mail delivery (?:failed|failure|system|subsystem)|failure notice|delivery (?:failure|failed)"
    r"|could not be delivered|non-?delivery|nondeliverable|mail system error",
    re.I,
)
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_MDN_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
_COMMENT = re.compile(r"\([^()]*\)")


def _first(index: HeaderIndex, name: str, max_chars: int = 200) -> str:
    value = index.first(name)
    return "" if value is None else clean_line(value, max_chars)


def _report_type(root: Message) -> str:
    if root.get_content_type() != "multipart/report":
        return ""
    try:
        value = root.get_param("report-type")
    except Exception:  # hostile parameters
        return ""
    if value is None:
        return ""
    return clean_line(str(utils.collapse_rfc2231_value(value)), 100).lower()


def is_null_sender(index: HeaderIndex) -> bool:
    """True when the first Return-Path is ``<>`` (comments and spaces ignored)."""
    value = index.first("return-path")
    return value is not None and "".join(_COMMENT.sub("", value).split()) == "<>"


def auto_signals(
    index: HeaderIndex,
    root: Message,
    content_types: set[str],
    sender: Address,
    subject: str,
) -> AutoSignals:
    """Read every loop-prevention signal from a parsed message."""
    report_type = _report_type(root)
    is_dsn = report_type == "delivery-status" or bool(content_types & _DSN_TYPES)
    is_mdn = report_type == "disposition-notification" or bool(content_types & _MDN_TYPES)
    null_sender = is_null_sender(index)
    local = sender.addr_spec.rsplit("@", 1)[0].lower()
    daemon = local in _DAEMONS or "mail delivery" in sender.display_name.lower()
    classic = (daemon or null_sender) and bool(_BOUNCE_SUBJECT.search(subject))
    auto_submitted = _first(index, "auto-submitted").split(";", 1)[0].strip().lower()
    precedence = _first(index, "precedence").split(";", 1)[0].strip().lower()
    return AutoSignals(
        auto_submitted=auto_submitted,
        precedence=precedence,
        auto_response_suppress=_first(index, "x-auto-response-suppress"),
        list_id=_first(index, "list-id", 300),
        is_bounce=is_dsn or classic or index.first("x-failed-recipients") is not None,
        is_dsn=is_dsn,
        is_mdn=is_mdn,
        null_sender=null_sender,
    )
