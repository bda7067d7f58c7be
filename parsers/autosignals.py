"""Decide whether a machine sent a message, which kind of machine mail it is, and why.

RFC 3834 loop prevention and report routing. The first rule that matches sets
``AutoSignals.kind``; ``reason`` names the header or part that decided:

1. ``feedback_report``: ``multipart/report; report-type=feedback-report`` or a
   ``message/feedback-report`` part (ARF, RFC 5965).
2. ``bounce`` or ``delivery_report``: a DSN (RFC 3464), by ``report-type`` or a
   ``message/(global-)delivery-status`` part. A bounce when a recipient's
   ``Action`` is ``failed`` (``Status: 5.x.x`` when Action is missing) or no
   recipient is readable (DSNs are nearly always failures); a delivery report
   when every recipient was delivered, relayed, expanded or delayed.
3. ``read_report``: an MDN (RFC 8098), by ``report-type`` or part.
4. Reports without MIME structure: ``X-Failed-Recipients``, or a MAILER-DAEMON /
   postmaster (or null) sender with a bounce subject ("failure notice"), is a
   bounce; with a success or delay subject, a delivery report.
5. ``out_of_office``: ``Auto-Submitted: auto-replied``, ``X-Autoreply``,
   ``X-Autorespond``, ``Precedence: auto_reply``.
6. ``list``: ``List-Id``, ``List-Post``, ``List-Unsubscribe``, ``Mailing-List``,
   ``Precedence: list``.
7. ``out_of_office``: an auto-reply subject ("Automatic reply:", "Respuesta
   automática", "Извън офиса", …) *with* machine evidence: another automatic
   header or a null sender. A subject alone is something a person can type.
8. ``list``: ``Precedence: bulk``.
9. ``auto_generated``: any other ``Auto-Submitted`` but ``no``, ``Precedence:
   junk``, ``X-Auto-Response-Suppress``, a null sender (``Return-Path: <>``),
   any other ``multipart/report``.

``returned_message_ids`` (bare, normalised by ``parsers.headers``): an MDN's
``Original-Message-ID``; the Message-ID of a returned ``message/rfc822`` or
``text/rfc822-headers`` part; for bounces and delivery reports without one, a
``Message-ID:`` line of the copy quoted in the text body (qmail, Exim); last,
for bounces, delivery, read reports and auto-replies, ``In-Reply-To`` then
``References`` (nearest first). A DSN's ``Original-Envelope-Id`` is the
sender's envelope id, not a Message-ID, and is never used.

Report parts are read by ``parsers.reports`` (bounded: the first 32 parts
outside forwarded messages, 64 KiB of a report body); the text body is
searched in its first 64 KiB only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import utils
from email.message import Message

from parsers.headers import HeaderIndex, id_list
from parsers.model import Address, AutoKind, AutoSignals
from parsers.reports import (
    ARF_TYPE,
    DSN_TYPES,
    MAX_REPORT_CHARS,
    MDN_TYPES,
    ReportParts,
    dsn_verdict,
    keyword,
    merged_fields,
    report_parts,
    returned_id,
)
from parsers.text import clean_line

MAX_RETURNED_IDS = 10
MAX_REASON_CHARS = 300

_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:ed|able)|returned mail|returned to sender|delivery status notification"
    r"|mail delivery (?:failed|failure|system|subsystem)|failure notice"
    r"|delivery (?:has )?(?:failure|failed)|could not be delivered|non-?delivery|nondeliverable"
    r"|mail system error",
    re.I,
)
# Checked before _BOUNCE_SUBJECT: "Delivery Status Notification (Delay)" matches both.
_REPORT_SUBJECT = re.compile(
    r"delivery (?:status )?notification:? *\(?(?:success|delay|relay)"
    r"|delivery has been successful|successfully delivered|^(?:delivered|relayed|delivery delayed):"
    r"|delayed mail|could not send message for past",
    re.I,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"automatic reply|auto[- ]?reply|auto[- ]?response|out of (?:the )?office"
    r"|respuesta autom[aá]tica|fuera de (?:la )?oficina"
    r"|автоматичен отговор|извън офиса"
    r"|r[ée]ponse automatique|automatische antwort|abwesenheit",
    re.I,
)
_REPORT_TYPES: dict[str, AutoKind] = {
    "feedback-report": "feedback_report",
    "delivery-status": "bounce",  # or delivery_report, by the recipients' actions
    "global-delivery-status": "bounce",
    "disposition-notification": "read_report",
    "global-disposition-notification": "read_report",
}
# In this order when report-type does not say: ARF reports may carry DSN-like parts.
_REPORT_PARTS: tuple[tuple[frozenset[str], AutoKind], ...] = (
    (frozenset({ARF_TYPE}), "feedback_report"),
    (DSN_TYPES, "bounce"),
    (MDN_TYPES, "read_report"),
)
_INLINE_ID = re.compile(
    r"^[ \t>]*message-id:[ \t]*(?:\n[ \t]+)?(<[^<>\n]{1,998}>|[^\s<>]{1,998})", re.I | re.M
)
_COMMENT = re.compile(r"\([^()]*\)")

Decision = tuple[AutoKind, str]


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


def _report(
    report_type: str, content_types: set[str], parts: ReportParts
) -> tuple[Decision, list[str]]:
    """The report kind (or ("", "")) and, for an MDN, its Original-Message-ID."""
    kind = _REPORT_TYPES.get(report_type, "")
    where = f"multipart/report; report-type={report_type}"
    if not kind:  # no or an unknown report-type (anonymised samples): the parts decide
        for types, candidate in _REPORT_PARTS:
            if found := sorted(content_types & types):
                kind, where = candidate, f"a {found[0]} part"
                break
    if not kind:
        return ("", ""), []
    part = {"feedback_report": parts.feedback, "bounce": parts.dsn}.get(kind, parts.mdn)
    if kind == "bounce":
        return dsn_verdict(where, part), []
    fields = merged_fields(part) if part is not None else {}
    if kind == "feedback_report":
        feedback_type = fields.get("feedback-type", "")
        return (kind, where + (f", Feedback-Type: {feedback_type}" if feedback_type else "")), []
    disposition = fields.get("disposition", "")
    original = fields.get("original-message-id", "")
    reason = where + (f", Disposition: {disposition}" if disposition else "")
    return (kind, reason), list(id_list([original])) if original else []


def _classic(index: HeaderIndex, sender: Address, subject: str, null_sender: bool) -> Decision:
    """A bounce or delivery report recognised by headers and subject alone."""
    failed = index.first("x-failed-recipients")
    if failed is not None:
        return "bounce", f"X-Failed-Recipients: {clean_line(failed, 200)}"
    local = sender.addr_spec.rsplit("@", 1)[0].lower()
    daemon = local in _DAEMONS or "mail delivery" in sender.display_name.lower()
    if not (daemon or null_sender):
        return "", ""
    who = (
        f"From: {clean_line(sender.addr_spec, 100)}"
        if daemon
        else "a null sender (Return-Path: <>)"
    )
    shown = clean_line(subject, 80)
    if _REPORT_SUBJECT.search(subject):
        return "delivery_report", f'{who} with the delivery report subject "{shown}"'
    if _BOUNCE_SUBJECT.search(subject):
        return "bounce", f'{who} with the bounce subject "{shown}"'
    return "", ""


@dataclass(frozen=True)
class _Headers:
    """The loop-prevention header values, normalised."""

    auto_submitted: str
    precedence: str
    suppress: str
    list_id: str
    null_sender: bool


def _machine_evidence(index: HeaderIndex, h: _Headers) -> str:
    """The first header that shows a machine sent this, for an auto-reply subject.

    ``X-MS-Exchange-Inbox-Rules-Loop`` counts only here: Exchange also adds it
    when an inbox rule forwards or redirects a person's mail, so on its own it
    must not stop a customer's message from opening a ticket.
    """
    loop = index.first("x-ms-exchange-inbox-rules-loop")
    for found, text in (
        (h.auto_submitted not in ("", "no"), f"Auto-Submitted: {h.auto_submitted}"),
        (bool(h.suppress), f"X-Auto-Response-Suppress: {h.suppress}"),
        (loop is not None, f"X-MS-Exchange-Inbox-Rules-Loop: {clean_line(loop or '', 100)}"),
        (h.precedence in ("bulk", "junk"), f"Precedence: {h.precedence}"),
        (h.null_sender, "a null sender (Return-Path: <>)"),
    ):
        if found:
            return text
    return ""


def _present(index: HeaderIndex, names: tuple[str, ...], unless: str = "") -> str:
    """``Name: value`` of the first of ``names`` present (and not ``unless``), else ""."""
    for name in names:
        if index.first(name.lower()) is not None:
            value = _first(index, name.lower(), 100)
            if not unless or keyword(value) != unless:
                return f"{name}: {value}"
    return ""


def _by_headers(index: HeaderIndex, h: _Headers, subject: str, report: str) -> Decision:
    """Rules 5-9 of the module docstring, in order, as data."""
    autoreply = _present(index, ("X-Autoreply", "X-Autorespond"), unless="no")
    listed = f"List-Id: {h.list_id}" if h.list_id else ""
    listed = listed or _present(index, ("List-Post", "List-Unsubscribe", "Mailing-List"))
    evidence = _machine_evidence(index, h)
    reply_subject = bool(evidence) and _AUTO_REPLY_SUBJECT.search(subject[:300]) is not None
    rules: tuple[tuple[bool, AutoKind, str], ...] = (
        (h.auto_submitted == "auto-replied", "out_of_office", "Auto-Submitted: auto-replied"),
        (bool(autoreply), "out_of_office", autoreply),
        (h.precedence == "auto_reply", "out_of_office", "Precedence: auto_reply"),
        (bool(listed), "list", listed),
        (h.precedence == "list", "list", "Precedence: list"),
        (
            reply_subject,
            "out_of_office",
            f'auto-reply subject "{clean_line(subject, 80)}" with {evidence}',
        ),
        (h.precedence == "bulk", "list", "Precedence: bulk"),
        (
            h.auto_submitted not in ("", "no"),
            "auto_generated",
            f"Auto-Submitted: {h.auto_submitted}",
        ),
        (h.precedence == "junk", "auto_generated", "Precedence: junk"),
        (bool(h.suppress), "auto_generated", f"X-Auto-Response-Suppress: {h.suppress}"),
        (h.null_sender, "auto_generated", "a null sender (Return-Path: <>)"),
        (bool(report), "auto_generated", report),
    )
    return next(((kind, why) for found, kind, why in rules if found), ("", ""))


def _returned(
    kind: AutoKind, parts: ReportParts, mdn_ids: list[str], index: HeaderIndex, text: str
) -> tuple[str, ...]:
    """``returned_message_ids`` in the order of the module docstring."""
    ids = list(mdn_ids)
    if kind in ("bounce", "delivery_report", "read_report", "feedback_report"):
        ids += [returned_id(part) for part in parts.returned]
    if not any(ids) and kind in ("bounce", "delivery_report"):
        inline = _INLINE_ID.search(text, 0, MAX_REPORT_CHARS)
        ids += id_list([inline.group(1)]) if inline else ()
    if not any(ids) and kind in ("bounce", "delivery_report", "read_report", "out_of_office"):
        ids += id_list(index.all("in-reply-to"))
        ids += reversed(id_list(index.all("references")))
    return tuple([i for i in dict.fromkeys(ids) if i][:MAX_RETURNED_IDS])


def auto_signals(
    index: HeaderIndex,
    root: Message,
    content_types: set[str],
    *,
    sender: Address,
    subject: str,
    text: str = "",
) -> AutoSignals:
    """Read every loop-prevention signal and decide the kind (module docstring)."""
    report_type = _report_type(root)
    parts = report_parts(root)
    h = _Headers(
        auto_submitted=keyword(_first(index, "auto-submitted")),
        precedence=keyword(_first(index, "precedence")),
        suppress=_first(index, "x-auto-response-suppress"),
        list_id=_first(index, "list-id", 300),
        null_sender=is_null_sender(index),
    )
    (kind, reason), mdn_ids = _report(report_type, content_types, parts)
    classic = _classic(index, sender, subject, h.null_sender)
    if not kind:
        kind, reason = classic
    if not kind:
        report = ""
        if root.get_content_type() == "multipart/report":  # of a type not known here
            report = f"multipart/report; report-type={report_type or '(none)'}"
        kind, reason = _by_headers(index, h, subject, report)
    return AutoSignals(
        auto_submitted=h.auto_submitted,
        precedence=h.precedence,
        auto_response_suppress=h.suppress,
        list_id=h.list_id,
        is_bounce=kind == "bounce" or classic[0] == "bounce",
        is_dsn=report_type in ("delivery-status", "global-delivery-status")
        or bool(content_types & DSN_TYPES),
        is_mdn=report_type in ("disposition-notification", "global-disposition-notification")
        or bool(content_types & MDN_TYPES),
        null_sender=h.null_sender,
        kind=kind,
        reason=clean_line(reason, MAX_REASON_CHARS) if kind else "",
        returned_message_ids=_returned(kind, parts, mdn_ids, index, text) if kind else (),
    )
