"""Classification by the shipped rules: each field, each rule, in Spanish, English and Bulgarian."""

# ruff: noqa: RUF001 - the Bulgarian messages are Cyrillic on purpose

from __future__ import annotations

from importlib.resources import files

import pytest

from triage.classify import MessageFacts, classify
from triage.ruleset import RuleSet

RULES = RuleSet.from_toml(files("triage").joinpath("rules/default.toml").read_text("utf-8"))


def facts(
    subject: str,
    text: str = "",
    *,
    to: str = "soporte@example.com",
    channel: str = "email",
    minutes: float | None = None,
) -> MessageFacts:
    assert channel in ("email", "voicemail")
    return MessageFacts(subject, text, channel, (to,), minutes)  # type: ignore[arg-type]


# --- the seeds' own examples -------------------------------------------------


def test_seed_001_cpanel_failure_is_medium_not_high() -> None:
    """Seed 001: a cPanel failure is medium, because the services keep working."""
    c = classify(
        facts(
            "Falla de cPanel",
            "Desde esta mañana el cPanel está caído y no me deja gestionar nada, "
            "pero la web y el correo siguen funcionando.",
        ),
        RULES,
    )
    assert c.priority.value == "medium"
    assert c.category.value == "hosting"
    assert 'not high: rule "still-works" matched "siguen funcionando" (outage 3)' in (
        c.priority.explanation
    )
    assert "seed 001" in c.priority.explanation


def test_seed_001_site_unreachable_from_two_computers_is_high() -> None:
    """Seed 001: "I cannot get into my website from 2 different computers" is high."""
    c = classify(
        facts(
            "No puedo ingresar a mi web",
            "Hola, no puedo ingresar a mi web desde 2 equipos diferentes, ni desde el móvil.",
        ),
        RULES,
    )
    assert c.priority.value == "high"
    assert c.severity.value == 1
    assert c.priority.explanation.startswith("priority high: rule ")
    assert '"No puedo ingresar a mi web"' in c.priority.explanation  # the customer's spelling
    assert '"desde 2 equipos"' in c.priority.explanation
    assert "seed 001" in c.priority.explanation


def test_seed_001_declared_urgency_is_recorded_not_trusted() -> None:
    """Seed 001: URGENTE on a cPanel failure stays medium; the declaration is flagged."""
    c = classify(
        facts(
            "URGENTE: fallo en cPanel",
            "El cPanel da error 500. La web y el correo siguen funcionando.",
        ),
        RULES,
    )
    assert c.assessed_priority == "medium"
    assert c.declared_priority.value == "high"
    assert c.flags.declared_priority.value is True
    assert "differs from assessed medium" in c.declared_priority.explanation


@pytest.mark.parametrize(
    ("subject", "text", "severity"),
    [
        ("Услугата не работи", "Услугата не работи и е недостъпна за всички служители.", 1),
        ("Bulk mail slow", "Sending works but the system is significantly affected.", 2),
        ("No llegan correos", "Desde ayer no llegan los correos nuevos al buzón.", 3),
        ("Правило не работи", "Едно правило за автоматизация не работи, дава грешка.", 4),
        ("Consulta", "¿Es posible una consultoría para configurar reglas de automatización?", 5),
    ],
)
def test_seed_003_severity_examples(subject: str, text: str, severity: int) -> None:
    """Seed 003's five severities, from its own examples, in the three languages."""
    c = classify(facts(subject, text), RULES)
    assert c.severity.value == severity, c.severity.explanation
    assert c.severity.explanation.startswith(f"severity {severity}: ")


