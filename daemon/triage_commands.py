"""`buzon triage explain FILE…` and `buzon triage train`: a decision explained, a model trained.

``explain`` shows the decision Buzón would make for a message and stores nothing.
``train`` fits the optional learned model (``triage.learned``) on the tickets
agents corrected (``storage.training``) plus labelled JSONL files, reports
per-field counts and cross-validated accuracy, and writes the model atomically
where the daemon looks for it at start.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.errors import UsageError
from daemon.parts import open_parts
from daemon.triager import Triager
from parsers import parse_message
from storage.training import corrected_tickets
from triage import learned
from triage.classify import MessageFacts


def explain(cfg: Config, args: argparse.Namespace) -> int:
    triager = Triager.from_config(cfg)
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"{name}: cannot read it: {exc.strerror}") from exc
        parsed = parse_message(raw)
        rcpts = [a.addr_spec for a in (*parsed.to, *parsed.cc)]
        facts = MessageFacts(
            subject=parsed.subject,
            text=parsed.text,
            channel="voicemail" if parsed.voicemail is not None else "email",
            recipients=tuple(a.lower() for a in rcpts if a),
            minutes_since_previous=args.minutes_since_previous,
        )
        c = triager.classify(facts)
        if args.json:
            print(json.dumps({"file": name, **c.as_dict()}, ensure_ascii=False))
        else:
            print(f"{name}: {c.explain()}")
    return 0


def train(cfg: Config, args: argparse.Namespace) -> int:
    try:
        learned.require()
    except learned.LearnUnavailable as exc:
        raise UsageError(f"triage train: {exc}") from None
    if args.min_examples < 1:
        raise UsageError("triage train: --min-examples must be at least 1")
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as session:
        tickets = corrected_tickets(session)
    # A correction on a ticket that was never classified leaves one field empty.
    from_db = [
        learned.Example(t.subject, t.text, t.channel, t.category, t.priority)
        for t in tickets
        if t.category and t.priority
    ]
    from_files = [example for name in args.from_jsonl for example in _jsonl(name)]
    try:
        model = learned.train(
            from_db + from_files,
            min_examples=args.min_examples,
            min_probability=args.min_probability,
        )
    except (learned.NotEnoughExamples, ValueError) as exc:
        raise UsageError(f"triage train: {exc}") from None
    path = Path(args.output) if args.output else cfg.triage.model_path(cfg.storage)[0]
    model.save(path)
    report: dict[str, Any] = {
        "output": str(path),
        "examples": len(from_db) + len(from_files),
        "corrected_tickets": len(from_db),
        "skipped_tickets": len(tickets) - len(from_db),
        "from_jsonl": len(from_files),
        **{k: model.header[k] for k in ("min_probability", "trained_at", "sklearn", "fields")},
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    skipped = report["skipped_tickets"]
    print(
        f"trained on {report['examples']} examples: {len(from_db)} corrected tickets"
        + (f" ({skipped} skipped: never classified)" if skipped else "")
        + f", {len(from_files)} from {len(args.from_jsonl)} JSONL file(s)"
    )
    for name, field in model.header["fields"].items():
        cv = field["cv_accuracy"]
        score = f"{cv:.3f} ({field['cv_folds']}-fold)" if cv is not None else "n/a (too few)"
        counts = ", ".join(f"{label} {n}" for label, n in field["counts"].items())
        print(f"  {name:<9} cross-validated accuracy {score}; {counts}")
    print(
        f"wrote {path}; it overrules the rules only when at least "
        f"{model.min_probability:.2f} sure and surer than they are"
    )
    return 0


def _jsonl(name: str) -> list[learned.Example]:
    """Labelled messages in the tests/data/triage format; a bad line names file and line."""
    try:
        lines = Path(name).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{name}: cannot read it: {exc}") from exc
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            labels = row["labels"]
            out.append(
                learned.Example(
                    str(row.get("subject", "")),
                    str(row.get("body", "")),
                    str(row.get("channel", "email")),
                    str(labels["category"]),
                    str(labels["priority"]),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{name}:{number}: not a labelled message ({type(exc).__name__}: {exc}); "
                'each line needs subject, body and labels {"category": ..., "priority": ...}'
            ) from None
    return out
