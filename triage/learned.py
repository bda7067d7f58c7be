"""An optional learned model for category and priority, trained on tickets agents corrected.

The rules stay the explanation of record; the model only overrules a field when
it is surer than the rules *and* above a minimum (``overrule``), and it never
touches flags (seed 001's flags are policy, not statistics).

Features are hashed (scikit-learn's ``HashingVectorizer``: word 1-2-grams and
character 2-4-grams of the folded text), so the vectorizer is stateless and
nothing but numbers needs storing. A model is one ``.npz`` file written without
pickle: per field the logistic-regression coefficients, intercepts and class
names, plus a JSON header (format version, vectorizer parameters, scikit-learn
version, training time, examples per class, cross-validated accuracy).
``load`` checks the header and says what is wrong and how to fix it.

scikit-learn (and NumPy) are the optional extra ``buzon[learn]``: this module
imports them only when a model is trained or loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triage.classification import Classification
from triage.classify import MessageFacts
from triage.decision import Decision
from triage.matching import fold
from triage.ruleset import PRIORITIES, Priority, Settings

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "FIELDS",
    "Example",
    "LearnUnavailable",
    "LearnedModel",
    "ModelError",
    "NotEnoughExamples",
    "overrule",
    "require",
    "train",
]

FORMAT = "buzon-triage-model"
VERSION = 1
FIELDS = ("category", "priority")
DEFAULT_MIN_PROBABILITY = 0.8
# Fixed for format 1: changing them changes every hashed feature, so a model
# records them and ``load`` refuses any it does not know.
VECTORIZERS: dict[str, dict[str, Any]] = {
    "word": {"analyzer": "word", "ngram_range": [1, 2], "n_features": 2**14},
    "char": {"analyzer": "char_wb", "ngram_range": [2, 4], "n_features": 2**14},
}
_VOICEMAIL = " zzvoicemailzz"  # a token no customer writes: the channel as a feature


class ModelError(ValueError):
    """Raised when a model file is missing, foreign, damaged or of an unknown format."""


class LearnUnavailable(RuntimeError):
    """Raised when scikit-learn is not installed; training and models need ``buzon[learn]``."""


class NotEnoughExamples(ValueError):
    """Raised when there are too few labelled examples to train on."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled message: what the classifier reads, and the right answers."""

    subject: str
    text: str
    channel: str  # "email" | "voicemail"
    category: str
    priority: str


def require() -> None:
    """Raise ``LearnUnavailable`` unless scikit-learn (and NumPy) can be imported."""
    try:
        import numpy  # noqa: F401
        import sklearn  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError as exc:
        raise LearnUnavailable(
            f"scikit-learn is not installed ({exc.name} is missing): "
            "install buzon[learn], e.g. pip install 'buzon[learn]'"
        ) from None


def document(subject: str, text: str, channel: str) -> str:
    """The text the model reads: folded like the rules read it, the channel as a token."""
    # A voicemail's subject is the PBX's ("Voicemail from ..."): not the caller's words.
    own = text if channel == "voicemail" else f"{subject}\n{text}"
    return fold(own) + (_VOICEMAIL if channel == "voicemail" else "")


def _features(docs: Sequence[str]) -> Any:
    from scipy.sparse import hstack  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from sklearn import config_context  # type: ignore[import-untyped,import-not-found,unused-ignore]

    # Our own fixed parameters need no validating on every message: half the cost.
    with config_context(assume_finite=True, skip_parameter_validation=True):
        return hstack([v.transform(docs) for v in _vectorizers()]).tocsr()


@functools.cache
def _vectorizers() -> tuple[Any, ...]:
    # Stateless, so built once per process: building them costs more than hashing a message.
    require()
    from sklearn.feature_extraction.text import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        HashingVectorizer,
    )

    return tuple(
        HashingVectorizer(
            analyzer=v["analyzer"],
            ngram_range=tuple(v["ngram_range"]),
            n_features=v["n_features"],
            alternate_sign=False,
            norm="l2",
            lowercase=False,  # ``document`` has folded already
        )
        for v in VECTORIZERS.values()
    )


def _n_features() -> int:
    return sum(int(v["n_features"]) for v in VECTORIZERS.values())


