"""Voicemail test material: Asterisk-shaped emails around real recordings, Asterisk spool pairs."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

# Content types Asterisk gives each format (VOICEMAIL.md), by file name.
ASTERISK_TYPES = {
    "msg0000.wav": "audio/x-wav",
    "msg0000.wav16": "audio/x-wav16",
    "msg0000.WAV": "audio/x-WAV",
    "msg0000.gsm": "audio/x-gsm",
    "msg0000.ogg": "application/ogg",
    "msg0000.mp3": "audio/mpeg",
    "msg0000.m4a": "audio/mp4",
    "msg0000.amr": "audio/amr",
}


def asterisk_mail(
    audio: bytes,
    filename: str = "msg0000.wav",
    *,
    caller: str = "+34600111222",
    name: str = "Ana Pérez",
    length: str = "0:04",
    mailbox: str = "6001",
    number: int = 1,
    urgent: bool = False,
    content_type: str | None = None,
) -> bytes:
    """What Asterisk's app_voicemail sends (LF endings, as sendmail -t gets it)."""
    kind = "Urgent message" if urgent else "message"
    ctype = content_type or ASTERISK_TYPES[filename]
    b64 = base64.encodebytes(audio).decode()
    boundary = f"----voicemail_{uuid.uuid4().hex[:12]}"
    text = f"""Date: Sun, 22 Nov 2026 09:15:00 +0100
From: Asterisk PBX <asterisk@pbx.example.com>
To: Soporte <support@example.com>
Subject: [PBX]: New {kind} {number} in mailbox {mailbox}
Message-ID: <Asterisk-{number}-{uuid.uuid4().hex[:10]}-{mailbox}-4242@pbx.example.com>
X-Asterisk-CallerID: {caller}
X-Asterisk-CallerIDName: {name.encode("ascii", "ignore").decode()}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{boundary}"

This is a multi-part message in MIME format.

--{boundary}
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: 8bit

Dear Soporte:

\tjust wanted to let you know you were just left a {length} long {kind} (number {number})
in mailbox {mailbox} from {name}, on Sunday, November 22, 2026 at 09:15:00 AM so you might
want to check it when you get a chance.  Thanks!

\t\t\t\t--Asterisk

--{boundary}
Content-Type: {ctype}; name="{filename}"
Content-Transfer-Encoding: base64
Content-Description: Voicemail sound attachment.
Content-Disposition: attachment; filename="{filename}"

{b64}
--{boundary}--
.
"""
    return text.encode("utf-8")


def asterisk_pair(
    folder: Path,
    audio: Path,
    *,
    number: int = 0,
    callerid: str = '"Ana Pérez" <+34600111222>',
    duration: int = 4,
    origtime: int = 1795338900,
    flag: str = "",
) -> tuple[Path, Path]:
    """msgNNNN.txt + msgNNNN.<ext> as app_voicemail leaves them in a spool folder."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"msg{number:04d}"
    rec = folder / f"{stem}{audio.suffix}"
    rec.write_bytes(audio.read_bytes())
    info = folder / f"{stem}.txt"
    info.write_text(
        ";\n; Message Information file\n;\n[message]\n"
        "origmailbox=6001\ncontext=default\nmacrocontext=\nexten=6001\nrdnis=unknown\n"
        f"priority=2\ncallerchan=SIP/trunk-0000001\ncallerid={callerid}\n"
        f"origdate=Sun Nov 22 08:15:00 AM UTC 2026\norigtime={origtime}\ncategory=\n"
        f"msg_id={origtime}-00000000\nflag={flag}\nduration={duration}\n",
        encoding="utf-8",
    )
    return info, rec
