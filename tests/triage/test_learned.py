"""The optional learned model: trained on tune.jsonl, saved without pickle, checked on load,
and allowed to overrule the rules only where it is surer than they are."""

from __future__ import annotations

import json
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the learned model needs buzon[learn]")

import numpy as np
from sklearn.linear_model import LogisticRegression

from triage import learned
from triage.classify import MessageFacts, classify
from triage.learned import Example, FieldModel, LearnedModel, ModelError, overrule
from triage.ruleset import RuleSet

TUNE = Path(__file__).resolve().parents[1] / "data" / "triage" / "tune.jsonl"
RULES = RuleSet.from_toml(files("triage").joinpath("rules/default.toml").read_text("utf-8"))


def examples() -> list[Example]:
    rows = [json.loads(line) for line in TUNE.read_text(encoding="utf-8").splitlines() if line]
    return [
        Example(
            r["subject"], r["body"], r["channel"], r["labels"]["category"], r["labels"]["priority"]
        )
        for r in rows
    ]


@pytest.fixture(scope="module")
def model() -> LearnedModel:
    return learned.train(examples())


@pytest.fixture(scope="module")
def saved(model: LearnedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "triage-model.npz"
    model.save(path)
    return path


def test_training_reports_counts_and_cross_validated_accuracy(model: LearnedModel) -> None:
    """The header says how many examples of each label it saw and how well it generalised."""
    header = model.header
    assert header["format"] == "buzon-triage-model" and header["version"] == 1
    assert header["examples"] == len(examples())
    assert header["vectorizers"] == learned.VECTORIZERS
    for name in ("category", "priority"):
        field = header["fields"][name]
        assert sum(field["counts"].values()) == len(examples())
        assert field["cv_folds"] == 5
        # Far better than guessing (1/8 categories, the majority priority ~0.5).
        assert 0.6 < field["cv_accuracy"] <= 1.0
    assert set(header["fields"]["priority"]["counts"]) == {"low", "medium", "high"}


def test_predictions_name_a_known_label_with_a_probability(model: LearnedModel) -> None:
    """A clear billing message is billing; each field gets a label and a probability."""
    got = model.predict(
        MessageFacts("Factura duplicada", "Nos habéis cobrado dos veces la factura de octubre.")
    )
    assert got["category"][0] == "billing"
    assert set(got) == {"category", "priority"}
    assert all(0.0 < p <= 1.0 for _, p in got.values())


def test_stored_coefficients_reproduce_scikit_learn_probabilities() -> None:
    """What the file keeps (coefficients, intercepts) gives scikit-learn's own probabilities,
    for a binary field as well as a multi-class one."""
    ex = examples()[:90]
    docs = [learned.document(e.subject, e.text, e.channel) for e in ex]
    x = learned._features(docs)
    for labels in (
        [e.category for e in ex],
        ["high" if e.priority == "high" else "not" for e in ex],
    ):
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(x, labels)
        fm = FieldModel(
            tuple(clf.classes_), clf.coef_.astype("float32"), clf.intercept_.astype("float32")
        )
        for row in range(0, 90, 17):
            want = clf.predict_proba(x[row])[0]
            assert np.allclose(fm.probabilities(x[row]), want, atol=1e-4)


def test_save_and_load_round_trip(model: LearnedModel, saved: Path) -> None:
    """A saved model loads with the same header and makes the same predictions; no pickle."""
    loaded = LearnedModel.load(saved)
    assert loaded.header == model.header
    facts = MessageFacts("Web caída", "La web no carga desde ningún ordenador.")
    assert loaded.predict(facts) == model.predict(facts)
    with np.load(saved, allow_pickle=False) as archive:  # nothing in it needs pickle
        assert {"header", "category.coef", "priority.classes"} <= set(archive.files)
    assert not list(saved.parent.glob(".*.tmp"))  # the temporary file was renamed


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    """A model path with nothing there says how to train one."""
    with pytest.raises(ModelError, match="no such model file; train one with `buzon triage train`"):
        LearnedModel.load(tmp_path / "none.npz")


def test_a_file_that_is_not_a_model_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Random bytes, a truncated archive or someone else's .npz: named, with the way out."""
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a model at all\n" * 10)
    with pytest.raises(ModelError) as err:
        LearnedModel.load(junk)
    assert "not a Buzón triage model" in str(err.value)
    assert f"retrain with `buzon triage train --output {junk}`" in str(err.value)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ModelError, match="not a Buzón triage model \\(no header\\)"):
        LearnedModel.load(foreign)


