"""What a re-read configuration changes, and which of the changes apply without a restart.

``buzon run`` re-reads its file on SIGHUP (``systemctl reload buzon``). Most of the
configuration applies live: logging; SMTP limits, domains and addresses (new sessions);
IMAP accounts (their workers restart); everything the ingest process reads — triage
rules, matching, routing, transcription, SLA policies, calendars, agents, templates
(that process is restarted; the spool holds mail meanwhile); the scheduler's and the
sender's settings. Where the data lives, where the daemon listens, the metrics
address and the ``[roles]`` an instance runs need a restart: changing them under a
running daemon would split its state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from daemon.config import Config

# Section (or "section.key") -> why it cannot change while running.
NEEDS_RESTART = {
    "storage": "the database, spool and attachments stay where the daemon opened them",
    "smtp.listen": "the listener stays bound to its address",
    "smtp.hostname": "the SMTP greeting and Message-IDs keep their host name",
    "metrics": "the metrics endpoint stays bound to its address",
    "roles": "the parts this instance runs are chosen at start (daemon.roles)",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """The changed settings, split into those applied now and those needing a restart."""

    live: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def _changed(old: Config, new: Config) -> list[str]:
    """Dotted names of what differs: ``smtp.listen`` for one key, ``imap`` for a section."""
    out: list[str] = []
    for f in fields(Config):
        if f.name == "source":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if f.name in ("smtp", "log", "pipeline", "storage"):
            out += [
                f"{f.name}.{k.name}" for k in fields(a) if getattr(a, k.name) != getattr(b, k.name)
            ]
        else:
            out.append(f.name)
    return out


def plan(old: Config, new: Config) -> Plan:
    live: list[str] = []
    restart: list[str] = []
    for name in _changed(old, new):
        section = name.split(".", 1)[0]
        (restart if name in NEEDS_RESTART or section in NEEDS_RESTART else live).append(name)
    return Plan(tuple(live), tuple(restart))


def restart_reason(name: str) -> str:
    return NEEDS_RESTART.get(name) or NEEDS_RESTART.get(name.split(".", 1)[0], "")
