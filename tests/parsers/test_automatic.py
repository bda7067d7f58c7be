"""LOOP-01..04: the kind of machine mail, why, and which message a report returns."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CORPUS, corpus_files
from parsers import AUTO_KINDS, AutoSignals, parse_message

MIMEKIT = "mimekit/UnitTests/TestData/messages/"
NODEMAILER = "nodemailer-mailparser/test/fixtures/"
CPYTHON = "cpython-test_email/Lib/test/test_email/data/"
SPAMSCOPE = "spamscope-mail-parser/tests/mails/"
MIME4J = "apache-james-mime4j/"
CRYMAP = "crymap/src/test_data/"

# (corpus file, kind, returned Message-IDs, words the reason must contain).
# Each row was checked by opening the file; the comment says what decides.
CORPUS_KINDS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    # Postfix DSN behind Proofpoint: the per-recipient block is base64 inside the part.
    (
        MIMEKIT + "bounce.txt",
        "bounce",
        ("44565655.JitbitHelpdesk.13439.691a0afc-a0a0-457c-8208-f20b7c4a4cb1@jitbit.com",),
        ("report-type=delivery-status", "Action: failed", "netec.test@netecgc.com"),
    ),
    (
        MIMEKIT + "delivery-status.txt",
        "bounce",
        ("31FC7EB4.41C6@netscape.com",),
        ("Action: failed", "newsletter-request@imusic.com"),
    ),
    (
        MIMEKIT + "delivery-status-no-blank-line.txt",
        "bounce",
        ("31FC7EB4.41C6@netscape.com",),
        ("Action: failed", "newsletter-request@imusic.com"),
    ),
    # Exim: the returned message has no Message-ID, so nothing can be returned.
    (
        MIMEKIT + "delivery-status2.txt",
        "bounce",
        (),
        ("Action: failed", "source@domain.com"),
    ),
    # No Action field at all: Status 5.5.0 is a permanent failure.
    (
        MIMEKIT + "delivery-status-multiple-blank-lines.txt",
        "bounce",
        (),
        ("Status: 5.5.0 (no Action)", "orig_recip@customer.com"),
    ),
    # Anonymised: report-type and Action are x's; the part type still makes it a DSN.
    (
        MIMEKIT + "delivery-status.anonymized.eml",
        "bounce",
        ("xxxxxxxx.xxxx@xxxxxxxx.xxx",),
        ("message/delivery-status part", "taken as a failure"),
    ),
    (
        MIMEKIT + "disposition-notification.txt",
        "read_report",
        ("199509192301.23456@example.org",),
        ("report-type=disposition-notification", "displayed"),
    ),
    (
        MIMEKIT + "disposition-notification.anonymized.eml",
        "read_report",
        ("xxxxxxxxxxxx.xxxxx@xxxxxxx.xxx",),
        ("message/disposition-notification part",),
    ),
    # ARF; the returned spam's Message-ID has no angle brackets.
    (
        MIMEKIT + "feedback-report.txt",
        "feedback_report",
        ("8787KJKJ3K4J3K4J3K4J3.mail@example.net",),
        ("report-type=feedback-report", "Feedback-Type: abuse"),
    ),
    # Amazon SES: the bounce's own Message-ID differs from the returned one.
    (
        NODEMAILER + "delivery-status.eml",
        "bounce",
        ("xxxxx@email.amazonses.com",),
        ("Action: failed", "xxxx@xxxx.com"),
    ),
    # A DSN relayed by Mailman to the list owner: the report wins over List-Id.
    (
        CPYTHON + "msg_16.txt",
        "bounce",
        ("002001c144a6$8752e060$56104586@oxy.edu",),
        ("message/delivery-status part", "jangel1@cougar.noc.ucla.edu"),
    ),
    # text/rfc822-headers returns the original header only.
    (
        CPYTHON + "msg_43.txt",
        "bounce",
        ("edab.7804f5cb8070@python.org",),
        ("Action: failed", "and 8 more"),
    ),
    # The boundary parameter is cut off: no parts, so the id comes from the text copy.
    (
        CPYTHON + "msg_25.txt",
        "bounce",
        ("01040616033903.00962@server",),
        ("without a readable delivery-status part",),
    ),
    # A report-type=delivery-status without the part; the returned message has no id.
    (CPYTHON + "msg_05.txt", "bounce", (), ("taken as a failure",)),
    # MailSite sends the unregistered message/rfc822-headers.
    (
        SPAMSCOPE + "mail_malformed_2",
        "bounce",
        ("004801d1fc84$01c934ac$b247f0b7$@infospacemail.com",),
        ("Action: failed", "abh@netpar.com.br"),
    ),
    # Sun Internet Mail Server success notice flattened to text/plain by the Enron export.
    (
        CRYMAP + "enron_keavey-p_deleted_items_127.eml",
        "delivery_report",
        ("3891F8E98C93214B9E3E913CB7BF600220DBAE@NAHOU-MSMBX03V.corp.enron.com",),
        ("postmaster@sims1.rcsntx.swbell.net", "Delivery has been successful"),
    ),
    (
        MIME4J + "dom/src/test/resources/mime4j-219-new-date-time-format.msg",
        "list",
        (),
        ("List-Id: Squeak Virtual Machine Development Discussion",),
    ),
    (NODEMAILER + "large_text.eml", "list", (), ("List-Id: Ubuntu bug tracker changes",)),
    (SPAMSCOPE + "mail_test_13", "list", (), ("List-Id:",)),  # Mailchimp
    (SPAMSCOPE + "mail_test_5", "list", (), ("List-Unsubscribe:",)),  # a newsletter
    (
        MIME4J + "core/src/test/resources/mimetools-testmsgs/jt-0498.msg",
        "list",
        (),
        ("Precedence: list",),
    ),
    (CRYMAP + "dovecot-prefer-standalone-daemons.eml", "list", (), ("Precedence: bulk",)),
    (SPAMSCOPE + "mail_test_16", "auto_generated", (), ("Precedence: junk",)),  # GTUBE test
    # The first message of an mbox, delivered with Return-Path: <>.
    ("mimekit/UnitTests/TestData/mbox/content-length.mbox.txt", "auto_generated", (), ("null",)),
]

# Mail a person wrote: questions, forwards, replies, even a forwarded bounce and spam.
PERSON_WRITTEN = [
    CRYMAP + "enron_farmer-d_entex_1.eml",
    CRYMAP + "enron_dasovich-j_notes_inbox_3944.eml",  # "Fwd: failure delivery" by a person
    CRYMAP + "rfc3501_p56.eml",
    CRYMAP + "dkim-lingl-rsa-sha1.eml",
    MIMEKIT + "simple-multipart.eml",
    MIMEKIT + "epilogue.txt",
    "nodemailer-mailparser/examples/simple.eml",
    NODEMAILER + "spam.eml",  # spam, but no header claims a machine sent it
    MIME4J + "core/src/test/resources/mimetools-testmsgs/multi-igor.msg",
    CPYTHON + "msg_45.txt",
]


def _raw(*lines: str, body: str = "Hello.\r\n") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def _auto(raw: bytes) -> AutoSignals:
    parsed = parse_message(raw)
    assert parsed.fatal == ""
    return parsed.auto


@pytest.mark.parametrize(("name", "kind", "returned", "words"), CORPUS_KINDS)
def test_corpus_machine_mail_is_classified(
    corpus_file: Callable[[str], bytes],
    name: str,
    kind: str,
    returned: tuple[str, ...],
    words: tuple[str, ...],
) -> None:
    """LOOP-04: each report, list and machine mail of the corpus gets its kind and ids."""
    auto = parse_message(corpus_file(name)).auto
    assert (auto.kind, auto.returned_message_ids) == (kind, returned), auto.reason
    assert auto.is_automatic
    for word in words:
        assert word in auto.reason


def test_bounce_with_a_mangled_boundary_is_still_a_bounce(
    corpus_file: Callable[[str], bytes],
) -> None:
    """MIME-tools badbound.msg: a postmaster bounce subject decides, whatever the MIME."""
    auto = parse_message(
        corpus_file(MIME4J + "core/src/test/resources/mimetools-testmsgs/badbound.msg")
    ).auto
    assert auto.kind == "bounce" and auto.is_bounce
    assert "Mail System Error - Returned Mail" in auto.reason


@pytest.mark.parametrize("name", PERSON_WRITTEN)
def test_corpus_person_mail_is_not_automatic(
    corpus_file: Callable[[str], bytes], name: str
) -> None:
    """LOOP-01: mail a person wrote has kind "", no reason and no returned ids."""
    auto = parse_message(corpus_file(name)).auto
    assert (auto.kind, auto.reason, auto.returned_message_ids) == ("", "", ())
    assert not auto.is_automatic


def test_returned_ids_are_normalised_like_message_ids(
    corpus_file: Callable[[str], bytes],
) -> None:
    """A returned id equals the message_id the parser gives the returned message itself."""
    for name in (MIMEKIT + "bounce.txt", MIMEKIT + "feedback-report.txt"):
        parsed = parse_message(corpus_file(name))
        returned = [a for a in parsed.attachments if a.content_type == "message/rfc822"]
        assert len(returned) == 1, name
        original = parse_message(returned[0].content)
        assert parsed.auto.returned_message_ids == (original.message_id,), name


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "path", corpus_files(CORPUS), ids=lambda p: p.relative_to(CORPUS).as_posix()
)
def test_every_corpus_file_gets_a_valid_kind(corpus: Path, path: Path) -> None:
    """PARSE-01: no corpus file raises; kind, reason and returned ids are consistent."""
    auto = parse_message(path.read_bytes()).auto
    assert auto.kind in AUTO_KINDS
    assert bool(auto.reason) == bool(auto.kind)
    assert "\n" not in auto.reason and "\r" not in auto.reason
    assert len(auto.reason) <= 300
    if auto.kind:
        assert auto.is_automatic
    if auto.kind in ("", "list", "auto_generated"):
        assert auto.returned_message_ids == ()
    for mid in auto.returned_message_ids:
        assert mid and "<" not in mid and ">" not in mid and not any(c.isspace() for c in mid)


# --- Kinds the corpus lacks: small realistic messages -------------------------------


def test_gmail_vacation_reply_returns_the_thread() -> None:
    """Auto-Submitted: auto-replied is an out-of-office; In-Reply-To then References."""
    auto = _auto(
        _raw(
            "From: Ana Ruiz <ana@cliente.es>",
            "To: soporte@buzon.example",
            "Subject: Re: [#1042] Factura duplicada",
            "Auto-Submitted: auto-replied",
            "Precedence: bulk",
            "X-Autoreply: yes",
            "In-Reply-To: <t1042.reply@buzon.example>",
            "References: <t1042.root@buzon.example>\r\n <t1042.reply@buzon.example>",
            "Message-ID: <vacation.1@mail.gmail.com>",
        )
    )
    assert auto.kind == "out_of_office"
    assert auto.reason == "Auto-Submitted: auto-replied"
    assert auto.returned_message_ids == ("t1042.reply@buzon.example", "t1042.root@buzon.example")


def test_exchange_automatic_reply_in_english() -> None:
    """Exchange OOF: the subject counts because Auto-Submitted shows a machine sent it."""
    auto = _auto(
        _raw(
            "From: Boris Petrov <boris@firma.bg>",
            "To: soporte@buzon.example",
            "Subject: Automatic reply: [#7] VPN down",
            "Auto-Submitted: auto-generated",
            "X-Auto-Response-Suppress: All",
            "X-MS-Exchange-Inbox-Rules-Loop: boris@firma.bg",
            "In-Reply-To: <t7.ack@buzon.example>",
            "Thread-Topic: [#7] VPN down",
        ),
    )
    assert auto.kind == "out_of_office"
    assert auto.reason == (
        'auto-reply subject "Automatic reply: [#7] VPN down" with Auto-Submitted: auto-generated'
    )
    assert auto.returned_message_ids == ("t7.ack@buzon.example",)


def test_exchange_respuesta_automatica_with_only_the_rules_loop_header() -> None:
    """An encoded Spanish OOF subject plus X-MS-Exchange-Inbox-Rules-Loop is out-of-office."""
    auto = _auto(
        _raw(
            "From: Marta <marta@cliente.es>",
            "Subject: =?utf-8?Q?Respuesta_autom=C3=A1tica:_Re:_Alta_de_dominio?=",
            "X-MS-Exchange-Inbox-Rules-Loop: marta@cliente.es",
            "References: <alta.1@buzon.example>",
        )
    )
    assert auto.kind == "out_of_office"
    assert "X-MS-Exchange-Inbox-Rules-Loop: marta@cliente.es" in auto.reason
    assert "Respuesta automática" in auto.reason
    assert auto.returned_message_ids == ("alta.1@buzon.example",)


def test_spanish_fuera_de_la_oficina_with_precedence_bulk() -> None:
    """A vacation(1)-style reply: Precedence: bulk plus an OOF subject is not a list."""
    auto = _auto(
        _raw(
            "From: luis@cliente.es",
            "Subject: Fuera de la oficina hasta el 3 de enero",
            "Precedence: bulk",
            "In-Reply-To: <x.9@buzon.example>",
        )
    )
    assert auto.kind == "out_of_office"
    assert auto.reason.endswith("with Precedence: bulk")


def test_bulgarian_automatic_reply_from_a_null_sender() -> None:
    """„Автоматичен отговор“ (Base64-encoded) from Return-Path: <> is out-of-office."""
    subject = base64.b64encode("Автоматичен отговор: Поръчка 55".encode()).decode()
    auto = _auto(
        _raw(
            "Return-Path: <>",
            "From: =?UTF-8?B?0JjQstCw0L0=?= <ivan@firma.bg>",
            f"Subject: =?UTF-8?B?{subject}?=",
            "In-Reply-To: <order55@buzon.example>",
        )
    )
    assert auto.kind == "out_of_office"
    assert "Автоматичен отговор" in auto.reason
    assert auto.reason.endswith("a null sender (Return-Path: <>)")
    assert auto.returned_message_ids == ("order55@buzon.example",)


def test_bulgarian_izvan_ofisa_with_x_autorespond() -> None:
    """X-Autorespond alone makes an out-of-office, whatever the subject says."""
    auto = _auto(
        _raw(
            "From: maria@firma.bg",
            "Subject: Извън офиса",
            "X-Autorespond: Извън офиса до понеделник",
        )
    )
    assert auto.kind == "out_of_office"
    assert auto.reason.startswith("X-Autorespond: ")


def test_precedence_auto_reply_is_out_of_office() -> None:
    """Precedence: auto_reply is an auto-reply (RFC 3834 section 3.1.8 mentions it)."""
    auto = _auto(_raw("From: a@x.es", "Subject: Gracias", "Precedence: auto_reply"))
    assert (auto.kind, auto.reason) == ("out_of_office", "Precedence: auto_reply")


def test_out_of_office_subject_alone_is_a_person() -> None:
    """A person may type "Out of office" in a subject: without a machine header it is mail."""
    auto = _auto(
        _raw(
            "From: Eva <eva@cliente.es>",
            "Subject: Out of office next week - please call my colleague",
            "In-Reply-To: <t3@buzon.example>",
        )
    )
    assert (auto.kind, auto.returned_message_ids) == ("", ())


def test_exchange_rules_loop_alone_is_a_redirected_person() -> None:
    """An inbox rule that redirects a customer's mail adds the loop header: still a person."""
    auto = _auto(
        _raw(
            "From: Pablo <pablo@cliente.es>",
            "Subject: No funciona el correo",
            "X-MS-Exchange-Inbox-Rules-Loop: buzon-reenvio@cliente.es",
        )
    )
    assert auto.kind == ""
    assert not auto.is_automatic


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("List-Id: Clientes <clientes.lists.example.com>", "List-Id: Clientes"),
        ("List-Post: <mailto:clientes@lists.example.com>", "List-Post: <mailto:"),
        ("List-Unsubscribe: <https://news.example.com/u/1>", "List-Unsubscribe: <https"),
        ("Mailing-List: contact clientes-help@example.com; run by ezmlm", "Mailing-List: "),
        ("Precedence: list", "Precedence: list"),
        ("Precedence: BULK", "Precedence: bulk"),
    ],
)
def test_mailing_list_mail_is_a_list(header: str, reason: str) -> None:
    """LOOP-02: list and bulk headers make kind "list", named in the reason."""
    auto = _auto(_raw("From: news@example.com", "Subject: Boletín de marzo", header))
    assert auto.kind == "list"
    assert auto.reason.startswith(reason)
    assert auto.returned_message_ids == ()


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: Auto-Notified (sieve)", "Auto-Submitted: auto-notified"),
        ("Auto-Submitted: auto-generated (failure)", "Auto-Submitted: auto-generated"),
        ("Precedence: junk", "Precedence: junk"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress: All"),
        ("Return-Path: <>", "a null sender (Return-Path: <>)"),
        ("Return-Path: < > (bounce)", "a null sender (Return-Path: <>)"),
    ],
)
def test_other_machine_mail_is_auto_generated(header: str, reason: str) -> None:
    """LOOP-01/03: the catch-all kind, with the deciding header (comments dropped)."""
    auto = _auto(
        _raw(
            "From: monitor@hosting.example",
            "Subject: Disk usage 91%",
            header,
            "In-Reply-To: <x@y>",
        )
    )
    assert (auto.kind, auto.reason) == ("auto_generated", reason)
    assert auto.returned_message_ids == ()  # not a reply to anything of ours


