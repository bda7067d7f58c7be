"""Guess a message's language with lingua, restricted to the languages the desk expects.

Building lingua detectors loads their n-gram models (about a second and some
200 MB for seven languages, holding the GIL throughout), so a ``LanguageGuesser``
is built once by the caller and reused for every message; nothing here is global.
Only the trigram models are loaded at construction (~0.05 s for seven languages); the
other sizes, which only texts shorter than ``precise_below`` letters need, load into
lingua's shared cache on the first such text (~1 s of CPU, once). Restricting the
candidates to the configured languages is what makes short support messages
reliable ("¿alguna novedad?" is Spanish when the choice is es/en/bg/pt/...).

Cost is kept down three ways. Only the first ``sample_chars`` characters are
read: a greeting and a sentence decide. Texts with at least ``precise_below``
letters go to lingua's low-accuracy mode (trigrams only, two to three times
faster and as right on a sentence or more); shorter ones, where it errs
("no funciona el correo" reads as Portuguese), get all n-gram sizes. And a
Cyrillic text is Bulgarian without asking lingua when Bulgarian is the only
Cyrillic language configured.
"""

from __future__ import annotations

from collections.abc import Sequence

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from triage.decision import Decision

UNDETERMINED = "und"
_SCRIPT_SHARE = 0.9  # a few Latin product names do not make Bulgarian text Latin


def _language(code: str) -> Language:
    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
    except ValueError:
        raise ValueError(f"unknown language code {code!r}; use ISO 639-1, e.g. 'es'") from None


def _code(language: Language) -> str:
    return language.iso_code_639_1.name.lower()


class LanguageGuesser:
    """lingua over a fixed set of languages; build once, call ``guess`` per message."""

    __slots__ = (
        "_cyrillic",
        "_fast",
        "_precise",
        "codes",
        "min_confidence",
        "min_letters",
        "precise_below",
        "sample_chars",
    )

    def __init__(
        self,
        codes: Sequence[str] = ("es", "en", "bg"),
        *,
        min_confidence: float = 0.5,
        sample_chars: int = 200,
        precise_below: int = 60,
        min_letters: int = 3,
    ) -> None:
        languages = [_language(code.strip().lower()) for code in codes]
        if len(set(languages)) < 2:
            raise ValueError("language detection needs at least two languages to choose from")
        self.codes = tuple(_code(lang) for lang in languages)
        self.min_confidence = min_confidence
        self.sample_chars = sample_chars
        self.precise_below = precise_below
        self.min_letters = min_letters
        cyrillic = [lang for lang in languages if lang in Language.all_with_cyrillic_script()]
        self._cyrillic = _code(cyrillic[0]) if len(cyrillic) == 1 else None
        # Preloaded: the trigram models, which every text of ``precise_below`` letters or
        # more uses (most mail). Not preloaded: the precise detector's other sizes, 20
        # times their cost; a process that never meets a short text never pays for them.
        builder = LanguageDetectorBuilder.from_languages(*languages)
        self._precise: LanguageDetector = builder.build()
        self._fast: LanguageDetector = (
            builder.with_preloaded_language_models().with_low_accuracy_mode().build()
        )

    def guess(self, text: str) -> Decision[str]:
        """The language of ``text`` with lingua's confidence, or ``"und"`` when it is unsure."""
        sample = text[: self.sample_chars]
        letters = sum(1 for c in sample if c.isalpha())
        if letters < self.min_letters:
            return Decision(
                UNDETERMINED, 1.0, "lingua", (), f"language und: {letters} letters are too few"
            )
        if self._cyrillic is not None:
            share = sum(1 for c in sample if "\u0400" <= c <= "\u04ff") / letters
            if share >= _SCRIPT_SHARE:
                return Decision(
                    self._cyrillic,
                    round(share, 2),
                    "script",
                    (),
                    f"language {self._cyrillic}: {share:.0%} of the letters are Cyrillic and "
                    f"{self._cyrillic} is the only Cyrillic language configured",
                )
        precise = letters < self.precise_below
        detector = self._precise if precise else self._fast
        ranked = detector.compute_language_confidence_values(sample)
        best, code = ranked[0], _code(ranked[0].language)
        how = f"lingua{'' if precise else ' (trigrams)'} {best.value:.2f}"
        if len(ranked) > 1:
            how += f", next {_code(ranked[1].language)} {ranked[1].value:.2f}"
        if best.value < self.min_confidence:
            return Decision(
                UNDETERMINED,
                round(1.0 - best.value, 2),
                "lingua",
                (),
                f"language und: best guess {code} by {how}, below {self.min_confidence:.2f}",
            )
        return Decision(
            code,
            round(best.value, 2),
            "lingua",
            (),
            f"language {code}: {how} (candidates {', '.join(self.codes)})",
        )
