"""`buzon transcribe`: what the daemon would hear in a recording, and requeueing failures.

It uses the daemon's own decoder and recogniser, in this process, on the model the
configuration names (or ``--model``). A file may be a recording in any accepted
format or a whole voicemail email (its audio parts are transcribed).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.errors import UsageError
from daemon.parts import open_parts
from parsers import parse_message
from parsers.audiosniff import sniff_audio
from storage import voicemails as vm_repo
from storage.models import Voicemail


def transcribe(cfg: Config, args: argparse.Namespace) -> int:
    # Loaded here: Vosk and FFmpeg are heavy, and `tickets show` imports this module.
    from transcription import (
        DecodeLimits,
        Recognizer,
        TranscriptionError,
        check_model_dir,
        transcribe_audio,
    )

    if args.retry_failed:
        return _retry_failed(cfg)
    if not args.files:
        raise UsageError("name one or more files (recordings or voicemail emails)")
    model = Path(args.model or cfg.transcription.model or "")
    if not str(model) or str(model) == ".":
        raise UsageError(
            "no model: pass --model DIR or set [transcription] model to a Vosk model directory"
        )
    try:
        check_model_dir(model)
    except TranscriptionError as exc:
        raise UsageError(str(exc)) from exc
    t = cfg.transcription
    limits = DecodeLimits(
        max_bytes=t.max_audio_bytes, max_seconds=t.max_audio_seconds, time_limit=t.time_limit
    )
    recognizer = Recognizer(model, threshold=t.confidence_threshold)
    failed = 0
    for name in args.files:
        for label, audio, hint in _recordings(Path(name)):
            try:
                result = transcribe_audio(recognizer, audio, limits, hint)
            except TranscriptionError as exc:
                failed += 1
                print(f"buzon: {label}: {exc}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps({"file": label, **result.to_json()}, ensure_ascii=False))
            else:
                flag = "  [needs listening]" if result.needs_listening else ""
                print(f"{label}: {result.duration:.1f} s, confidence {result.confidence:.2f}{flag}")
                print(result.text)
    return 1 if failed else 0


def _recordings(path: Path) -> list[tuple[str, bytes, str]]:
    """(label, audio bytes, format hint) for a recording, or for each audio part of an email."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from exc
    if sniff_audio(data) is None:
        parsed = parse_message(data)
        if parsed.voicemail is not None:
            return [
                (
                    f"{path}:{parsed.attachments[a.index].filename or a.index}",
                    parsed.attachments[a.index].content,
                    a.format,
                )
                for a in parsed.voicemail.audio
            ]
    # Raw GSM has no magic bytes: its extension is the only hint the decoder gets.
    hint = path.suffix.lstrip(".").lower() if path.suffix.lower() == ".gsm" else ""
    return [(str(path), data, hint)]


def _retry_failed(cfg: Config) -> int:
    with open_parts(cfg, recover=False) as parts, parts.db.transaction() as s:
        n = vm_repo.retry_failed(s, datetime.now(UTC))
    print(f"{n} failed transcription(s) queued again; the running daemon picks them up")
    return 0


def voicemail_detail(vm: Voicemail | None) -> dict[str, Any] | None:
    """What `tickets show` prints about a message's recording and its transcript."""
    if vm is None:
        return None
    return {
        "caller_number": vm.caller_number,
        "caller_name": vm.caller_name,
        "duration_seconds": vm.duration_seconds,
        "mailbox": vm.mailbox,
        "urgent": vm.urgent,
        "pbx": vm.pbx,
        "audio_format": vm.audio_format,
        "transcription": vm.state,
        "attempts": vm.attempts,
        "last_error": vm.last_error,
        "text": vm.text,
        "confidence": vm.confidence,
        "needs_listening": vm.needs_listening,
        "model": (vm.transcript or {}).get("model", ""),
        "words": (vm.transcript or {}).get("words", []),
        "pbx_transcript": vm.pbx_transcript,
    }
