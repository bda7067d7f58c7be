"""Check a read configuration's values: each error names the key and says how to fix it.

``daemon.config`` reads and resolves the file into frozen objects, then calls
``validate``; the checks live here so that reading and judging stay separate, and so
``doctor`` can share what a check needs (what counts as loopback, a systemd credential).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.config_roles import validate_roles
from daemon.errors import ConfigError

if TYPE_CHECKING:
    from daemon.config import (
        Config,
        ImapAccount,
        MatchingConfig,
        SmtpConfig,
        TranscriptionConfig,
        VoicemailDir,
    )

_MiB = 1024 * 1024
LEVELS = ("debug", "info", "warning", "error")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
CREDENTIALS = "$CREDENTIALS_DIRECTORY"


def unresolved_credential(path: str) -> bool:
    """Whether ``path`` names a systemd credential outside the service (checked when read)."""
    return CREDENTIALS in path


def mask_url(url: str) -> str:
    """A database URL with its password masked, for errors and ``buzon config``."""
    # postgresql://user:secret@host/db -> postgresql://user:********@host/db
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        cred, _, rest = tail.rpartition("@")
        if ":" in cred:
            cred = cred.split(":", 1)[0] + ":********"
        return f"{head}://{cred}@{rest}"
    return url


def _check_writable_dir(where: str, path: str) -> None:
    """The directory exists and is writable, or can be created (its nearest ancestor is)."""
    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{where}: {probe} is not a directory; point it at a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{where}: {probe} is not writable by this user; fix its permissions "
            "or choose another directory"
        )


def validate(cfg: Config) -> None:
    """Every check of a read, resolved configuration; the first failing one raises."""
    _validate_smtp(cfg.smtp)
    _validate_rest(cfg)


def _validate_smtp(smtp: SmtpConfig) -> None:
    host, sep, port = smtp.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f'[smtp] listen = "{smtp.listen}": expected "host:port", e.g. "127.0.0.1:2525"'
        )
    if not smtp.domains and not smtp.addresses:
        raise ConfigError(
            "[smtp] domains and [smtp] addresses are both empty: Buzón would refuse every "
            'recipient; list the support domains, e.g. domains = ["example.com"]'
        )
    for addr in smtp.addresses:
        if addr.count("@") != 1:
            raise ConfigError(f"[smtp] addresses: {addr!r} is not an address like support@x.org")
    if smtp.max_message_size < 1024:
        raise ConfigError("[smtp] max_message_size: must be at least 1024 bytes")
    if smtp.max_recipients < 100:
        raise ConfigError("[smtp] max_recipients: RFC 5321 requires at least 100")
    if smtp.max_line_length < 1000:
        raise ConfigError("[smtp] max_line_length: RFC 5321 requires at least 1000 octets")


def _validate_imap(accounts: tuple[ImapAccount, ...]) -> None:
    seen: set[str] = set()
    for i, a in enumerate(accounts):
        where = f"[[imap]] #{i + 1}" + (f" ({a.name})" if a.name else "")
        if not a.name or not a.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f'{where} name: give each account a short name like "support"')
        if a.name in seen:
            raise ConfigError(f"{where} name: {a.name!r} is used twice; names must be unique")
        seen.add(a.name)
        if not a.host or not a.username:
            raise ConfigError(f"{where}: host and username are required")
        if a.security not in ("tls", "starttls", "none"):
            raise ConfigError(f'{where} security: use "tls", "starttls" or "none"')
        if a.security == "none" and a.host not in LOOPBACK and not a.host.startswith("127."):
            raise ConfigError(
                f'{where} security = "none" sends the password in clear text; it is only '
                f'allowed for a loopback host, not {a.host!r}: use "tls" or "starttls"'
            )
        if not 0 < a.port < 65536:
            raise ConfigError(f"{where} port: {a.port} is not a TCP port")
        _validate_imap_auth(where, a)
        if not (a.after in ("keep", "seen") or (a.after.startswith("move:") and a.after[5:])):
            raise ConfigError(f'{where} after: use "keep", "seen" or "move:<folder>"')
        if not a.folders:
            raise ConfigError(f'{where} folders: list at least one folder, e.g. ["INBOX"]')
        if a.batch_size < 1 or a.poll_interval <= 0 or a.timeout <= 0:
            raise ConfigError(f"{where}: batch_size, poll_interval and timeout must be positive")
        if a.lease < 3:
            raise ConfigError(
                f"{where} lease = {a.lease}: use at least 3 seconds (it is renewed every "
                "third of it); the default, 60, suits most desks"
            )


def _validate_imap_auth(where: str, a: ImapAccount) -> None:
    if a.auth == "password":
        if bool(a.password_file) == bool(a.password_env):
            raise ConfigError(
                f"{where}: set exactly one of password_file or password_env "
                "(never the password itself in this file)"
            )
        if (
            a.password_file
            and not unresolved_credential(a.password_file)
            and not Path(a.password_file).is_file()
        ):
            raise ConfigError(f"{where} password_file: {a.password_file} does not exist")
    elif a.auth == "xoauth2":
        if bool(a.token_file) == bool(a.token_command):
            raise ConfigError(f"{where}: xoauth2 needs exactly one of token_file or token_command")
    else:
        raise ConfigError(f'{where} auth: use "password" or "xoauth2"')


def _validate_transcription(t: TranscriptionConfig, dirs: tuple[VoicemailDir, ...]) -> None:
    if t.workers < 0:
        raise ConfigError("[transcription] workers: use 0 (one per core but one) or more")
    if t.time_limit <= 0 or t.max_audio_seconds <= 0 or t.max_audio_bytes <= 0:
        raise ConfigError(
            "[transcription] time_limit, max_audio_seconds and max_audio_bytes must be positive"
        )
    if t.memory_limit and t.memory_limit < 256 * _MiB:
        raise ConfigError(
            "[transcription] memory_limit: a Vosk model needs far more than "
            f"{t.memory_limit} bytes; use at least 268435456 (256 MiB), or 0 for no limit"
        )
    if not 0 <= t.confidence_threshold <= 1:
        raise ConfigError("[transcription] confidence_threshold: a number from 0 to 1")
    if t.max_attempts < 1 or t.retry_delay < 0:
        raise ConfigError("[transcription] max_attempts must be >= 1 and retry_delay >= 0")
    paths: set[str] = set()
    for i, d in enumerate(dirs):
        where = f"[[voicemail_dir]] #{i + 1}"
        if not d.path or not d.processed:
            raise ConfigError(f"{where}: path and processed are both required")
        if Path(d.path) == Path(d.processed):
            raise ConfigError(f"{where}: processed must be another directory than path")
        if d.path in paths:
            raise ConfigError(f"{where} path: {d.path} is watched twice")
        paths.add(d.path)
        if d.poll_interval <= 0 or d.settle < 0:
            raise ConfigError(f"{where}: poll_interval must be positive and settle >= 0")
        _check_writable_dir(f"{where} path", d.path)
        _check_writable_dir(f"{where} processed", d.processed)


def _validate_matching(m: MatchingConfig) -> None:
    for key in ("duplicate_similarity", "incident_similarity"):
        if not 0.0 < getattr(m, key) <= 1.0:
            raise ConfigError(f"[matching] {key}: use a fraction above 0 and at most 1, e.g. 0.85")
    for key in ("duplicate_candidates", "incident_candidates"):
        if getattr(m, key) < 1:
            raise ConfigError(f"[matching] {key}: must be at least 1")
    if m.incident_tickets < 2:
        raise ConfigError("[matching] incident_tickets: an incident needs at least 2 tickets")
    if m.duplicate_window_days <= 0 or m.incident_window_minutes <= 0:
        raise ConfigError("[matching] duplicate_window_days and incident_window_minutes: use > 0")


def _validate_rest(cfg: Config) -> None:
    _validate_imap(cfg.imap)
    _validate_transcription(cfg.transcription, cfg.voicemail_dir)
    if cfg.pipeline.parse_workers < 1:
        raise ConfigError("[pipeline] parse_workers: use 1 or more, or 0 for automatic")
    if cfg.pipeline.max_attempts < 1:
        raise ConfigError("[pipeline] max_attempts: must be at least 1")
    if not 0 <= cfg.pipeline.nice <= 19:
        raise ConfigError("[pipeline] nice: use 0 (same priority as intake) to 19 (lowest)")
    if cfg.pipeline.max_interruptions < 1:
        raise ConfigError("[pipeline] max_interruptions: must be at least 1")
    if cfg.pipeline.stuck_after <= cfg.pipeline.parse_timeout:
        raise ConfigError(
            "[pipeline] stuck_after: must be longer than parse_timeout "
            f"({cfg.pipeline.parse_timeout:g} s), or every slow parse looks stuck"
        )
    _validate_matching(cfg.matching)
    validate_roles(cfg.roles, imap_accounts=len(cfg.imap), voicemail_dirs=len(cfg.voicemail_dir))
    if cfg.metrics.listen:
        host, sep, port = cfg.metrics.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(
                f'[metrics] listen = "{cfg.metrics.listen}": expected "host:port", '
                'e.g. "127.0.0.1:9325" (keep it on loopback or behind a firewall)'
            )
    if cfg.log.level.lower() not in LEVELS:
        raise ConfigError('[log] level: use one of "debug", "info", "warning", "error"')
    if cfg.log.format not in {"auto", "json", "console"}:
        raise ConfigError('[log] format: use one of "auto", "json", "console"')
    url = cfg.storage.database
    if not (url.startswith("sqlite:///") or url.startswith("postgresql")):
        raise ConfigError(
            f"[storage] database = {mask_url(url)!r}: use a sqlite:///path or "
            "postgresql://user@host/db URL"
        )
    sqlite_path = cfg.sqlite_path()
    if sqlite_path is not None:
        _check_writable_dir("[storage] database", str(sqlite_path.parent))
    _check_writable_dir("[storage] spool", cfg.storage.spool)
    _check_writable_dir("[storage] attachments", cfg.storage.attachments)
