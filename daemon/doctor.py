"""``buzon doctor``: every check (config, database, data directories, transcription
models, relay, IMAP logins, templates) with a verdict, what was seen, and a fix.

It may run beside a live daemon: it only reads, and its network probes have short
timeouts. It runs its checks side by side, so it answers within ``DEADLINE`` seconds
even when every server is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from daemon.admin_common import NET_TIMEOUT, clean, describe_error, read_schema
from daemon.config import Config, ImapAccount
from daemon.config_checks import LOOPBACK, unresolved_credential
from daemon.spool import MIN_FREE_INODES

MODEL_TIMEOUT = 10.0  # doctor: loading a Vosk model in a child process
DEADLINE = 13.0  # doctor: every check has answered by then, or is reported as hanging
Verdict = Literal["PASS", "WARN", "FAIL"]


def _loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of ``buzon doctor``: what was checked, the verdict, what was seen, the fix."""

    check: str
    verdict: Verdict
    finding: str
    fix: str = ""


def _fail(check: str, finding: str, fix: str) -> Finding:
    return Finding(check, "FAIL", finding, fix)


def _warn(check: str, finding: str, fix: str) -> Finding:
    return Finding(check, "WARN", finding, fix)


def check_config(cfg: Config) -> list[Finding]:
    out = [Finding("config", "PASS", f"{cfg.source} loads and validates")]
    metrics = cfg.metrics.listen
    if metrics and not _loopback(metrics.rpartition(":")[0].strip("[]")):
        out.append(
            _warn(
                "config",
                f"[metrics] listen = {metrics}: queue sizes are readable off this host",
                'listen on loopback (e.g. "127.0.0.1:9325") or firewall the port',
            )
        )
    if cfg.log.format == "console":
        out.append(
            _warn(
                "config",
                '[log] format = "console" is not JSON: `buzon logs` and jq cannot read it',
                'set [log] format = "auto" (JSON under systemd) or "json"',
            )
        )
    secrets = [a.password_file or a.token_file for a in cfg.imap]
    if any(unresolved_credential(p) for p in [*secrets, cfg.desk.outbound.password_file]):
        out.append(
            _warn(
                "config",
                "secrets come from $CREDENTIALS_DIRECTORY, unset outside the service: "
                "the logins below cannot be tested",
                "run it with the credentials: systemd-run -p LoadCredential=... buzon doctor",
            )
        )
    return out


def check_database(cfg: Config) -> list[Finding]:
    schema, db = read_schema(cfg)
    if db is not None:
        db.dispose()
    where, rev, head = schema["database"], schema["revision"], schema["head"]
    upgrade = "run `buzon db upgrade` (`buzon run` also migrates at start)"
    verdicts = {
        "current": Finding("database", "PASS", f"{where}: schema {rev} (head)"),
        "missing": _warn("database", f"{where}: the file does not exist yet", upgrade),
        "empty": _warn("database", f"{where}: reachable, no schema yet", upgrade),
        "behind": _warn("database", f"{where}: schema {rev}, head is {head}", upgrade),
        "newer": _fail(
            "database",
            f"{where}: schema {rev} is newer than this Buzón (head {head})",
            "run the Buzón version that wrote it, or restore a backup",
        ),
        "unreachable": _fail(
            "database",
            f"{where}: {schema['error']}",
            "check [storage] database, that the server runs and that this user may connect",
        ),
    }
    return [verdicts[schema["state"]]]