# --- categories ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text", "category", "word"),
    [
        (
            "La impresora no imprime",
            "La impresora de recepción se queda en cola.",
            "technical_support",
            "impresora",
        ),
        (
            "Printer offline again",
            "The office printer shows offline on every PC.",
            "technical_support",
            "Printer",
        ),
        (
            "Принтерът не печата",
            "Принтерът в офиса не печата от вчера.",
            "technical_support",
            "Принтерът",
        ),
        (
            "Configurar Outlook",
            "¿Cómo configuro mi cuenta en Outlook? Servidor de entrada?",
            "setup",
            "Configurar",
        ),
        ("Set up email on my phone", "How do I set up my mailbox on Android?", "setup", "Set up"),
        (
            "Настройка на Outlook",
            "Моля за настройките за Outlook на новия колега.",
            "setup",
            "Настройка",
        ),
        (
            "Factura duplicada",
            "Nos habéis enviado la factura de octubre dos veces.",
            "billing",
            "Factura",
        ),
        ("Invoice for October", "Could you resend October's invoice?", "billing", "Invoice"),
        ("Фактура за октомври", "Моля, изпратете фактурата за октомври.", "billing", "Фактура"),
        ("La web va muy lenta", "Nuestra página web tarda mucho en abrir.", "hosting", "web"),
        (
            "Website shows error 500",
            "Our website shows an internal server error.",
            "hosting",
            "Website",
        ),
        ("Сайтът е бавен", "Сайтът ни зарежда много бавно.", "hosting", "Сайтът"),
        ("Correos rebotados", "Los correos que enviamos a Gmail rebotan.", "email", "Correos"),
        ("Emails bouncing", "All our emails to Gmail are bouncing back.", "email", "Emails"),
        ("Писмата се връщат", "Писмата ни до Gmail се връщат.", "email", "Писмата"),
        ("Renovar dominio", "Queremos renovar el dominio ejemplo.es.", "domains_dns", "dominio"),
        ("Change MX record", "Please change the MX record of our domain.", "domains_dns", "domain"),
        ("Трансфер на домейн", "Искаме трансфер на домейна при вас.", "domains_dns", "домейн"),
        ("Presupuesto VPS", "¿Cuánto cuesta un VPS con 8 GB?", "sales", "Presupuesto"),
        ("Quote for a VPS", "Please send a quote for a VPS, how much per year?", "sales", "Quote"),
        ("Оферта за VPS", "Моля за оферта за VPS, каква е цената?", "sales", "Оферта"),
        ("Queja sobre la atención", "El técnico me colgó el teléfono.", "other", "Queja"),
        ("Complaint about your staff", "I want to file a complaint.", "other", "Complaint"),
        ("Оплакване от служител", "Искам да подам оплакване.", "other", "Оплакване"),
    ],
)
def test_category_by_words(subject: str, text: str, category: str, word: str) -> None:
    """Each category is found from its words, and the explanation quotes the customer's word."""
    c = classify(facts(subject, text), RULES)
    assert c.category.value == category, c.category.explanation
    assert c.category.explanation.startswith(f'category {category}: rule "{category}" matched ')
    assert f'"{word}"' in c.category.explanation
    assert word in c.category.matched
    assert 0 < c.category.confidence <= 1


@pytest.mark.parametrize(
    ("to", "category"),
    [
        ("billing@example.com", "billing"),
        ("facturacion@example.com", "billing"),
        ("setup@example.com", "setup"),
        ("sales@example.com", "sales"),
        ("Ventas+web@example.com", "sales"),
    ],
)
def test_recipient_adds_evidence_for_its_department(to: str, category: str) -> None:
    """Writing to billing@, setup@, sales@ ... is evidence for that department (seed 002)."""
    c = classify(facts("Consulta", "Hola, tengo una pregunta sobre mi cuenta.", to=to), RULES)
    assert c.category.value == category
    local = to.partition("@")[0].partition("+")[0].lower()
    assert f'"{local}@"' in c.category.explanation


def test_recipient_is_evidence_not_a_verdict() -> None:
    """Strong content outweighs the address: a printer failure sent to sales@ is support."""
    c = classify(
        facts(
            "La impresora no imprime",
            "La impresora y el escáner de la oficina no imprimen desde ningún ordenador; "
            "el router y la wifi también fallan.",
            to="sales@example.com",
        ),
        RULES,
    )
    assert c.category.value == "technical_support"
    assert "next sales" in c.category.explanation


