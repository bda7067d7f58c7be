"""Rules as TOML text: the shipped file loads, admins extend it, mistakes name their key."""

from __future__ import annotations

from importlib.resources import files

import pytest

from triage.classify import MessageFacts, classify
from triage.ruleset import RulesError, RuleSet

DEFAULT = files("triage").joinpath("rules/default.toml").read_text("utf-8")
RULES = RuleSet.from_toml(DEFAULT)


def test_shipped_rules_load_with_the_seed_departments() -> None:
    """The packaged default.toml loads and defines the departments of seed 002."""
    assert RULES.categories == (
        "technical_support",
        "setup",
        "billing",
        "hosting",
        "email",
        "domains_dns",
        "sales",
        "other",
    )
    assert RULES.settings.chase_within_minutes == 40
    assert {"es", "en", "bg"} <= set(RULES.settings.languages)


def test_every_shipped_impact_rule_cites_a_seed() -> None:
    """Priority and severity rules say which policy they come from, for the explanations."""
    for rule in RULES.rules:
        if rule.kind in ("impact", "declared", "vague_subject", "chase", "abusive"):
            assert "seed 00" in rule.description, rule.name


def test_admin_adds_a_category_without_code() -> None:
    """A new [category.X] table with words and a recipient is a new department."""
    rules = RuleSet.from_toml(
        DEFAULT,
        """
        [category.printing]
        description = "Printers and scanners"
        recipients = ["impresion"]
        strong = ["tóner", "cartucho*", "тонер*"]
        """,
    )
    assert "printing" in rules.categories
    c = classify(MessageFacts("Cartuchos", "Se acabó el tóner."), rules)
    assert c.category.value == "printing"
    assert 'rule "printing" matched "Cartuchos", "tóner"' in c.category.explanation
    by_address = classify(MessageFacts("Hola", "", recipients=("impresion@example.com",)), rules)
    assert by_address.category.value == "printing"


def test_admin_words_are_added_to_the_shipped_lists() -> None:
    """Lists in an override extend the defaults: the old words still count."""
    rules = RULES.extended('[category.billing]\nwords = ["remesa*"]')
    assert classify(MessageFacts("Remesas devueltas", ""), rules).category.value == "billing"
    assert classify(MessageFacts("Factura", ""), rules).category.value == "billing"


def test_admin_can_switch_off_or_replace_a_rule() -> None:
    """enabled = false drops a rule; replace = true drops the shipped words of a table."""
    off = RULES.extended("[impact.not-just-here]\nenabled = false")
    assert "not-just-here" not in {r.name for r in off.rules}
    replaced = RULES.extended('[flags.abusive]\nreplace = true\nthreshold = 1\nwords = ["caramba"]')
    c = classify(MessageFacts("x", "Caramba, idiota."), replaced)
    assert c.flags.abusive.value is True
    assert c.flags.abusive.matched == ("Caramba",)


def test_admin_can_change_settings_and_the_chase_window() -> None:
    """Scalars replace: a 60-minute chase window makes a 50-minute "any news?" a chase."""
    rules = RULES.extended("[flags.chase]\nwithin_minutes = 60")
    c = classify(MessageFacts("Re: x", "Any news?", minutes_since_previous=50), rules)
    assert c.flags.chase.value is True


def test_layers_apply_in_order() -> None:
    """Later overrides win over earlier ones, and all over the base."""
    rules = RuleSet.from_toml(
        DEFAULT,
        "[settings]\nsubject_weight = 5.0",
        "[settings]\nsubject_weight = 1.0",
    )
    assert rules.settings.subject_weight == 1.0


@pytest.mark.parametrize(
    ("override", "key", "problem"),
    [
        ('[category.billing]\nword = ["x"]', "category.billing.word", "did you mean 'words'?"),
        (
            '[impact.site]\npriority = "alta"\nwords = ["x"]',
            "impact.site.priority",
            "must be one of",
        ),
        ("[impact.site]\nseverity = 7", "impact.site.severity", "must be one of 1, 2, 3, 4, 5"),
        ('[impact.site]\nwords = ["x"]', "impact.site", "needs a priority, a severity, a cap"),
        ('[category.billing]\nwords = "factura"', "category.billing.words", "list of strings"),
        ('[category.billing]\nwords = ["!!!"]', "category.billing.words", "no letters or digits"),
        ("[settings]\nstrong_weight = -1", "settings.strong_weight", "must not be negative"),
        ('[settings]\ndefault_category = "misc"', "settings.default_category", "'other'"),
        (
            "[settings.severity_range]\nhigh = [3, 1]",
            "settings.severity_range.high",
            "[lowest, highest]",
        ),
        ('[declared.urgent]\nwords = ["x"]', "declared.urgent", "low, medium or high"),
        ('[flags.chase]\nwithin_minutes = "40"', "flags.chase.within_minutes", "must be a number"),
        ("[categories.billing]\nwords = []", "categories", "did you mean 'category'?"),
        ("category = 3", "category", "must be a table"),
        ('[language]\ndetect = "es"', "language.detect", "list of strings"),
    ],
)
def test_mistakes_name_the_layer_the_key_and_the_fix(override: str, key: str, problem: str) -> None:
    """Every wrong key or value raises RulesError naming the layer, the dotted key, and why."""
    with pytest.raises(RulesError) as caught:
        RuleSet.from_toml(DEFAULT, override, names=("default.toml", "/etc/buzon/rules.toml"))
    err = caught.value
    assert err.source == "/etc/buzon/rules.toml"
    assert err.key == key
    assert problem in str(err)
    assert str(err).startswith(f"/etc/buzon/rules.toml: {key}: ")


def test_broken_toml_says_where() -> None:
    """Text that is not TOML is reported with the layer and TOML's line and column."""
    with pytest.raises(RulesError) as caught:
        RULES.extended('[category.billing\nwords = ["x"]', name="rules.d/extra.toml")
    assert str(caught.value).startswith("rules.d/extra.toml: not valid TOML: ")
    assert "line 1" in str(caught.value)


def test_the_blame_goes_to_the_layer_that_broke_the_rules() -> None:
    """A valid override followed by a broken one blames the second, by default name."""
    with pytest.raises(RulesError) as caught:
        RuleSet.from_toml(DEFAULT, "[settings]\nsubject_weight = 3.0", "[settings]\nsubject = 1")
    assert caught.value.source == "override #2"
    assert caught.value.key == "settings.subject"


def test_a_table_cannot_be_overridden_by_a_value() -> None:
    """Merging a value over a table (or back) is refused with the key named."""
    with pytest.raises(RulesError, match=r"override #1: category\.billing: must be a table"):
        RuleSet.from_toml(DEFAULT, "[category]\nbilling = 1")


def test_minimal_rules_work_without_the_shipped_file() -> None:
    """A small self-contained rule set is enough: defaults fill every setting."""
    rules = RuleSet.from_toml(
        """
        [category.other]
        [category.billing]
        strong = ["invoice*"]
        [impact.down]
        priority = "high"
        severity = 1
        strong = ["is down"]
        """
    )
    c = classify(MessageFacts("Invoice", "The portal is down."), rules)
    assert (c.category.value, c.priority.value, c.severity.value) == ("billing", "high", 1)
    assert c.flags.chase.value is False and c.flags.abusive.value is False
