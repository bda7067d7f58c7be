"""Language detection with lingua, restricted to the desk's languages; unsure means "und"."""

# ruff: noqa: RUF001 - the Bulgarian messages are Cyrillic on purpose

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

from triage.classify import MessageFacts, classify
from triage.language import LanguageGuesser
from triage.ruleset import RuleSet


@pytest.fixture(scope="module")
def guesser() -> Iterator[LanguageGuesser]:
    # Built once per module: loading the models takes about a second.
    yield LanguageGuesser(("es", "en", "bg", "pt", "fr", "de", "it"))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Hola, desde esta mañana la web no carga. ¿Podéis revisarlo?", "es"),
        ("hola llamo porque la pagina web no carga desde esta manana", "es"),
        ("Hi, our website has been down since this morning, can you check?", "en"),
        ("Bonjour, notre site ne s'affiche plus depuis ce matin.", "fr"),
        ("¿Alguna novedad?", "es"),
        ("Any news?", "en"),
    ],
)
def test_languages_are_told_apart(guesser: LanguageGuesser, text: str, code: str) -> None:
    """Spanish, English, Bulgarian and the other configured languages, even short ones."""
    decision = guesser.guess(text)
    assert decision.value == code, decision.explanation
    assert decision.explanation.startswith(f"language {code}: lingua ")
    assert 0.5 <= decision.confidence <= 1


@pytest.mark.parametrize(
    "text", ["Здравейте, сайтът не се отваря от сутринта.", "Има ли новини?", "Пощата не работи"]
)
def test_cyrillic_is_bulgarian_when_no_other_cyrillic_language_is_configured(
    guesser: LanguageGuesser, text: str
) -> None:
    """With bg the only Cyrillic candidate, the script decides and lingua is not asked."""
    decision = guesser.guess(text)
    assert decision.value == "bg"
    assert decision.rule == "script"
    assert "the only Cyrillic language configured" in decision.explanation


def test_with_two_cyrillic_languages_lingua_decides() -> None:
    """Add Russian and the script no longer decides: lingua tells bg from ru."""
    both = LanguageGuesser(("bg", "ru", "en"))
    bg = both.guess(
        "Здравейте, сайтът ни не се отваря от тази сутрин. Моля, проверете какво става."
    )
    ru = both.guess(
        "Здравствуйте, наш сайт не открывается с утра. Пожалуйста, проверьте, что происходит."
    )
    assert (bg.value, bg.rule, ru.value) == ("bg", "lingua", "ru")


@pytest.mark.parametrize("text", ["", "ok", "?!", "cPanel", "12345"])
def test_too_little_text_is_undetermined(guesser: LanguageGuesser, text: str) -> None:
    """Too few letters, or no language clearly ahead, gives "und" with the reason."""
    decision = guesser.guess(text)
    assert decision.value == "und"
    assert decision.explanation.startswith("language und: ")


def test_unknown_codes_are_refused_with_the_code_named() -> None:
    """A typo in [language] detect is an error naming the code, not a silent English."""
    with pytest.raises(ValueError, match="unknown language code 'esp'"):
        LanguageGuesser(("esp", "en"))


def test_four_workers_meeting_the_first_short_texts_at_once_agree() -> None:
    """The precise models load on the first short text, inside lingua: four workers
    guessing short texts at once on a fresh guesser all get the loaded guesser's answer."""
    fresh = LanguageGuesser(("es", "en", "bg"))
    with ThreadPoolExecutor(4) as pool:
        decisions = list(
            pool.map(lambda _: fresh.guess("no funciona el correo desde ayer"), range(4))
        )
    assert all(d == decisions[0] for d in decisions)
    assert decisions[0].value == "es"


def test_models_loaded_on_demand_answer_as_preloaded_ones(guesser: LanguageGuesser) -> None:
    """A guesser preloads the trigram models only; the precise detector's other n-gram
    sizes load on its first short text. Every answer, short texts and long, in either
    order, is what detectors with every model preloaded give."""
    languages = [Language.from_iso_code_639_1(IsoCode639_1.from_str(c)) for c in guesser.codes]
    builder = LanguageDetectorBuilder.from_languages(*languages)
    preloaded = builder.with_preloaded_language_models()
    precise, fast = preloaded.build(), preloaded.with_low_accuracy_mode().build()
    texts = [
        "Hola, desde esta mañana la web no carga. ¿Podéis revisarlo?",
        "no funciona el correo",
        "Any news?",
        "Bonjour, notre site ne s'affiche plus depuis ce matin, pouvez-vous regarder ?",
        "o site caiu",
        "Guten Morgen, seit heute früh ist die Seite nicht erreichbar, bitte prüfen.",
    ]
    fresh = LanguageGuesser(guesser.codes)
    for text in texts:
        letters = sum(1 for c in text if c.isalpha())
        detector = precise if letters < fresh.precise_below else fast
        best = detector.compute_language_confidence_values(text)[0]
        code = best.language.iso_code_639_1.name.lower()
        decision = fresh.guess(text)
        assert decision.value == (code if best.value >= fresh.min_confidence else "und"), text
        assert f"{best.value:.2f}" in decision.explanation, (text, decision.explanation)


def test_classify_uses_the_guesser_and_ignores_a_voicemail_subject(
    guesser: LanguageGuesser,
) -> None:
    """The PBX's English subject does not make a Bulgarian voicemail English."""
    rules = RuleSet.from_toml('[category.other]\n[language]\ndetect = ["es", "en", "bg"]')
    c = classify(
        MessageFacts(
            "Voicemail from +359 88 765 4321 (0:47)",
            "ало здравейте обаждам се от счетоводството принтерът не иска да печата",
            "voicemail",
        ),
        rules,
        guesser,
    )
    assert c.language.value == "bg"
