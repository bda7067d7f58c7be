"""Classify messages for the daemon: shipped rules + the admin's, a learned model, [routing].

Built once per process and on first use (the language detector takes a moment and
some memory to load; one-shot commands such as ``tickets list`` never need it).
A model trained by ``buzon triage train`` (``[triage] model``, else
``triage-model.npz`` beside the spool) overrules the rules' category or priority
only where it is surer than they are (``triage.learned.overrule``); without
scikit-learn it is ignored with one warning and the rules decide alone.
``[routing]`` is applied last: when the mail was sent to a routed address, that
address decides the department, and the decision says so.
"""

from __future__ import annotations

import dataclasses
import threading
from importlib import resources
from pathlib import Path

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.logging import get_logger
from triage.classification import Classification
from triage.classify import MessageFacts, classify
from triage.decision import Decision
from triage.language import LanguageGuesser
from triage.learned import LearnedModel, LearnUnavailable, ModelError, overrule
from triage.ruleset import RulesError, RuleSet


def shipped_rules() -> str:
    return resources.files("triage").joinpath("rules/default.toml").read_text(encoding="utf-8")


class Triager:
    """``classify(facts)``: the daemon's one way to triage a message."""

    def __init__(
        self,
        rules: RuleSet,
        languages: LanguageGuesser,
        routing: dict[str, str],
        model: LearnedModel | None = None,
    ) -> None:
        self.rules, self.languages, self.routing = rules, languages, routing
        self.model = model

    @classmethod
    def from_config(cls, cfg: Config) -> Triager:
        """Rules, routing, language models and learned model, read and checked
        (ConfigError names what is wrong)."""
        layers, names = [shipped_rules()], ["triage/rules/default.toml"]
        if cfg.triage.rules:
            try:
                layers.append(Path(cfg.triage.rules).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(
                    f"[triage] rules: cannot read {cfg.triage.rules}: {exc.strerror}"
                ) from exc
            names.append(cfg.triage.rules)
        try:
            rules = RuleSet.from_toml(*layers, names=names)
        except RulesError as exc:
            raise ConfigError(f"[triage] rules: {exc}") from exc
        known = set(rules.categories)
        for address, category in cfg.routing:
            if category not in known:
                raise ConfigError(
                    f"[routing] {address!r} = {category!r}: no such category; "
                    f"the rules know {', '.join(sorted(known))}"
                )
        try:
            languages = LanguageGuesser(**rules.settings.language_options())
        except ValueError as exc:
            raise ConfigError(f"[triage] rules: [language] {exc}") from exc
        return cls(rules, languages, dict(cfg.routing), load_model(cfg))

    def classify(self, facts: MessageFacts) -> Classification:
        result = classify(facts, self.rules, self.languages)
        if self.model is not None:
            result = overrule(
                result,
                self.model.predict(facts),
                min_probability=self.model.min_probability,
                settings=self.rules.settings,
            )
        for address in facts.recipients:
            department = self.routing.get(address.lower())
            if department is not None:
                routed = Decision(
                    department,
                    1.0,
                    "routing",
                    (address,),
                    f"category {department}: [routing] sends mail for {address} to it",
                )
                return dataclasses.replace(result, category=routed)
        return result


def load_model(cfg: Config) -> LearnedModel | None:
    """The learned model the config points at, if any; a bad one is a config error."""
    path, named = cfg.triage.model_path(cfg.storage)
    if not named and not path.exists():
        return None  # no model trained yet: the rules decide, as shipped
    try:
        return LearnedModel.load(path)
    except LearnUnavailable as exc:
        # The model is an extra, not the service: run on the rules and say why once.
        get_logger(component="triage").warning(
            "triage.model_ignored", path=str(path), reason=str(exc)
        )
        return None
    except ModelError as exc:
        raise ConfigError(f"[triage] model: {exc}") from exc


class LazyTriager:
    """Builds the Triager on the first call, once, whichever thread calls first."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._triager: Triager | None = None

    def __call__(self) -> Triager:
        # Called for every message: once built, no lock (the attribute is set once).
        return self._triager or self._build()

    def _build(self) -> Triager:
        with self._lock:
            if self._triager is None:
                self._triager = Triager.from_config(self._cfg)
            return self._triager
