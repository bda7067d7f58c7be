"""Term matching: folding, stems, phrases, word boundaries, longest match, Cyrillic."""

# ruff: noqa: RUF001 - the Bulgarian messages are Cyrillic on purpose

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triage.matching import TermIndex, fold, parse_term


def found(terms: list[str], text: str) -> list[tuple[str, str]]:
    """(term, the text's own words) for each match of ``terms`` in ``text``."""
    index = TermIndex(parse_term(t) for t in terms)
    return [(index.terms[i].text, text[s:e]) for i, s, e in index.find(fold(text))]


def test_folding_removes_case_and_accents_in_latin_and_cyrillic() -> None:
    """Caída, CAIDA and caida fold alike; so do Й and и; ñ becomes n."""
    assert fold("Caída CAÍDA Ingresé AÑO") == "caida caida ingrese ano"
    assert fold("Сайтът ЙОРДАН") == "саитът иордан"


@given(st.text())
def test_folding_keeps_every_character_in_place(text: str) -> None:
    """Folding never changes the length, so a match's span quotes the original text."""
    assert len(fold(text)) == len(text)


def test_a_word_matches_whole_words_only() -> None:
    """ "puta" is not found inside "computadora"; "pago" is not "pagos"."""
    assert found(["puta", "pago"], "Mi computadora y los pagos") == []
    assert found(["pago"], "El pago, ¿llegó?") == [("pago", "pago")]


def test_a_stem_matches_every_word_it_starts() -> None:
    """factur* finds factura, FACTURAS and facturación, quoting each as written."""
    assert found(["factur*"], "Factura, FACTURAS y facturación") == [
        ("factur*", "Factura"),
        ("factur*", "FACTURAS"),
        ("factur*", "facturación"),
    ]


def test_a_phrase_spans_spaces_newlines_and_punctuation() -> None:
    """ "no carga" matches across a line break; a stem may sit inside a phrase."""
    assert found(["no carga"], "la web no\ncarga") == [("no carga", "no\ncarga")]
    assert found(["no carg* la web"], "No cargaba la web") == [
        ("no carg* la web", "No cargaba la web")
    ]


def test_the_longest_term_wins_where_terms_overlap() -> None:
    """ "no es urgente" hides "urgente"; an exact word beats a stem of it."""
    assert found(["urgente", "no es urgente"], "No es urgente") == [
        ("no es urgente", "No es urgente")
    ]
    index = TermIndex([parse_term("pag*"), parse_term("pago")])
    ((term_id, _, _),) = index.find(fold("pago"))
    assert index.terms[term_id].text == "pago"
    ((term_id, _, _),) = index.find(fold("pagado"))
    assert index.terms[term_id].text == "pag*"


def test_cyrillic_terms_match_bulgarian_inflections() -> None:
    """сайт* finds сайтът and сайта; й in a term matches й in the text."""
    assert [t for _, t in found(["сайт*", "не работи"], "Сайтът не работи, сайта го няма")] == [
        "Сайтът",
        "не работи",
        "сайта",
    ]


@pytest.mark.parametrize("raw", ["", "  ", "!!!", "*"])
def test_a_term_needs_a_letter_or_digit(raw: str) -> None:
    """Terms without any word character are refused."""
    with pytest.raises(ValueError, match="no letters or digits"):
        parse_term(raw)


def test_an_empty_index_matches_nothing() -> None:
    """A family with no terms (e.g. all rules disabled) finds nothing and does not fail."""
    assert list(TermIndex([]).find("anything at all")) == []