def test_auto_submitted_no_is_a_person() -> None:
    """Auto-Submitted: no (even with a comment) says a person sent it."""
    auto = _auto(_raw("From: a@x.es", "Subject: Hola", "Auto-Submitted: no (manual)"))
    assert auto.auto_submitted == "no"
    assert auto.kind == "" and not auto.is_automatic


def test_x_failed_recipients_is_a_bounce() -> None:
    """Exim's X-Failed-Recipients header is a bounce even without a DSN."""
    auto = _auto(
        _raw(
            "From: Mail Delivery System <Mailer-Daemon@mx.example.net>",
            "Subject: Mail delivery failed",
            "X-Failed-Recipients: cliente@gone.example",
        )
    )
    assert (auto.kind, auto.reason) == ("bounce", "X-Failed-Recipients: cliente@gone.example")
    assert auto.is_bounce


def test_qmail_bounce_returns_the_id_of_its_inline_copy() -> None:
    """qmail quotes the original below its notice: its Message-ID line is the returned id."""
    body = (
        "Hi. This is the qmail-send program at mx.example.net.\r\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
        "<nadie@example.net>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        "--- Below this line is a copy of the message.\r\n\r\n"
        "Return-Path: <soporte@buzon.example>\r\n"
        "Message-ID:\r\n <ack.77@buzon.example>\r\n"
        "Subject: [#77] Recibido\r\n"
    )
    auto = _auto(
        _raw(
            "Return-Path: <>",
            "From: MAILER-DAEMON@mx.example.net",
            "Subject: failure notice",
            body=body,
        )
    )
    assert auto.kind == "bounce"
    assert auto.reason.startswith("From: MAILER-DAEMON@mx.example.net with the bounce subject")
    assert auto.returned_message_ids == ("ack.77@buzon.example",)


