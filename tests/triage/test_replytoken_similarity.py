"""Reply tokens verify only under our key; fingerprints and scores behave as documented."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triage import replytoken
from triage.similarity import (
    duplicate_score,
    fingerprint,
    incident_matches,
    incident_score,
    informative,
)

KEY = replytoken.new_key()


def test_a_token_round_trips_in_message_ids_and_plus_addresses() -> None:
    mid = replytoken.message_id_for("B-42", KEY, "x9", "desk.example.com")
    (found,) = replytoken.find(KEY, "in-reply-to", [mid])
    assert (found.ref, found.valid) == ("B-42", True)
    plus = replytoken.plus_address("support@example.com", "B-42", KEY)
    assert plus.startswith("support+b-42.") and plus.endswith("@example.com")
    (found,) = replytoken.find(KEY, "recipient", [plus.upper()])  # an MTA upper-cased it
    assert (found.ref, found.valid) == ("B-42", True)
    assert replytoken.is_ours(mid, KEY)


def test_changing_the_number_or_the_key_breaks_the_token() -> None:
    token = replytoken.token_for("B-42", KEY)
    forged = token.replace("b-42", "b-43")
    (found,) = replytoken.find(KEY, "references", [f"{forged}.u.buzon@x"])
    assert (found.ref, found.valid) == ("B-43", False)
    assert not replytoken.is_ours(replytoken.message_id_for("B-1", "other", "u", "x"), KEY)
    assert not replytoken.is_ours("b-1.aaaaaaaa@customer.example", KEY)


def test_plain_addresses_and_ids_carry_no_token() -> None:
    assert replytoken.find(KEY, "recipient", ["support@example.com", "a+b@x.es"]) == []
    assert replytoken.find(KEY, "references", ["<abc@def>", "b-12@x"]) == []


@given(st.text(max_size=300))
def test_find_never_raises_on_hostile_input(value: str) -> None:
    for where in ("recipient", "references"):
        for token in replytoken.find(KEY, where, [value]):
            assert token.ref.startswith("B-")


def test_fingerprint_drops_prefixes_tags_quotes_and_stop_words() -> None:
    fp = fingerprint(
        "RE: Fwd: [#B-12] Caída del servidor de correo",
        "Hola, el servidor de correo está caído.\n\nEl lun., Ana escribió:\n> texto citado largo\n",
    )
    assert fp.split() == ["caida", "caido", "correo", "servid"]  # sorted: see the next test
    assert not informative(fingerprint("Hola", "gracias"))


@given(
    st.lists(
        st.sampled_from(["caida", "caido", "correo", "servid", "red", "1234", "wifi"]),
        min_size=3,
        max_size=7,
        unique=True,
    ),
    st.randoms(use_true_random=False),
)
def test_scores_do_not_depend_on_the_order_of_stems(stems: list[str], rnd: random.Random) -> None:
    """Fingerprints are stored sorted, and earlier versions stored them in writing order:
    the same stems in any order score the same against any fingerprint."""
    written, shuffled = " ".join(stems), " ".join(rnd.sample(stems, len(stems)))
    for other in ("caida correo servid", "red wifi 1234 lento", written):
        assert incident_score(written, other) == incident_score(shuffled, other)
        assert duplicate_score(written, other) == duplicate_score(shuffled, other)


def test_duplicates_need_near_identical_text_incidents_shared_words() -> None:
    a = fingerprint("No funciona el correo", "No podemos enviar correos desde Outlook, da error.")
    b = fingerprint("Re: No funciona el correo", "No podemos enviar correos desde Outlook: error")
    c = fingerprint("Correo", "Outlook da error al enviar correos, nadie en la oficina puede")
    d = fingerprint("Factura", "Nos cobraron dos veces la factura de noviembre")
    assert duplicate_score(a, b) >= 0.95
    assert duplicate_score(a, c) < 0.85 <= incident_score(a, c) or incident_score(a, c) >= 0.6
    assert incident_score(a, d) < 0.6 and duplicate_score(a, d) < 0.5
    assert duplicate_score("", a) == incident_score(a, "hola") == 0.0


# Stems that share letters and prefixes, so that fingerprints overlap in words and in
# characters: scores land on both sides of any threshold.
_STEMS = st.sampled_from(
    ["correo", "correc", "caida", "caido", "red", "redes", "fibra", "wifi", "lento", "1234"]
)
_FP = st.lists(_STEMS, max_size=8, unique=True).map(" ".join)


@given(
    _FP,
    st.lists(st.one_of(st.none(), _FP), max_size=12),
    st.sampled_from([0.05, 0.3, 0.5, 0.6, 0.61, 0.75, 0.9, 1.0]),
)
def test_incident_matches_are_the_pairwise_scores_at_or_above_the_threshold(
    fp: str, others: list[str | None], least: float
) -> None:
    expected = [
        (i, score)
        for i, other in enumerate(others)
        if other is not None and (score := incident_score(fp, other)) >= least
    ]
    assert incident_matches(fp, others, least) == expected


def test_incident_matches_refuses_a_threshold_that_would_match_everything() -> None:
    with pytest.raises(ValueError, match="above 0"):
        incident_matches("correo caida red", ["correo caida red"], 0.0)
