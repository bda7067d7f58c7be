"""The voicemail folder receiver: Asterisk spool pairs (msgNNNN.txt + audio) into the spool.

For PBXs that do not send email. A pair is complete when the ``.txt`` has its
``duration=`` line and neither file changed for ``settle`` seconds. It is turned
into one MIME message shaped like Asterisk's own voicemail email (``X-Asterisk-*``
headers from the ``.txt``, every recording and the ``.txt`` itself attached, byte
for byte), made durable in the spool, and only then moved to ``processed``. The
message is built deterministically from the files, so a pair spooled again after
a crash between those two steps is recognised as the same message by dedupe.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

from daemon import durable
from daemon.config import VoicemailDir
from daemon.logging import get_logger
from daemon.spool import Spool

# Which recording the pipeline transcribes when Asterisk kept several formats of one call.
AUDIO_TYPES = {
    "wav16": "audio/x-wav16",
    "wav": "audio/x-wav",
    "WAV": "audio/x-WAV",
    "wav49": "audio/x-WAV",
    "gsm": "audio/x-gsm",
    "ulaw": "audio/basic",
    "alaw": "audio/x-alaw-basic",
    "mp3": "audio/mpeg",
    "ogg": "application/ogg",
    "m4a": "audio/mp4",
}


@dataclass(frozen=True, slots=True)
class Pair:
    """One recorded call in the folder: its ``.txt`` and its recordings, best first."""

    info: Path
    audio: tuple[Path, ...]


def read_info(text: str) -> dict[str, str]:
    """The ``key=value`` lines of an Asterisk ``msgNNNN.txt`` (comments and sections skipped)."""
    out: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line[0] in ";[#" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def find_pairs(folder: Path, settle: float, now: float | None = None) -> list[Pair]:
    """Complete pairs in ``folder``, oldest message number first."""
    now = time.time() if now is None else now
    pairs: list[Pair] = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for name in names:
        if not (name.startswith("msg") and name.endswith(".txt")):
            continue
        info = folder / name
        stem = name[: -len(".txt")]
        audio = tuple(folder / f"{stem}.{ext}" for ext in AUDIO_TYPES if f"{stem}.{ext}" in names)
        if not audio or not _settled((info, *audio), settle, now):
            continue
        try:
            complete = "duration=" in info.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if complete:
            pairs.append(Pair(info, audio))
    return pairs


def _settled(paths: tuple[Path, ...], settle: float, now: float) -> bool:
    try:
        return all(now - p.stat().st_mtime >= settle for p in paths)
    except FileNotFoundError:
        return False


def build_message(pair: Pair, mailbox: str, hostname: str) -> bytes:
    """One Asterisk-shaped voicemail email holding the pair's files unchanged (base64)."""
    info_bytes = pair.info.read_bytes()
    recordings = [(p.name, p.read_bytes()) for p in pair.audio]
    digest = hashlib.sha256(info_bytes)
    for name, data in recordings:
        digest.update(name.encode() + b"\0" + data)
    key = digest.hexdigest()
    info = read_info(info_bytes.decode("utf-8", errors="replace"))
    box = mailbox or info.get("origmailbox", "")
    number = pair.info.stem[3:].lstrip("0") or "0"
    origtime = info.get("origtime", "")
    when = (
        datetime.fromtimestamp(int(origtime), UTC)
        if origtime.isdigit()
        else datetime.fromtimestamp(pair.info.stat().st_mtime, UTC)
    )
    urgent = "urgent" in info.get("flag", "").lower()
    name_of_caller, number_of_caller = split_callerid(info.get("callerid", ""))
    headers = [
        f"From: Asterisk voicemail folder <voicemail@{hostname}>",
        f"To: <{box or 'voicemail'}@{hostname}>",
        f"Subject: [PBX]: New {'Urgent ' if urgent else ''}message {int(number) + 1} "
        f"in mailbox {box}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <voicemail-dir-{key[:40]}@{hostname}>",
        f"X-Asterisk-CallerID: {_header(number_of_caller)}",
        f"X-Asterisk-CallerIDName: {Header(_header(name_of_caller), 'utf-8').encode()}",
        f"X-Asterisk-VM-Duration: {_header(info.get('duration', ''))}",
        f"X-Asterisk-VM-Orig-time: {_header(origtime)}",
        f"X-Asterisk-VM-Flag: {_header(info.get('flag', ''))}",
        f"X-Asterisk-VM-Message-Num: {int(number) + 1}",
        f"X-Asterisk-VM-Extension: {_header(box)}",
        f"X-Buzon-Voicemail-Dir: {_header(str(pair.info.parent))}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="buzon-vm-{key[:24]}"',
    ]
    boundary = f"--buzon-vm-{key[:24]}"
    parts = [
        "\r\n".join(headers),
        "",
        boundary,
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Voicemail left in mailbox {box}, read from {pair.info.parent}.",
    ]
    for name, data in [(pair.info.name, info_bytes), *recordings]:
        ext = name.rsplit(".", 1)[-1]
        ctype = "text/plain; charset=utf-8" if ext == "txt" else AUDIO_TYPES[ext]
        parts += [
            boundary,
            f'Content-Type: {ctype}; name="{name}"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{name}"',
            "",
            *_base64_lines(data),
        ]
    parts += [boundary + "--", ""]
    return "\r\n".join(parts).encode()