def test_no_evidence_falls_back_to_the_default_category() -> None:
    """A message with nothing to go on is "other", with low confidence and the reason."""
    c = classify(facts("Hola", "Buenos días."), RULES)
    assert c.category.value == "other"
    assert c.category.rule == "default"
    assert c.category.confidence < 0.5
    assert "no category reached" in c.category.explanation


def test_accents_case_and_stems_do_not_matter() -> None:
    """FACTURACIÓN, facturacion and facturas all find billing; a stem reaches every form."""
    for subject in ("FACTURACIÓN DE NOVIEMBRE", "facturacion de noviembre", "facturas"):
        assert classify(facts(subject), RULES).category.value == "billing"


# --- priority and severity ------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text", "rule", "word"),
    [
        ("Web caída", "Nuestra web no carga desde esta mañana.", "service-down", "no carga"),
        ("Site down", "Our website is down, nobody can order.", "service-down", "is down"),
        ("Сайтът не работи", "Сайтът не се отваря от сутринта.", "service-down", "не се отваря"),
        (
            "No abre la web",
            "Probé desde dos ordenadores y con datos.",
            "not-just-here",
            "dos ordenadores",
        ),
        (
            "Site unreachable",
            "I tried from two computers on different broadband.",
            "not-just-here",
            "from two computers",
        ),
        (
            "Сайтът",
            "Пробвах от два компютъра и с мобилни данни.",
            "not-just-here",
            "от два компютъра",
        ),
    ],
)
def test_high_priority_needs_a_service_that_cannot_be_used(
    subject: str, text: str, rule: str, word: str
) -> None:
    """High is for the service being unusable (seed 001 1c), severity 1 (seed 003)."""
    c = classify(facts(subject, text), RULES)
    assert c.priority.value == "high", c.priority.explanation
    assert c.severity.value == 1
    assert f'rule "{rule}" matched' in c.priority.explanation
    assert f'"{word}"' in c.priority.explanation


@pytest.mark.parametrize(
    ("subject", "text", "severity", "rule"),
    [
        ("Web muy lenta", "La tienda va muy lenta, pero carga.", 2, "degraded"),
        ("Site really slow", "The shop is really slow since yesterday.", 2, "degraded"),
        ("Бавен сайт", "Сайтът е много бавен от вчера.", 2, "degraded"),
        (
            "Buzón lleno",
            "Me sale que el buzón está lleno y rebotan los correos.",
            3,
            "partial-loss",
        ),
        ("Mailbox full", "Customers say the mailbox is full.", 3, "partial-loss"),
        ("Пълна кутия", "Пощенската кутия е пълна и писмата се връщат.", 3, "partial-loss"),
        ("Correos en spam", "Nuestros correos llegan a la carpeta de spam.", 4, "defect"),
        ("Mail in spam", "Our emails keep landing in spam at Gmail.", 4, "defect"),
        ("Писма в спам", "Писмата ни отиват в спам при клиентите.", 4, "defect"),
    ],
)
def test_medium_priority_and_its_severities(
    subject: str, text: str, severity: int, rule: str
) -> None:
    """Errors that affect work are medium (seed 001 1b); seed 003 tells 2, 3 and 4 apart."""
    c = classify(facts(subject, text), RULES)
    assert c.priority.value == "medium", c.priority.explanation
    assert c.severity.value == severity, c.severity.explanation
    assert f'rule "{rule}" matched' in c.severity.explanation


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("Versión de PHP", "¿Es posible cambiar la versión de PHP? No es urgente."),
        ("Two-factor login", "Is it possible to turn on two-factor authentication?"),
        ("PHP версия", "Може ли да сменим PHP версията?"),
    ],
)
def test_questions_are_low_priority_severity_5(subject: str, text: str) -> None:
    """Questions and doubts are low (seed 001 1a), a request is severity 5 (seed 003)."""
    c = classify(facts(subject, text), RULES)
    assert (c.priority.value, c.severity.value) == ("low", 5)
    assert 'rule "question" matched' in c.priority.explanation