def test_delay_notice_from_the_mailer_daemon_is_a_delivery_report() -> None:
    """A "Delivery Status Notification (Delay)" is not a bounce, though it looks like one."""
    auto = _auto(
        _raw(
            "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            "Subject: Delivery Status Notification (Delay)",
            "In-Reply-To: <t9.ack@buzon.example>",
            "References: <t9.ack@buzon.example>",
        )
    )
    assert auto.kind == "delivery_report"
    assert not auto.is_bounce
    assert auto.returned_message_ids == ("t9.ack@buzon.example",)


def _dsn(recipients: str, returned: str = "", *, envelope_id: str = "") -> bytes:
    """A small RFC 3464 report from Postfix with the given per-recipient blocks."""
    envid = f"Original-Envelope-Id: {envelope_id}\r\n" if envelope_id else ""
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "Subject: Successful Mail Delivery Report\r\n"
        "Auto-Submitted: auto-replied\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"{envid}Reporting-MTA: dns; mx.example.net\r\n\r\n{recipients}"
        f"{returned}--B--\r\n"
    ).encode()


def test_success_dsn_is_a_delivery_report_not_a_bounce() -> None:
    """A DSN whose recipients were all delivered or relayed is a delivery report."""
    auto = _auto(
        _dsn(
            "Final-Recipient: rfc822; ana@cliente.es\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
            "Final-Recipient: rfc822; luis@cliente.es\r\nAction: relayed\r\nStatus: 2.0.0\r\n\r\n",
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            "From: soporte@buzon.example\r\nMessage-ID: <ack.5@buzon.example>\r\n\r\n",
        )
    )
    assert auto.kind == "delivery_report"
    assert auto.reason == (
        "multipart/report; report-type=delivery-status with Action: delivered, Action: relayed"
        " for ana@cliente.es, luis@cliente.es"
    )
    assert auto.returned_message_ids == ("ack.5@buzon.example",)
    assert auto.is_dsn and not auto.is_bounce and auto.is_automatic


