"""`buzon triage explain FILE…`: the decision Buzón would make for a message, stored nowhere."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daemon.config import Config
from daemon.errors import UsageError
from daemon.triager import Triager
from parsers import parse_message
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
