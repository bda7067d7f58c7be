"""The ``[roles]`` table: which parts of the daemon this instance runs, and which mixes work.

Part of reading the configuration in one place (``daemon.config`` parses the table like
its other one-level tables and calls ``validate_roles``); kept apart so that the rules
about splitting one desk over several instances live in one short module.

Every role defaults to on, so a single machine needs no ``[roles]`` at all. The spool is
a directory on this instance's disk and only this instance's pipeline drains it, so a
role that receives mail into it (``smtp``, ``imap`` with accounts, ``[[voicemail_dir]]``
folders) needs ``pipeline`` on the same instance; every later stage (transcription,
scheduler, outbox) works from rows in the shared database and can run anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from daemon.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RolesConfig:
    """``[roles]``: the parts ``buzon run`` starts on this instance; all on by default."""

    smtp: bool = True  # the SMTP listener (or the socket systemd passes)
    imap: bool = True  # the [[imap]] fetchers
    pipeline: bool = True  # parse, thread, classify, ticket: drains this instance's spool
    transcription: bool = True  # Vosk recognisers claiming waiting voicemails from the database
    scheduler: bool = True  # SLA passes: follow-ups, auto-close, at-risk and breach alarms
    outbox: bool = True  # sends queued mail to the [outbound] relay

    @property
    def enabled(self) -> tuple[str, ...]:
        """The names of the roles that are on, in the table's order."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name))

    @property
    def disabled(self) -> tuple[str, ...]:
        """The names of the roles that are off: another instance must run them."""
        return tuple(f.name for f in fields(self) if not getattr(self, f.name))

    @property
    def ingest_process(self) -> bool:
        """Whether the ingest process runs: it hosts the pipeline and the recognisers."""
        return self.pipeline or self.transcription


def validate_roles(roles: RolesConfig, *, imap_accounts: int, voicemail_dirs: int) -> None:
    """Refuse a mix that would do nothing, or accept mail that nothing here processes."""
    if not roles.enabled:
        names = ", ".join(f.name for f in fields(RolesConfig))
        raise ConfigError(
            f"[roles]: every role is false, so this instance would do nothing; "
            f"set at least one of {names} to true"
        )
    if roles.pipeline:
        return
    drained = (
        "this instance's spool ([storage] spool, a local directory), and only this "
        "instance's pipeline processes it"
    )
    if roles.smtp:
        raise ConfigError(
            f"[roles] smtp = true needs pipeline = true: accepted mail goes to {drained}; "
            "set pipeline = true, or smtp = false on an instance that does not take mail"
        )
    if roles.imap and imap_accounts:
        raise ConfigError(
            f"[roles] imap = true needs pipeline = true: fetched mail goes to {drained}; "
            "set pipeline = true, or imap = false (or move the [[imap]] tables to the "
            "instance that runs the pipeline)"
        )
    if voicemail_dirs:
        raise ConfigError(
            f"[[voicemail_dir]] needs [roles] pipeline = true: its recordings go to {drained}; "
            "set pipeline = true, or move the [[voicemail_dir]] tables to that instance"
        )