def test_delayed_dsn_is_a_delivery_report() -> None:
    """Action: delayed is a warning, not a failure."""
    auto = _auto(_dsn("Final-Recipient: rfc822; a@b.es\r\nAction: delayed\r\nStatus: 4.4.7\r\n"))
    assert auto.kind == "delivery_report"
    assert "Action: delayed for a@b.es" in auto.reason


def test_dsn_with_one_failed_recipient_is_a_bounce_naming_it() -> None:
    """One failed recipient among delivered ones makes a bounce; only it is named."""
    auto = _auto(
        _dsn(
            "Final-Recipient: rfc822; ok@cliente.es\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
            "Final-Recipient: rfc822;<gone@cliente.es>\r\nAction: Failed (mailbox)\r\n"
            "Status: 5.1.1\r\n"
        )
    )
    assert auto.kind == "bounce" and auto.is_bounce
    assert auto.reason.endswith("with Action: failed for gone@cliente.es")


def test_envelope_id_is_never_a_returned_message_id() -> None:
    """Original-Envelope-Id is the sender's envelope id, not a Message-ID: ignored."""
    auto = _auto(
        _dsn(
            "Final-Recipient: rfc822; a@b.es\r\nAction: failed\r\nStatus: 5.1.1\r\n",
            envelope_id="<looks.like@a.message.id>",
        )
    )
    assert auto.kind == "bounce"
    assert auto.returned_message_ids == ()