def test_no_impact_words_gives_the_default_priority_with_reason() -> None:
    """Without any impact evidence the default applies and the explanation says so."""
    c = classify(facts("Gracias", "Todo perfecto."), RULES)
    assert c.priority.value == "low"
    assert c.priority.rule == "default"
    assert "no impact rule matched" in c.priority.explanation
    assert c.severity.value == 5 and "follows priority low" in c.severity.explanation


def test_quoted_history_counts_less_than_the_customers_own_words() -> None:
    """A thanks quoting an old outage is not high: quoted words weigh half."""
    text = (
        "Ya funciona todo, gracias.\n\nEl 20/11/2026 a las 9:02, Ana escribió:\n> La web no carga."
    )
    c = classify(facts("Re: web", text), RULES)
    assert c.priority.value != "high" or c.priority.confidence < 0.5


def test_voicemail_transcript_is_classified_from_its_words() -> None:
    """A transcript without punctuation or accents is read like an email body."""
    c = classify(
        facts(
            "Voicemail from +34 600 111 222 (0:42)",
            "hola llamo porque la pagina web no carga desde esta manana y tenemos la tienda caida",
            channel="voicemail",
        ),
        RULES,
    )
    assert (c.category.value, c.priority.value) == ("hosting", "high")
    assert c.flags.vague_subject.value is False


# --- flags -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    ["Ayuda", "URGENTE!!!", "Re: problema", "", "Help", "(no subject)", "Помощ", "Въпрос"],
)
def test_vague_subjects_are_flagged(subject: str) -> None:
    """Seed 001 rule 2: "ayuda", "urgente", empty and the like are not concrete subjects."""
    c = classify(facts(subject, "La web no carga."), RULES)
    assert c.flags.vague_subject.value is True, c.flags.vague_subject.explanation
    assert c.flags.vague_subject.explanation.startswith("vague_subject: ")
    assert "vague_subject" in c.flags.raised


@pytest.mark.parametrize(
    ("subject", "concrete"),
    [
        ("Ayuda con la factura de octubre", "factura"),
        ("Re: [#B-1042] Web caída", "Web"),
        ("Problem with the VPN", "VPN"),
        ("Проблем с пощата", "пощата"),
    ],
)
def test_concrete_subjects_are_not_vague(subject: str, concrete: str) -> None:
    """A subject naming the matter passes, and the explanation quotes what it names."""
    c = classify(facts(subject, ""), RULES)
    assert c.flags.vague_subject.value is False
    assert f'"{concrete}"' in c.flags.vague_subject.explanation


@pytest.mark.parametrize(
    "text",
    ["¿Alguna novedad? Seguimos sin web.", "Any update?? still down", "Има ли новини?"],
)
def test_chase_within_40_minutes_is_flagged(text: str) -> None:
    """Seed 001 rule 6: asking for news before 40 minutes have passed is a chase."""
    c = classify(facts("Re: [#B-7] Web caída", text, minutes=25), RULES)
    assert c.flags.chase.value is True, c.flags.chase.explanation
    assert "25 min after the previous message (within 40)" in c.flags.chase.explanation
    assert "seed 001" in c.flags.chase.explanation


def test_the_same_words_after_40_minutes_are_not_a_chase() -> None:
    """After 40 minutes a customer may ask for news; the reason says how long it was."""
    c = classify(facts("Re: [#B-7] Web caída", "¿Alguna novedad?", minutes=95), RULES)
    assert c.flags.chase.value is False
    assert "95 min after the previous message, not within 40" in c.flags.chase.explanation