@dataclass(frozen=True, slots=True)
class FieldModel:
    """One field's linear model: scores = X @ coef.T + intercept, one row per class."""

    classes: tuple[str, ...]
    coef: NDArray[np.float32]  # (classes, features); one row for two classes
    intercept: NDArray[np.float32]

    def probabilities(self, x: Any) -> list[float]:
        import numpy as np

        scores = np.asarray(x @ self.coef.T).ravel() + self.intercept
        if len(self.classes) == 2:  # scikit-learn's binary form: one logit
            p = 1.0 / (1.0 + math.exp(-float(scores[0])))
            return [1.0 - p, p]
        top = float(scores.max())
        exp = np.exp(scores - top)
        return [float(v) for v in exp / exp.sum()]


@dataclass(frozen=True, slots=True)
class LearnedModel:
    """A trained model: ``predict`` per field, ``save`` to and ``load`` from one .npz file."""

    fields: dict[str, FieldModel]
    header: dict[str, Any]

    @property
    def min_probability(self) -> float:
        """Below this the model never overrules the rules (set when training)."""
        return float(self.header.get("min_probability", DEFAULT_MIN_PROBABILITY))

    def predict(self, facts: MessageFacts) -> dict[str, tuple[str, float]]:
        """The most likely label of each field and its probability."""
        x = _features([document(facts.subject, facts.text, facts.channel)])
        out: dict[str, tuple[str, float]] = {}
        for name, fm in self.fields.items():
            probs = fm.probabilities(x)
            best = max(range(len(probs)), key=probs.__getitem__)
            out[name] = (fm.classes[best], round(probs[best], 4))
        return out

    def save(self, path: str | Path) -> None:
        """Write the model to ``path`` atomically: a temporary file, fsync, rename."""
        import numpy as np

        target = Path(path)
        arrays: dict[str, Any] = {
            "header": np.frombuffer(json.dumps(self.header).encode("utf-8"), dtype=np.uint8)
        }
        for name, fm in self.fields.items():
            arrays[f"{name}.classes"] = np.array(fm.classes, dtype=str)
            arrays[f"{name}.coef"] = fm.coef
            arrays[f"{name}.intercept"] = fm.intercept
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory entry is on disk.
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        """Read and check a model file; ``ModelError`` names the problem and the fix."""
        require()
        import numpy as np

        retrain = f"retrain with `buzon triage train --output {path}`"
        try:
            fh = Path(path).open("rb")  # noqa: SIM115 - closed by the ``with fh`` below
        except FileNotFoundError:
            raise ModelError(
                f"{path}: no such model file; train one with `buzon triage train`"
            ) from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the model: {exc.strerror}") from None
        # Our own handle, closed on every path: a truncated archive must not leak it.
        with fh:
            try:
                archive = np.load(fh, allow_pickle=False)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise ModelError(
                    f"{path}: not a Buzón triage model (not a NumPy .npz archive: {exc}); {retrain}"
                ) from None
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ModelError(f"{path}: not a Buzón triage model (a single array); {retrain}")
            with archive:
                if "header" not in archive.files:
                    raise ModelError(f"{path}: not a Buzón triage model (no header); {retrain}")
                header = _header(path, bytes(archive["header"].tobytes()), retrain)
                fields = {name: _field(path, archive, name, retrain) for name in FIELDS}
        return cls(fields, header)


def _header(path: str | Path, raw: bytes, retrain: str) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(
            f"{path}: the model header is not JSON (damaged file); {retrain}"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path}: not a Buzón triage model (format is not {FORMAT!r}); {retrain}")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ModelError(
            f"{path}: model format version {version!r} is newer than this Buzón reads "
            f"({VERSION}); upgrade Buzón or {retrain}"
        )
    if header.get("vectorizers") != VECTORIZERS:
        raise ModelError(
            f"{path}: the model was trained with other text features than this Buzón "
            f"computes; {retrain}"
        )
    return header


def _field(path: str | Path, archive: Any, name: str, retrain: str) -> FieldModel:
    try:
        classes = tuple(str(c) for c in archive[f"{name}.classes"])
        coef = archive[f"{name}.coef"]
        intercept = archive[f"{name}.intercept"]
    except (KeyError, ValueError) as exc:
        raise ModelError(
            f"{path}: the model has no usable {name} part ({exc}); {retrain}"
        ) from None
    rows = 1 if len(classes) == 2 else len(classes)
    if len(classes) < 2 or coef.shape != (rows, _n_features()) or intercept.shape != (rows,):
        raise ModelError(
            f"{path}: the {name} part is damaged ({len(classes)} classes, coefficients "
            f"{coef.shape}, intercepts {intercept.shape}); {retrain}"
        )
    return FieldModel(classes, coef, intercept)