def test_base64_delivery_status_part_is_decoded() -> None:
    """A base64-encoded message/delivery-status part is read after decoding."""
    fields = (
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; lejos@cliente.es\r\nAction: failed\r\nStatus: 5.2.2\r\n"
    )
    raw = (
        b"From: postmaster@example.net\r\nSubject: Undeliverable\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + base64.encodebytes(fields) + b"--B--\r\n"
    )
    auto = _auto(raw)
    assert auto.kind == "bounce"
    assert auto.reason.endswith("Action: failed for lejos@cliente.es")


def test_mdn_without_report_type_returns_original_message_id() -> None:
    """An MDN part without report-type still decides; Original-Message-ID comes first."""
    raw = (
        b"From: ana@cliente.es\r\nSubject: Read: Presupuesto\r\n"
        b'Content-Type: multipart/report; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n"
        b"--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Reporting-UA: Outlook\r\nFinal-Recipient: rfc822;ana@cliente.es\r\n"
        b"Original-Message-ID: < presupuesto.3@buzon.example >\r\n"
        b"Disposition: automatic-action/MDN-sent-automatically; displayed\r\n"
        b"--B--\r\n"
    )
    auto = _auto(raw)
    assert auto.kind == "read_report" and auto.is_mdn and not auto.is_bounce
    assert auto.reason == (
        "a message/disposition-notification part,"
        " Disposition: automatic-action/MDN-sent-automatically; displayed"
    )
    assert auto.returned_message_ids == ("presupuesto.3@buzon.example",)