def test_a_damaged_or_newer_model_is_refused(saved: Path, tmp_path: Path) -> None:
    """A cut-short file, a newer format version, or a part with the wrong shape."""
    cut = tmp_path / "cut.npz"
    cut.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ModelError, match="not a Buzón triage model"):
        LearnedModel.load(cut)

    with np.load(saved, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes())
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**arrays, "header": _header_bytes({**header, "version": 2})})
    with pytest.raises(ModelError, match="format version 2 is newer than this Buzón reads"):
        LearnedModel.load(newer)

    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **{**arrays, "priority.coef": arrays["priority.coef"][:, :10]})
    with pytest.raises(ModelError, match="the priority part is damaged"):
        LearnedModel.load(damaged)
    assert zipfile.is_zipfile(damaged)


def _header_bytes(header: dict[str, object]) -> np.ndarray:
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def test_too_few_examples_are_refused() -> None:
    """Below the minimum number of examples, training refuses and says what to do."""
    with pytest.raises(learned.NotEnoughExamples, match="fewer than the 50 needed"):
        learned.train(examples()[:20])


# --- the model against the rules --------------------------------------------------


def test_the_model_overrules_a_field_only_above_the_minimum_and_the_rules() -> None:
    """0.93 beats the rules' 0.3 default; 0.75 is below the 0.8 minimum; 0.85 does not beat
    rules that are 0.9 sure. Flags are never the model's."""
    facts = MessageFacts("URGENTE", "Hola, una cosa sobre lo de ayer.", recipients=("a@b.es",))
    c = classify(facts, RULES)
    assert c.category.value == "other" and c.category.confidence == 0.3
    won = overrule(c, {"category": ("billing", 0.93)}, min_probability=0.8, settings=RULES.settings)
    assert won.category.value == "billing" and won.category.rule == "model"
    assert won.category.confidence == 0.93
    assert won.category.explanation.startswith(
        "category billing: learned model 0.93 (rules said other 0.30: category other: "
    )
    assert won.flags == c.flags and won.priority == c.priority

    low = overrule(c, {"category": ("billing", 0.75)}, min_probability=0.8, settings=RULES.settings)
    assert low.category == c.category

    sure = overrule(
        c,
        {"category": ("billing", 0.85)},
        min_probability=0.8,
        settings=RULES.settings,
    )
    assert sure.category.value == "billing"  # 0.85 > 0.3
    confident = classify(
        MessageFacts("Factura", "Factura de octubre, cobro, pago, IVA, recibo."), RULES
    )
    assert confident.category.confidence > 0.85
    kept = overrule(
        confident, {"category": ("sales", 0.85)}, min_probability=0.8, settings=RULES.settings
    )
    assert kept.category == confident.category


def test_a_priority_from_the_model_brings_the_severity_into_its_range() -> None:
    """Seed 003 against seed 001: a model's "low" makes severity 5, and says why."""
    c = classify(MessageFacts("Web caída", "La web no carga, estamos parados."), RULES)
    assert (c.priority.value, c.severity.value) == ("high", 1)
    got = overrule(c, {"priority": ("low", 0.99)}, min_probability=0.8, settings=RULES.settings)
    assert (got.priority.value, got.severity.value) == ("low", 5)
    assert got.priority.explanation.startswith("priority low: learned model 0.99 (rules said high")
    assert "from the learned model (seed 003)" in got.severity.explanation
    same = overrule(c, {"priority": ("high", 0.99)}, min_probability=0.8, settings=RULES.settings)
    assert same.severity == c.severity and "rules agreed" in same.priority.explanation
