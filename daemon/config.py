"""Read the TOML configuration once into frozen, typed objects, and validate it.

Everything else receives these objects (or plain values taken from them); no
module reads the file or the environment on its own. Errors name the key and
say how to fix it, and the CLI exits 2 on them.

Relative paths are resolved against the directory of the config file, or the
current directory when running on the embedded default.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from daemon.config_checks import CREDENTIALS, LEVELS, mask_url, validate
from daemon.config_desk import (
    DESK_SECTIONS,
    DeskConfig,
    coerce,
    desk_sections,
    redacted_desk,
    suggest,
)
from daemon.config_roles import RolesConfig
from daemon.errors import ConfigError

DEFAULT_DATA_DIR = "buzon-data"
MiB = 1024 * 1024
SAMPLE = "buzon.example.toml"
MODEL_FILE = "triage-model.npz"  # the learned triage model's default name, in the data directory


@dataclass(frozen=True, slots=True)
class StorageConfig:
    database: str = f"sqlite:///{DEFAULT_DATA_DIR}/buzon.db"
    spool: str = f"{DEFAULT_DATA_DIR}/spool"
    attachments: str = f"{DEFAULT_DATA_DIR}/attachments"


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    listen: str = "127.0.0.1:2525"
    hostname: str = ""
    domains: tuple[str, ...] = ("example.com",)
    addresses: tuple[str, ...] = ()
    max_message_size: int = 35 * MiB
    max_recipients: int = 100
    max_line_length: int = 1 * MiB
    timeout: float = 300.0

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    # 0 = automatic: 2 on PostgreSQL (a worker waiting for the server's answer leaves
    # the CPU to the other), 1 on SQLite (one writer at a time). Resolved in finalise().
    parse_workers: int = 0
    parse_timeout: float = 30.0
    max_attempts: int = 3
    max_interruptions: int = 10
    nice: int = 19
    poll_interval: float = 1.0
    # A worker on one message this long is stuck: the watchdog stops (systemd restarts us).
    stuck_after: float = 300.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"  # auto | json | console
    # Per component (smtp, imap, ingest, scheduler, outbox, ...): a level of its own.
    components: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint with /healthz and /readyz; "" = off."""

    listen: str = ""  # e.g. "127.0.0.1:9325"