def _nearest(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _writable(path: Path) -> str:
    """Empty when this user can create a file in ``path`` (root passes os.access: try)."""
    probe = path / f".buzon-doctor-{os.getpid()}-{secrets.token_hex(4)}"  # checks run at once
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return describe_error(exc)
    return ""


def check_dir(name: str, path: Path, need: int) -> Finding:
    """A data directory: exists (or can be made), writable, room for ``need`` bytes.

    FAIL below the SMTP listener's own 452 threshold (``Spool.has_room_for``: 1.5 x
    the largest message, MIN_FREE_INODES inodes); WARN under 10 % free.
    """
    user = getpass.getuser()
    target = path if path.exists() else _nearest(path)
    if not target.is_dir():
        return _fail(name, f"{target} is not a directory", "point it at a directory")
    problem = _writable(target)
    if problem:
        fix = f"chown -R {user} {path}, or run Buzón as the user that owns it"
        return _fail(name, f"{target} is not writable by {user}: {problem}", fix)
    st = os.statvfs(target)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    pct = 100.0 * free / total if total else 100.0
    ipct = 100.0 * st.f_favail / st.f_files if st.f_files else 100.0  # some fs report 0
    seen = f"{path}: writable, {free / 2**30:.1f} GiB free ({pct:.0f} %)"
    seen += f", {st.f_favail} inodes free" if st.f_files else ""
    seen += "" if path.exists() else " (does not exist yet; created at start)"
    fix = f"free space on the filesystem of {target}"
    if free < need * 1.5 or (st.f_files and st.f_favail < MIN_FREE_INODES):
        return _fail(name, f"{seen}: below the 452 threshold, mail is refused", fix)
    if pct < 10 or ipct < 10:
        return _warn(name, f"{seen}: under 10 % free", fix)
    return Finding(name, "PASS", seen)


_LOAD = (
    "import sys; from pathlib import Path; from transcription.recognize import Recognizer; "
    "print(f'{Recognizer(Path(sys.argv[1])).load_seconds:.1f}')"
)


def check_model(key: str, model_dir: str) -> Finding:
    """A configured Vosk model: its files, then a real load in a child process (Kaldi
    may abort the whole process on a bad model; a child keeps doctor alive)."""
    from transcription.model import ModelUnavailable
    from transcription.recognize import check_model_dir

    try:
        check_model_dir(Path(model_dir))
    except ModelUnavailable as exc:
        return _fail("transcription", f"{key}: {exc}", f"fix {key} or unpack the model there")
    argv = [sys.executable, "-c", _LOAD, model_dir]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=MODEL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        slow = f"{key} {model_dir}: files complete; loading took over {MODEL_TIMEOUT:.0f} s"
        return _warn("transcription", slow, "check free memory; the daemon loads it at start")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return _fail("transcription", f"{key} {model_dir}: {clean(last, 200)}", f"fix {key}")
    loaded = f"{key} {model_dir}: loads in {done.stdout.strip()} s"
    return Finding("transcription", "PASS", loaded)


def _models(cfg: Config) -> list[tuple[str, str]]:
    t = cfg.transcription
    out = [("[transcription] model", t.model)] if t.model else []
    return out + [(f"[transcription.models] {k}", v) for k, v in t.models]


async def _ehlo(cfg: Config, password: str) -> list[str]:
    import aiosmtplib

    out = cfg.desk.outbound
    smtp = aiosmtplib.SMTP(  # dialled as the outbox sender does (daemon.outbox._Relay)
        hostname=out.host,
        port=out.port,
        timeout=NET_TIMEOUT,
        use_tls=out.tls == "tls",
        start_tls=out.tls == "starttls",
        username=out.username or None,
        password=password or None,
    )
    async with asyncio.timeout(NET_TIMEOUT * 2):
        await smtp.connect()  # TCP, TLS as configured, and AUTH when a username is set
        try:
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            return sorted(smtp.esmtp_extensions)
        finally:
            with contextlib.suppress(Exception):
                await smtp.quit()
            smtp.close()


TLS_FIX = (
    "check security/tls (tls: usually port 465 or 993, starttls: 587 or 143) and the certificate"
)
REACH_FIX = "check host and port, and that this host may reach it (firewall, DNS)"


def check_relay(cfg: Config) -> Finding:
    """Connect, TLS, EHLO and AUTH as the outbox would; never a MAIL FROM."""
    import aiosmtplib

    out = cfg.desk.outbound
    if not out.relay:
        return _warn(
            "relay",
            "no [outbound] relay: acknowledgements and replies wait in the outbox",
            'set [outbound] relay = "smtp.example.com:587" (with tls, username, password_file)',
        )
    password = ""
    if out.username:
        try:
            password = Path(out.password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            fix = "make it a file readable by this user holding the relay password"
            return _fail("relay", f"[outbound] password_file: {describe_error(exc)}", fix)
    where = f"{out.relay} (tls = {out.tls})"
    try:
        ext = asyncio.run(_ehlo(cfg, password))
    except aiosmtplib.SMTPAuthenticationError as exc:
        refused = f"{where}: login as {out.username} refused: {exc.code} {clean(exc.message)}"
        return _fail("relay", refused, "check [outbound] username and the password file")
    except ssl.SSLError as exc:
        return _fail("relay", f"{where}: TLS failed: {describe_error(exc)}", TLS_FIX)
    except (aiosmtplib.SMTPException, OSError) as exc:
        return _fail("relay", f"{where}: {describe_error(exc)}", REACH_FIX)
    auth = f"login as {out.username} accepted" if out.username else "no AUTH configured"
    return Finding("relay", "PASS", f"{where}: EHLO answered, {auth}; {' '.join(ext)}")


def _imap_login(a: ImapAccount, secret: str) -> list[str]:
    """Log in as the folder workers do (daemon.imap); the configured folders missing."""
    from imapclient import IMAPClient

    context = ssl.create_default_context()
    timeout = min(a.timeout, NET_TIMEOUT)
    client = IMAPClient(
        a.host, port=a.port, ssl=a.security == "tls", ssl_context=context, timeout=timeout
    )
    try:
        if a.security == "starttls":
            client.starttls(context)
        if a.auth == "xoauth2":
            client.oauth2_login(a.username, secret)
        else:
            client.login(a.username, secret)
        return [f for f in a.folders if not client.folder_exists(f)]
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def check_imap(a: ImapAccount) -> Finding:
    """Log in; a refused login (auth) is told apart from an unreachable server."""
    from imapclient.exceptions import IMAPClientError, LoginError

    name, where = f"imap {a.name}", f"{a.username}@{a.host}:{a.port} ({a.security})"
    try:
        secret = a.secret()
    except (KeyError, OSError, subprocess.SubprocessError) as exc:
        what = f"${a.password_env} is not set" if isinstance(exc, KeyError) else describe_error(exc)
        return _fail(name, f"cannot read the secret: {what}", "fix password_env/_file or token")
    try:
        missing = _imap_login(a, secret)
    except LoginError as exc:
        text = (
            describe_error(exc).replace(secret, "********")
            if len(secret) > 3
            else describe_error(exc)
        )
        fix = "check username and the password or token"
        return _fail(name, f"{where}: login refused (authentication): {text}", fix)
    except ssl.SSLError as exc:
        return _fail(name, f"{where}: TLS failed: {describe_error(exc)}", TLS_FIX)
    except (IMAPClientError, OSError) as exc:
        return _fail(name, f"{where}: connection failed: {describe_error(exc)}", REACH_FIX)
    if missing:
        nothing = f"{where}: logged in, but no folder {', '.join(missing)}"
        return _fail(name, nothing, "fix folders in this [[imap]] account")
    return Finding(name, "PASS", f"{where}: logged in; folders {', '.join(a.folders)} exist")


def check_templates(cfg: Config) -> Finding:
    from daemon.outmail import Templates

    own = cfg.desk.outbound.templates
    try:
        loaded = Templates.load(own or None)
    except (ValueError, OSError) as exc:  # TemplateError is a ValueError
        return _fail(
            "templates", clean(str(exc), 200), "fix the file, or unset [outbound] templates"
        )
    where = f"shipped, overridden from {own}" if own else "shipped"
    return Finding("templates", "PASS", f"{len(loaded.by_key)} templates load ({where})")


Task = tuple[str, Callable[[], list[Finding]]]


def check_roles(cfg: Config) -> list[Finding]:
    """The ``[roles]`` this instance runs; the rest must run on another instance."""
    on, off = ", ".join(cfg.roles.enabled), ", ".join(cfg.roles.disabled)
    if not off:
        return [Finding("roles", "PASS", "every role runs here (no [roles] split)")]
    split = f"runs {on}; not here: {off} (another instance on this database must run them)"
    return [Finding("roles", "PASS", split)]


def _one(fn: Callable[..., Finding], *args: Any) -> list[Finding]:
    return [fn(*args)]


def doctor_tasks(cfg: Config) -> list[Task]:
    """Every check, one task each, in the order they are printed."""
    dirs = [("spool", cfg.storage.spool), ("attachments", cfg.storage.attachments)]
    if (db_file := cfg.sqlite_path()) is not None:
        dirs.append(("database dir", str(db_file.parent)))
    size = cfg.smtp.max_message_size
    tasks: list[Task] = [
        ("config", functools.partial(check_config, cfg)),
        ("database", functools.partial(check_database, cfg)),
    ]
    tasks += [(n, functools.partial(_one, check_dir, n, Path(p), size)) for n, p in dirs]
    roles = cfg.roles
    tasks.append(("roles", functools.partial(check_roles, cfg)))
    models = _models(cfg) if roles.transcription else []
    tasks += [("transcription", functools.partial(_one, check_model, k, v)) for k, v in models]
    if roles.transcription and not models:
        none = _warn(
            "transcription",
            "no [transcription] model: voicemails get no transcript",
            "unpack a Vosk model for your language; set [transcription] model to its directory",
        )
        tasks.append(("transcription", lambda: [none]))
    # What this instance does not run, another does: its relay and logins are its own checks.
    if roles.outbox:
        tasks.append(("relay", functools.partial(_one, check_relay, cfg)))
    accounts = cfg.imap if roles.imap else ()
    tasks += [(f"imap {a.name}", functools.partial(_one, check_imap, a)) for a in accounts]
    tasks.append(("templates", functools.partial(_one, check_templates, cfg)))
    return tasks


def run_checks(tasks: list[Task], deadline: float = DEADLINE) -> list[Finding]:
    """Run every task in its own thread; one still running at ``deadline`` FAILs."""
    results: dict[int, list[Finding]] = {}

    def run(i: int, name: str, fn: Callable[[], list[Finding]]) -> None:
        try:
            results[i] = fn()
        except Exception as exc:  # a check that breaks is a finding, not a traceback
            results[i] = [_fail(name, f"the check failed: {describe_error(exc)}", "report this")]

    # Daemon threads: one stuck in a C call (a DNS lookup) cannot hold up the exit.
    threads = [
        threading.Thread(target=run, args=(i, n, fn), daemon=True, name=f"doctor-{n}")
        for i, (n, fn) in enumerate(tasks)
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    hung = _fail("", f"no answer within {deadline:.0f} s", "find out what blocks (DNS? firewall?)")
    out: list[Finding] = []
    for i, (name, _) in enumerate(tasks):
        out += results.get(i) or [replace(hung, check=name)]
    return out


def doctor(cfg: Config, args: argparse.Namespace) -> int:
    """Every check with a verdict, a finding and a fix; exit 1 when any FAILs."""
    findings = run_checks(doctor_tasks(cfg))
    failed = any(f.verdict == "FAIL" for f in findings)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(f) for f in findings]}))
        return 1 if failed else 0
    for f in findings:
        print(f"{f.verdict}  {f.check:<14} {f.finding}")
        if f.fix and f.verdict != "PASS":
            print(f"{'':<20} fix: {f.fix}")
    tally = {v: sum(f.verdict == v for f in findings) for v in ("FAIL", "WARN", "PASS")}
    print(", ".join(f"{n} {v}" for v, n in tally.items()))
    return 1 if failed else 0