def split_callerid(value: str) -> tuple[str, str]:
    """Asterisk's ``"Name" <number>`` (or a bare number, or a bare name) as (name, number)."""
    value = value.strip()
    if value.endswith(">") and "<" in value:
        name, _, number = value[:-1].rpartition("<")
        return name.strip().strip('"').strip(), number.strip()
    if value.lstrip("+").replace(" ", "").replace("-", "").isdigit():
        return "", value
    return value.strip('"'), ""


def _header(value: str) -> str:
    # The .txt is written by the PBX from caller input: keep it on one header line.
    return "".join(c if c.isprintable() else " " for c in value)[:200]


def _base64_lines(data: bytes) -> list[str]:
    encoded = base64.b64encode(data).decode()
    return [encoded[i : i + 76] for i in range(0, len(encoded), 76)]


class VoicemailFolder:
    """Watches one ``[[voicemail_dir]]``: spool each complete pair, then move it away."""

    def __init__(
        self,
        cfg: VoicemailDir,
        spool: Spool,
        *,
        hostname: str,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.spool, self.hostname, self.stop = cfg, spool, hostname, stop
        self.clock = clock
        self.log = get_logger(component="voicemail_dir", path=cfg.path)

    def run(self) -> None:
        """Thread target: scan every ``poll_interval`` until stopped; never raises."""
        while not self.stop.is_set():
            try:
                self.scan()
            except Exception as exc:  # a full disk, a permission problem: say so, retry
                self.log.error(
                    "voicemail_dir.error",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=self.cfg.poll_interval,
                    fix="check that both folders exist and are writable by the buzon user",
                )
            self.stop.wait(self.cfg.poll_interval)

    def scan(self) -> int:
        """Spool and move every complete pair; returns how many."""
        done = 0
        for pair in find_pairs(Path(self.cfg.path), self.cfg.settle, self.clock()):
            raw = build_message(pair, self.cfg.mailbox, self.hostname)
            files = [pair.info.name, *(p.name for p in pair.audio)]
            entry = self.spool.put(
                raw,
                {
                    "source": f"voicemail-dir:{self.cfg.mailbox or pair.info.parent.name}",
                    "received_at": datetime.now(UTC).isoformat(),
                    "envelope": {"voicemail_dir": {"path": self.cfg.path, "files": files}},
                },
            )
            self._move(pair, hashlib.sha256(raw).hexdigest()[:12])
            self.log.info("voicemail_dir.spooled", spool_id=entry.id, files=files, size=len(raw))
            done += 1
        return done

    def _move(self, pair: Pair, tag: str) -> None:
        """Move the files out of the PBX's folder; the tag keeps msg0000 of two calls apart."""
        target = Path(self.cfg.processed)
        target.mkdir(parents=True, exist_ok=True)
        # Recordings first, the .txt last: a move cut half-way leaves no .txt-only "pair".
        for path in (*pair.audio, pair.info):
            shutil.move(str(path), target / f"{tag}-{path.name}")
        durable.fsync_dir(target)


class VoicemailFolders:
    """One watcher thread per ``[[voicemail_dir]]``; started and stopped with the daemon."""

    def __init__(self, dirs: tuple[VoicemailDir, ...], spool: Spool, *, hostname: str) -> None:
        self.stop_event = threading.Event()
        self.watchers = [
            VoicemailFolder(d, spool, hostname=hostname, stop=self.stop_event) for d in dirs
        ]
        self.threads = [
            threading.Thread(target=w.run, name=f"voicemail-dir-{i}", daemon=True)
            for i, w in enumerate(self.watchers)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