def train(
    examples: Sequence[Example],
    *,
    min_examples: int = 50,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
    folds: int = 5,
    now: datetime | None = None,
) -> LearnedModel:
    """Fit one model per field; the header records counts and cross-validated accuracy."""
    require()
    if not 0.0 < min_probability <= 1.0:
        raise ValueError(f"min_probability must be above 0 and at most 1, got {min_probability}")
    import sklearn
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from sklearn.model_selection import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        StratifiedKFold,
        cross_val_score,
    )

    if len(examples) < min_examples:
        raise NotEnoughExamples(
            f"{len(examples)} labelled examples, fewer than the {min_examples} needed; "
            "correct more tickets, add --from-jsonl files, or lower --min-examples"
        )
    x = _features([document(e.subject, e.text, e.channel) for e in examples])
    fields: dict[str, FieldModel] = {}
    report: dict[str, Any] = {}
    for name in FIELDS:
        labels = [getattr(e, name) for e in examples]
        counts = Counter(labels)
        if len(counts) < 2:
            raise NotEnoughExamples(
                f"every example has {name} {labels[0]!r}: a model needs at least two labels"
            )
        # Little regularisation: corrected tickets are few and each one counts. Newton-CG
        # reaches the same optimum (L2 makes it unique; class probabilities within 0.01 of
        # lbfgs's) in 5-7 iterations where lbfgs took 30-37, each costlier: training on
        # the 312 tuning examples, cross-validation included, 17 s -> 4.4 s.
        clf = LogisticRegression(C=10.0, max_iter=2000, solver="newton-cg")
        splits = min(folds, *counts.values())
        cv: float | None = None
        if splits >= 2:  # shuffled with a fixed seed: the same examples, the same report
            kfold = StratifiedKFold(n_splits=splits, shuffle=True, random_state=0)
            cv = round(float(cross_val_score(clf, x, labels, cv=kfold).mean()), 4)
        clf.fit(x, labels)
        fields[name] = FieldModel(
            tuple(str(c) for c in clf.classes_),
            clf.coef_.astype("float32"),
            clf.intercept_.astype("float32"),
        )
        report[name] = {
            "counts": dict(sorted(counts.items())),
            "cv_accuracy": cv,
            "cv_folds": splits,
        }
    header = {
        "format": FORMAT,
        "version": VERSION,
        "vectorizers": VECTORIZERS,
        "sklearn": sklearn.__version__,
        "trained_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "examples": len(examples),
        "min_probability": min_probability,
        "fields": report,
    }
    return LearnedModel(fields, header)


def overrule(
    c: Classification,
    predictions: dict[str, tuple[str, float]],
    *,
    min_probability: float,
    settings: Settings,
) -> Classification:
    """``c`` with category and priority taken from the model where it is surer than the rules.

    The model wins a field only when its probability is at least ``min_probability``
    and above the rules' confidence; flags are never touched. A priority the model
    changes brings the severity back into that priority's range (seed 003 vs 001).
    """
    changes: dict[str, Any] = {}
    for name in FIELDS:
        if name not in predictions:
            continue
        label, p = predictions[name]
        rules: Decision[Any] = getattr(c, name)
        if p < min_probability or p <= rules.confidence:
            continue
        if name == "priority" and label not in PRIORITIES:
            continue
        said = (
            f"rules agreed: {rules.explanation}"
            if label == rules.value
            else f"rules said {rules.value} {rules.confidence:.2f}: {rules.explanation}"
        )
        changes[name] = Decision(
            label, p, "model", (), f"{name} {label}: learned model {p:.2f} ({said})"
        )
    priority = changes.get("priority")
    if priority is not None and c.severity.value not in settings.severities_for(priority.value):
        level: Priority = priority.value
        severity = settings.severity_default(level)
        changes["severity"] = Decision(
            severity,
            priority.confidence,
            "model",
            (),
            f"severity {severity}: follows priority {level} from the learned model (seed 003)",
        )
    return dataclasses.replace(c, **changes) if changes else c