def test_feedback_report_part_decides_without_report_type() -> None:
    """A message/feedback-report part is an ARF report even when report-type is missing."""
    raw = (
        b"From: fbl@isp.example\r\nSubject: complaint\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nVersion: 1\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <news.12@buzon.example>\r\nFrom: soporte@buzon.example\r\n\r\n"
        b"--B--\r\n"
    )
    auto = _auto(raw)
    assert auto.kind == "feedback_report"
    assert auto.reason == "a message/feedback-report part, Feedback-Type: abuse"
    assert auto.returned_message_ids == ("news.12@buzon.example",)


def test_unknown_report_type_is_auto_generated() -> None:
    """A multipart/report of a type not known here is still machine mail."""
    raw = (
        b"From: reports@tls.example\r\nSubject: Report\r\n"
        b'Content-Type: multipart/report; report-type=x-tls; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nsummary\r\n--B--\r\n"
    )
    auto = _auto(raw)
    assert (auto.kind, auto.reason) == ("auto_generated", "multipart/report; report-type=x-tls")


@pytest.mark.timeout(60)
def test_hostile_reports_are_bounded_and_never_raise() -> None:
    """PARSE-05: 20,000 recipients, a 2 MB header block and junk parts stay fast and safe."""
    recipients = "".join(
        f"Final-Recipient: rfc822; u{i}@x.es\r\nAction: failed\r\n\r\n" for i in range(20_000)
    )
    headers = "X-Junk: " + "a" * 2_000_000 + "\r\nMessage-ID: <late@x>\r\n\r\n"
    returned = f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}"
    junk = "--B\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!\r\n"
    start = time.perf_counter()
    auto = _auto(_dsn(recipients, returned + junk))
    assert time.perf_counter() - start < 10
    assert auto.kind == "bounce"
    assert auto.reason.endswith("u0@x.es, u1@x.es, u2@x.es and at least 46 more")
    assert auto.returned_message_ids == ()  # the Message-ID is past the 64 KiB read


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary",
        b"Content-Type: multipart/report; report-type*=x''%FF%FE; boundary=\"B\"\r\n\r\n--B--",
        b"Content-Type: message/delivery-status\r\n\r\nAction: \x00\xff\r\n Status: 5.\r\n",
        b"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: base64\r\n\r\n===",
        b"From: MAILER-DAEMON@x\r\nSubject: =?utf-8?b?ZmFpbHVyZSBub3RpY2U=?=\r\n\r\nMessage-ID:",
        b"Auto-Submitted: \r\nPrecedence: (x)\r\nList-Id:\r\n\r\n",
    ],
)
def test_malformed_report_headers_never_raise(raw: bytes) -> None:
    """Broken reports and empty loop headers give a valid kind, never an exception."""
    auto = parse_message(raw).auto
    assert auto.kind in AUTO_KINDS