def test_a_first_message_or_a_long_reply_is_not_a_chase() -> None:
    """No previous message, or a reply with real new content, is never a chase."""
    assert classify(facts("x", "¿Alguna novedad?"), RULES).flags.chase.value is False
    long_reply = "¿Alguna novedad? " + "Adjunto los registros del servidor y la captura. " * 12
    c = classify(facts("x", long_reply, minutes=10), RULES)
    assert c.flags.chase.value is False and "words of new content" in c.flags.chase.explanation


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("Sois unos inútiles y unos incompetentes.", "incompetentes"),
        ("You are a bunch of clowns, useless morons.", "morons"),
        ("Некадърници такива, идиоти.", "идиоти"),
        ("Esto es una puta vergüenza.", "puta"),
    ],
)
def test_abusive_language_is_flagged_in_each_language(text: str, word: str) -> None:
    """Seed 001 rule 8: offensive words are flagged, quoting them for the agent."""
    c = classify(facts("Queja", text), RULES)
    assert c.flags.abusive.value is True
    assert f'"{word}"' in c.flags.abusive.explanation


def test_mild_or_embedded_words_are_not_abusive() -> None:
    """One mild word is below the threshold; "computadora" does not contain an insult."""
    c = classify(facts("Ayuda", "Mi computadora es inútil desde la actualización."), RULES)
    assert c.flags.abusive.value is False
    assert "flagged at 2" in c.flags.abusive.explanation


@pytest.mark.parametrize(
    ("subject", "text", "declared"),
    [
        ("URGENTE instalación", "Es URGENTE.", "high"),
        ("Install WordPress ASAP", "Need it ASAP please.", "high"),
        ("СПЕШНО - WordPress", "Спешно е!", "high"),
        ("Spam", "Prioridad: ALTA", "high"),
        ("Spam", "Prioridad: media", "medium"),
        ("PHP", "No es urgente, cuando podáis.", "low"),
        ("Autoreply", "No rush, it's not until the 20th.", "low"),
        ("PHP", "Не е спешно.", "low"),
    ],
)
def test_declared_priority_is_recorded(subject: str, text: str, declared: str) -> None:
    """URGENTE, ASAP, СПЕШНО, ALTA and "no rush" set declared_priority (seed 001)."""
    c = classify(facts(subject, text), RULES)
    assert c.declared_priority.value == declared
    assert c.flags.declared_priority.value is True
    assert c.declared_priority.explanation.startswith(f"declared priority {declared}: ")


def test_alta_in_lower_case_is_not_a_declared_priority() -> None:
    """'dar de alta' (register) is not 'ALTA' (high): capitals only for that word."""
    c = classify(facts("Dar de alta un usuario", "Queremos dar de alta un usuario nuevo."), RULES)
    assert c.declared_priority.value is None
    assert c.flags.declared_priority.value is False


# --- rendering ---------------------------------------------------------------------


def test_explain_renders_every_decision_with_confidence() -> None:
    """explain() prints a summary line and one line per decision, each with its confidence."""
    c = classify(facts("URGENTE web caída", "La web no carga desde dos ordenadores."), RULES)
    text = c.explain()
    lines = text.splitlines()
    assert lines[0] == "hosting / priority high / severity 1 / und / flags: declared_priority"
    assert len(lines) == 1 + 5 + 4
    assert all(line.startswith("  [") for line in lines[1:])
    assert "  [0." in text and "language und: no detector configured" in text


def test_as_dict_is_json_ready() -> None:
    """as_dict() holds the values and each decision in full, for events and --json."""
    import json

    c = classify(facts("Factura", "Cobro duplicado", to="billing@example.com"), RULES)
    data = json.loads(json.dumps(c.as_dict()))
    assert data["category"] == "billing"
    assert data["assessed_priority"] == data["priority"]
    assert data["decisions"]["category"]["rule"] == "billing"
    assert "billing@" in data["decisions"]["category"]["matched"]