@dataclass(frozen=True, slots=True)
class ImapAccount:
    """One ``[[imap]]`` mailbox to pull from."""

    name: str = ""
    host: str = ""
    port: int = 993
    security: str = "tls"  # tls | starttls | none (loopback only)
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    auth: str = "password"  # password | xoauth2
    token_file: str = ""
    token_command: str = ""
    folders: tuple[str, ...] = ("INBOX",)
    after: str = "keep"  # keep | seen | move:<folder>
    poll_interval: float = 60.0
    timeout: float = 60.0
    batch_size: int = 50
    # Seconds an instance holds a folder without renewing it (renewed every third of it);
    # with several instances, how long a dead one's folders wait before another fetches.
    lease: float = 60.0

    def secret(self, environ: dict[str, str] | None = None) -> str:
        """The password or access token, read now (files can be rotated under us)."""
        env = os.environ if environ is None else environ
        if self.auth == "xoauth2":
            if self.token_file:
                return Path(self.token_file).read_text().strip()
            out = subprocess.run(  # noqa: S602 — an admin-supplied command, by design
                self.token_command,
                shell=True,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return out.stdout.strip()
        if self.password_file:
            return Path(self.password_file).read_text().rstrip("\r\n")
        return env[self.password_env]


@dataclass(frozen=True, slots=True)
class TranscriptionConfig:
    """``[transcription]``: Vosk models and the recogniser pool. No model: transcription off."""

    model: str = ""  # a Vosk model directory; "" disables transcription (with a warning)
    models: tuple[tuple[str, str], ...] = ()  # (mailbox or recipient address, model directory)
    workers: int = 0  # 0: one per core but one, at least 1
    time_limit: float = 600.0  # seconds to decode and recognise one recording (900 s at RTF 0.66)
    max_audio_seconds: float = 900.0
    max_audio_bytes: int = 64 * MiB
    memory_limit: int = 4096 * MiB  # address space per recogniser process; 0: unlimited
    confidence_threshold: float = 0.6  # below: the transcript is flagged "needs listening"
    max_attempts: int = 3
    retry_delay: float = 30.0  # seconds before the first retry; doubles each time

    def pool_size(self, cores: int | None = None) -> int:
        if self.workers:
            return self.workers
        return max(1, (cores or os.cpu_count() or 2) - 1)

    def model_for(self, keys: tuple[str, ...]) -> str:
        """The model for the first of ``keys`` (mailbox, then recipients) that has one."""
        table = {k.lower(): v for k, v in self.models}
        for key in keys:
            if key and key.lower() in table:
                return table[key.lower()]
        return self.model


@dataclass(frozen=True, slots=True)
class TriageConfig:
    """``[triage]``: the admin's rules over the shipped ones, and an optional learned model."""

    rules: str = ""  # a TOML file layered over triage/rules/default.toml; "" = shipped only
    # A model from `buzon triage train`; "" = MODEL_FILE beside the spool, if it exists.
    model: str = ""

    def model_path(self, storage: StorageConfig) -> tuple[Path, bool]:
        """Where the learned model is, and whether the admin named it (it must exist then)."""
        if self.model:
            return Path(self.model), True
        return Path(storage.spool).parent / MODEL_FILE, False


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    """``[matching]``: which MTA verdicts to trust, and when tickets are the same matter."""

    # Authentication-Results authserv-ids of the receiving MTA; () = trust the topmost header.
    trusted_authserv_ids: tuple[str, ...] = ()
    duplicate_window_days: float = 14.0  # an open ticket this recent can absorb a repeat
    duplicate_similarity: float = 0.85  # 0..1 over subject and the customer's own words
    duplicate_candidates: int = 20  # the customer's most recent open tickets compared
    incident_tickets: int = 5  # N tickets from different customers ...
    incident_window_minutes: float = 30.0  # ... within M minutes ...
    incident_similarity: float = 0.6  # ... this similar form an incident
    incident_candidates: int = 500  # recent tickets compared, newest first


@dataclass(frozen=True, slots=True)
class VoicemailDir:
    """One ``[[voicemail_dir]]``: an Asterisk voicemail folder (msgNNNN.txt + audio) to watch."""

    path: str = ""
    processed: str = ""
    mailbox: str = ""
    poll_interval: float = 2.0
    settle: float = 2.0  # seconds a pair must stay unchanged before it counts as complete


@dataclass(frozen=True, slots=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    imap: tuple[ImapAccount, ...] = ()
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    voicemail_dir: tuple[VoicemailDir, ...] = ()
    triage: TriageConfig = field(default_factory=TriageConfig)
    routing: tuple[tuple[str, str], ...] = ()  # (recipient address, category)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    # [calendars], [sla], [agents], [outbound]: read by daemon.config_desk.
    desk: DeskConfig = field(default_factory=DeskConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)  # read by daemon.config_roles
    source: str = "<embedded default>"

    def sqlite_path(self) -> Path | None:
        """The database file when the database is a SQLite file, else None."""
        url = self.storage.database
        if url.startswith("sqlite:///") and ":memory:" not in url:
            return Path(url[len("sqlite:///") :])
        return None

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, with secrets masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("source", "imap", "voicemail_dir", "routing", "desk"):
                continue
            section = getattr(self, f.name)
            out[f.name] = {k.name: _mask(k.name, getattr(section, k.name)) for k in fields(section)}
        out["storage"]["database"] = mask_url(out["storage"]["database"])
        out["imap"] = [
            {k.name: _mask(k.name, getattr(acct, k.name)) for k in fields(acct)}
            for acct in self.imap
        ]
        out["transcription"]["models"] = dict(self.transcription.models)
        out["routing"] = dict(self.routing)
        out.update(redacted_desk(self.desk))
        out["voicemail_dir"] = [
            {k.name: getattr(d, k.name) for k in fields(d)} for d in self.voicemail_dir
        ]
        return out


SECTIONS: dict[str, type[Any]] = {
    "storage": StorageConfig,
    "smtp": SmtpConfig,
    "pipeline": PipelineConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "transcription": TranscriptionConfig,
    "triage": TriageConfig,
    "matching": MatchingConfig,
    "roles": RolesConfig,
}


def _mask(name: str, value: Any) -> Any:
    if name in ("password_file", "password_env", "token_file", "token_command"):
        return value  # where the secret comes from is not the secret
    if any(s in name for s in ("password", "secret", "token")) and value:
        return "********"
    return list(value) if isinstance(value, tuple) else value


def _models(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(
            "[transcription.models]: expected a table of mailbox or address = model directory, "
            'e.g. "6001" = "/var/lib/vosk/es" or "ventas@example.com" = "/var/lib/vosk/en"'
        )
    return tuple(value.items())


def _levels(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.lower() in LEVELS for k, v in value.items()
    ):
        raise ConfigError(
            '[log] components: expected component = level, e.g. { imap = "debug", '
            f'smtp = "warning" }} with levels {", ".join(LEVELS)}'
        )
    return tuple((k.strip(), v.lower()) for k, v in value.items())


def _routing(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and "@" in k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(
            "[routing]: expected recipient address = category, "
            'e.g. "billing@example.com" = "billing" (categories: see buzon triage explain)'
        )
    return tuple((k.lower().strip(), v) for k, v in value.items())


def _section(name: str, cls: type[Any], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table (a [{name}] header), got {data!r}")
    default = cls()
    known = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if cls is TranscriptionConfig and key == "models":
            values[key] = _models(value)
            continue
        if cls is LogConfig and key == "components":
            values[key] = _levels(value)
            continue
        if key not in known:
            raise ConfigError(
                f"[{name}] {key}: unknown key; {suggest(key, known)}"
                f"the keys of [{name}] are {', '.join(known)} (see {SAMPLE})"
            )
        values[key] = coerce(f"[{name}] {key}", value, getattr(default, key))
    return replace(default, **values)


def _resolve(base: Path, path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _secret(base: Path, path: str) -> str:
    """A secret file's path; ``$CREDENTIALS_DIRECTORY/x`` names a systemd credential
    (``LoadCredential=x:/etc/buzon/x``), left as written when the variable is unset so a
    command run outside the service still loads the config."""
    expanded = os.path.expandvars(path.replace("${CREDENTIALS_DIRECTORY}", CREDENTIALS))
    return expanded if CREDENTIALS in expanded else _resolve(base, expanded)


def _resolve_sqlite_url(base: Path, url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + _resolve(base, url[len(prefix) :])
    return url


def parse(text: str, *, base: Path, source: str) -> Config:
    """Validate TOML text into a Config; relative paths resolve against ``base``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    sections: dict[str, Any] = {"desk": desk_sections(data)}
    for name, value in data.items():
        if name in DESK_SECTIONS:
            continue
        if name == "imap":
            if not isinstance(value, list):
                raise ConfigError("[imap] must be written [[imap]] (one table per account)")
            sections["imap"] = tuple(_section("[imap]", ImapAccount, v) for v in value)
            continue
        if name == "routing":
            sections[name] = _routing(value)
            continue
        if name == "voicemail_dir":
            if not isinstance(value, list):
                raise ConfigError(
                    "[voicemail_dir] must be written [[voicemail_dir]] (one per folder)"
                )
            sections[name] = tuple(_section("[voicemail_dir]", VoicemailDir, v) for v in value)
            continue
        if name not in SECTIONS:
            raise ConfigError(
                f"[{name}]: unknown section; {suggest(name, [*SECTIONS, *DESK_SECTIONS])}"
                f"known sections are {', '.join(SECTIONS)}, [routing], [[imap]], "
                "[[voicemail_dir]], [calendars.NAME], [sla], [[sla.policies]], [agents], "
                "[outbound] "
                f"(see {SAMPLE})"
            )
        sections[name] = _section(name, SECTIONS[name], value)
    cfg = Config(**sections, source=source)
    return finalise(cfg, base)


def finalise(cfg: Config, base: Path) -> Config:
    """Resolve relative paths, fill derived defaults and validate."""
    storage = replace(
        cfg.storage,
        database=_resolve_sqlite_url(base, cfg.storage.database),
        spool=_resolve(base, cfg.storage.spool),
        attachments=_resolve(base, cfg.storage.attachments),
    )
    smtp = cfg.smtp
    smtp = replace(
        smtp,
        domains=tuple(d.lower().strip() for d in smtp.domains),
        addresses=tuple(a.lower().strip() for a in smtp.addresses),
        hostname=smtp.hostname or socket.gethostname(),
    )
    imap = tuple(
        replace(
            a,
            password_file=_secret(base, a.password_file) if a.password_file else "",
            token_file=_secret(base, a.token_file) if a.token_file else "",
        )
        for a in cfg.imap
    )
    t = cfg.transcription
    transcription = replace(
        t,
        model=_resolve(base, t.model) if t.model else "",
        models=tuple((k.lower(), _resolve(base, v)) for k, v in t.models),
    )
    triage = replace(
        cfg.triage,
        rules=_resolve(base, cfg.triage.rules) if cfg.triage.rules else "",
        model=_resolve(base, cfg.triage.model) if cfg.triage.model else "",
    )
    dirs = tuple(
        replace(
            d,
            path=_resolve(base, d.path) if d.path else "",
            processed=_resolve(base, d.processed) if d.processed else "",
        )
        for d in cfg.voicemail_dir
    )
    out = cfg.desk.outbound
    outbound = replace(
        out,
        password_file=_secret(base, out.password_file) if out.password_file else "",
        templates=_resolve(base, out.templates) if out.templates else "",
        from_address=out.from_address
        or (smtp.addresses[0] if smtp.addresses else f"buzon@{smtp.hostname}"),
    )
    pipeline = cfg.pipeline
    if pipeline.parse_workers == 0:
        sqlite = storage.database.startswith("sqlite")
        pipeline = replace(pipeline, parse_workers=1 if sqlite else 2)
    cfg = replace(
        cfg,
        pipeline=pipeline,
        desk=replace(cfg.desk, outbound=outbound),
        storage=storage,
        smtp=smtp,
        imap=imap,
        transcription=transcription,
        voicemail_dir=dirs,
        triage=triage,
    )
    validate(cfg)
    return cfg


def load(path: str | None, environ: dict[str, str] | None = None) -> Config:
    """Load ``path``, else ``$BUZON_CONFIG``, else the embedded default under ./buzon-data."""
    env = os.environ if environ is None else environ
    path = path or env.get("BUZON_CONFIG") or None
    if path is None:
        return finalise(Config(), Path.cwd())
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {p} does not exist; create it from {SAMPLE} or fix --config"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc}") from exc
    return parse(text, base=p.resolve().parent, source=str(p))
