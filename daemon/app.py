"""The supervisor: build every part from the config, run them, reload them, stop them in order.

Start order matters for durability: the database schema is current and the
spool recovered before the SMTP listener accepts anything or an IMAP worker
fetches; systemd hears ``READY=1`` only then. Stop order is the reverse: stop
fetching, stop accepting (``421``), let in-flight sessions finish, flush the
spool writer, let the ingest process finish its current message.

Once a second the supervisor checks its parts. It pings systemd's watchdog only
while they are healthy: the ingest process beats while none of its workers is
stuck on one message, and the scheduler and outbox tasks are running. A stuck
part therefore gets the service restarted instead of mail piling up unseen.
SIGHUP re-reads the configuration (``daemon.reload``): a valid one is applied
where it can be, an invalid one is refused and the old one keeps running.

``[roles]`` (``daemon.config_roles``) chooses the parts: without ``smtp`` nothing
listens, without ``pipeline`` and ``transcription`` there is no ingest process, and
so on. Readiness and the watchdog look only at the parts this instance runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import config as config_mod
from daemon import instance, sdlisten
from daemon import logging as logmod
from daemon.config import Config
from daemon.errors import ConfigError
from daemon.imap import instance_id
from daemon.imap_intake import ImapIntake
from daemon.ingest_process import IngestProcess
from daemon.logging import get_logger
from daemon.outbound import Outbound
from daemon.outbox import OutboxSender
from daemon.parts import Parts, open_parts
from daemon.reload import plan, restart_reason
from daemon.scheduler import Scheduler
from daemon.sdnotify import Notifier
from daemon.smtp import IntakeHandler, SmtpServer
from daemon.spool_writer import GroupCommitWriter
from daemon.voicedir import VoicemailFolders

if TYPE_CHECKING:
    from daemon.metrics import Metrics
    from daemon.metrics_http import MetricsServer

STOP_GRACE = 5.0  # SMTP sessions get this long to finish; the whole stop stays under 10 s
BEAT_LIMIT = 10.0  # the ingest process beats every 0.5 s; this much silence is a hang
STATUS_EVERY = 5.0


def _nothing() -> None:
    return None


@contextmanager
def signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, reload: asyncio.Event
) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``, SIGHUP sets ``reload``; the old handlers after."""
    handlers = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: reload.set}
    for sig, callback in handlers.items():
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)


class Supervisor:
    """The running daemon's parts, their health, reload and stop."""

    def __init__(
        self,
        cfg: Config,
        parts: Parts,
        notifier: Notifier,
        listener: socket.socket | None = None,
        *,
        name: str = "",
    ) -> None:
        self.cfg, self.parts, self.notifier = cfg, parts, notifier
        # This instance's name (``daemon.instance``): the holder of its IMAP folder leases.
        self.name = name or instance_id()
        # "" when not the instance's name: a per-process holder has nothing to take back.
        self._stable_name = name
        self.listener = listener  # passed by systemd (buzon.socket), else [smtp] listen
        self.log = get_logger(component="daemon")
        self.stop = asyncio.Event()
        self.reload_asked = asyncio.Event()
        roles = cfg.roles  # fixed for the life of the process: a change needs a restart
        self.ingest = IngestProcess(cfg, name=self._stable_name) if roles.ingest_process else None
        self.writer = GroupCommitWriter(parts.spool)
        self.metrics: Metrics | None = None
        if cfg.metrics.listen:  # prometheus_client is imported only when asked for
            from daemon.metrics import Metrics

            self.metrics = Metrics(parts.db, parts.spool, cfg)
        self.handler: IntakeHandler | None = None
        self.server: SmtpServer | None = None
        if roles.smtp:
            self.handler = IntakeHandler(
                cfg.smtp,
                parts.spool,
                self.writer,
                on_reply=self.metrics.smtp_reply if self.metrics is not None else None,
            )
            self.server = SmtpServer(cfg.smtp, self.handler)
        # The ingest process is replaced on reload: notify whichever is current.
        parts.spool.on_new(self._wake_ingest)
        self.imap = self._imap_intake(cfg)
        self.voicemail_dirs = self._voicemail_folders(cfg)
        self.sender = (
            OutboxSender(
                parts.db, cfg.desk.outbound, holder=self.name, take_back=bool(self._stable_name)
            )
            if roles.outbox
            else None
        )
        self.scheduler = (
            Scheduler(parts.db, cfg.desk.sla, parts.outbound) if roles.scheduler else None
        )
        self.metrics_server: MetricsServer | None = None
        self.background: list[asyncio.Task[None]] = []
        self.listening = ""
        self.started = False
        self.healthy_reason = "starting"
        self._last_status = 0.0

    def _wake_ingest(self) -> None:
        if self.ingest is not None:
            self.ingest.notify()

    def _imap_intake(self, cfg: Config) -> ImapIntake:
        accounts = cfg.imap if cfg.roles.imap else ()
        return ImapIntake(
            accounts,
            spool=self.parts.spool,
            db=self.parts.db,
            max_size=cfg.smtp.max_message_size,
            holder=self.name,
        )

    def _voicemail_folders(self, cfg: Config) -> VoicemailFolders:
        # The folders feed this instance's spool: watched where the pipeline runs.
        dirs = cfg.voicemail_dir if cfg.roles.pipeline else ()
        return VoicemailFolders(dirs, self.parts.spool, hostname=cfg.smtp.hostname)

    # -- health -----------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """Whether every part this instance runs makes progress, and what is wrong if not."""
        if self.ingest is not None:
            if not self.ingest.alive():
                return False, f"the ingest process died (exit code {self.ingest.exitcode})"
            age = self.ingest.beat_age()
            if age > BEAT_LIMIT:
                return False, f"the ingest process made no progress for {age:.0f} s (stuck or hung)"
        for task in self.background:
            if task.done():
                return False, f"the {task.get_name()} task ended"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        if self.stop.is_set():
            return False, "stopping"
        if not self.started:
            return False, "starting"
        return self.health()

    def status_line(self) -> str:
        said: list[str] = []
        if self.handler is not None:
            stats = self.handler.stats
            said.append(
                f"accepting on {self.listening}; {stats.accepted} accepted, {stats.refused} refused"
            )
        if self.cfg.roles.pipeline:
            said.append(f"spool {len(self.parts.spool.pending())} pending")
        if self.cfg.roles.disabled:
            said.append(f"roles {', '.join(self.cfg.roles.enabled)}")
        return "; ".join(said)

    # -- start, run, stop -------------------------------------------------------------

    async def start(self) -> bool:
        loop = asyncio.get_running_loop()
        roles = self.cfg.roles
        self.log.info(
            "daemon.roles",
            roles=list(roles.enabled),
            off=list(roles.disabled),
        )
        pending = len(self.parts.spool.pending())
        if not roles.pipeline and pending:
            self.log.warning(
                "spool.unattended",
                pending=pending,
                spool=self.cfg.storage.spool,
                fix="[roles] pipeline = false here: run this instance with pipeline = true "
                "until the spool is empty, or no instance will process these messages",
            )
        # Ingest starts (and loads its parsers) before READY: the first message after
        # a restart, often the one a crash interrupted, is processed at once.
        if self.ingest is not None and not await asyncio.to_thread(self.ingest.start):
            await asyncio.to_thread(self.ingest.stop)  # reaped first: its exit code is known
            self.log.error(
                "daemon.failed",
                error=f"the ingest process did not start (exit code {self.ingest.exitcode})",
                fix="see the ingest.crashed line before this one",
            )
            return False
        self.writer.start(loop)
        try:
            if self.server is not None:
                host, port = await self.server.start(self.listener)
                self.listening = f"{host}:{port}"
            if self.metrics is not None:
                from daemon.metrics_http import MetricsServer

                self.metrics_server = MetricsServer(
                    self.cfg.metrics.listen,
                    self.metrics,
                    live=self.health,
                    ready=self.readiness,
                )
                self.metrics_server.start()
        except OSError as exc:
            self.log.error(
                "daemon.failed",
                error=f"cannot listen: {exc}",
                fix="choose a free port in [smtp] listen or [metrics] listen, "
                "or stop the other process",
            )
            if self.server is not None:
                await self.server.stop(0)
            if self.ingest is not None:
                await asyncio.to_thread(self.ingest.stop)
            self.writer.stop()
            return False
        self.imap.start()
        self.voicemail_dirs.start()
        # Deadlines and mail run in this process: the scheduler's passes are short
        # database transactions in a thread, the sender is asyncio (aiosmtplib).
        if self.sender is not None:
            self.background.append(asyncio.create_task(self.sender.run(self.stop), name="outbox"))
        if self.scheduler is not None:
            # Without the outbox role here, another instance's sender polls for the mail.
            on_mail = self.sender.wake if self.sender is not None else _nothing
            self.background.append(
                asyncio.create_task(
                    self.scheduler.run(self.stop, on_mail=on_mail), name="scheduler"
                )
            )
        self.started = True
        # What is alive now (config, templates, calendars, SQLAlchemy's metadata, the
        # logger) lives as long as the process: frozen, full collections stop walking it
        # again and again; a scheduler pass over 10,000 due tickets spent ~15 % of its
        # CPU there (docs/BENCHMARKS.md).
        gc.collect()
        gc.freeze()
        self.log.info(
            "daemon.ready",
            smtp=self.listening or None,
            database=self.parts.db.backend,
            spool=self.cfg.storage.spool,
            config=self.cfg.source,
            roles=list(roles.enabled),
            imap_folders=len(self.imap.workers),
            voicemail_dirs=len(self.voicemail_dirs.watchers),
            metrics=self.cfg.metrics.listen or None,
            watchdog_s=self.notifier.watchdog_interval,
        )
        self.notifier.ready(self.status_line())
        return True

    async def run(self) -> int:
        """Tick once a second until asked to stop; 1 when a part died."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=1.0)
            if self.stop.is_set():
                break
            if self.reload_asked.is_set():
                self.reload_asked.clear()
                await self.reload()
            ok, why = self.health()
            if ok:
                self.notifier.watchdog()
            elif why != self.healthy_reason:
                self.log.error("daemon.unhealthy", error=why, fix="see the lines before this one")
            self.healthy_reason = why
            ingest_died = self.ingest is not None and not self.ingest.alive()
            if ingest_died or any(t.done() for t in self.background):
                self.log.error(
                    "daemon.failed",
                    error=f"{why}; stopping",
                    fix="see the log lines before this one; the spool keeps every message",
                )
                return 1
            if time.monotonic() - self._last_status >= STATUS_EVERY:
                self._last_status = time.monotonic()
                self.notifier.status(self.status_line())
        return 0

    async def shutdown(self) -> None:
        self.log.info("daemon.stopping")
        self.notifier.stopping()
        self.stop.set()
        await asyncio.gather(*self.background, return_exceptions=True)
        await asyncio.to_thread(self.imap.stop)
        await asyncio.to_thread(self.voicemail_dirs.stop)
        if self.server is not None:
            await self.server.stop(STOP_GRACE)
        await asyncio.to_thread(self.writer.stop)
        if self.ingest is not None:
            await asyncio.to_thread(self.ingest.stop)
        if self.metrics_server is not None:
            self.metrics_server.stop()

    # -- reload -----------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the config file; apply what can change live, say what needs a restart."""
        self.notifier.reloading()
        try:
            if self.cfg.source == "<embedded default>":
                raise ConfigError("the daemon runs on the embedded default: no file to re-read")
            new = await asyncio.to_thread(config_mod.load, self.cfg.source)
            outbound = Outbound(new.desk.outbound)  # templates are checked before anything moves
        except ConfigError as exc:
            self.log.error(
                "daemon.reload_failed",
                error=str(exc),
                fix="fix the file and reload again; the running configuration is unchanged",
            )
            self.notifier.ready(self.status_line())
            return
        p = plan(self.cfg, new)
        # What cannot change live keeps its running value, so state never splits.
        effective = replace(
            new,
            storage=self.cfg.storage,
            metrics=self.cfg.metrics,
            roles=self.cfg.roles,
            smtp=replace(new.smtp, listen=self.cfg.smtp.listen, hostname=self.cfg.smtp.hostname),
        )
        await self._apply(effective, outbound, p.live)
        self.cfg = effective
        self.log.info(
            "daemon.reloaded",
            config=new.source,
            applied=list(p.live),
            needs_restart=[f"{name}: {restart_reason(name)}" for name in p.restart],
        )
        self.notifier.ready(self.status_line())

    async def _apply(self, cfg: Config, outbound: Outbound, live: tuple[str, ...]) -> None:
        sections = {name.split(".", 1)[0] for name in live}
        if "log" in sections:
            logmod.configure(cfg.log.level, cfg.log.format, components=dict(cfg.log.components))
        if "smtp" in sections and self.handler is not None and self.server is not None:
            self.handler.cfg = self.server.cfg = cfg.smtp  # new sessions see it
        if "imap" in sections:
            await asyncio.to_thread(self.imap.stop)
            self.imap = self._imap_intake(cfg)
            self.imap.start()
        if "voicemail_dir" in sections:
            await asyncio.to_thread(self.voicemail_dirs.stop)
            self.voicemail_dirs = self._voicemail_folders(cfg)
            self.voicemail_dirs.start()
        if "desk" in sections:
            if self.scheduler is not None:
                self.scheduler.cfg, self.scheduler.outbound = cfg.desk.sla, outbound
            if self.sender is not None:
                self.sender.cfg = cfg.desk.outbound
            self.parts.outbound = outbound
        ingest_reads = {"pipeline", "triage", "matching", "routing", "transcription", "desk", "log"}
        if self.ingest is not None and sections & ingest_reads:
            # The ingest process read its config at start: replace it. The spool holds
            # whatever arrives meanwhile, and the old process finishes its message first.
            await asyncio.to_thread(self.ingest.stop)
            self.ingest = IngestProcess(cfg, name=self._stable_name)
            if not await asyncio.to_thread(self.ingest.start):
                self.log.error(
                    "daemon.failed",
                    error="the ingest process did not start with the new configuration",
                    fix="see the ingest.crashed line; fix the file and restart",
                )


async def serve(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 when a part died."""
    loop = asyncio.get_running_loop()
    notifier = Notifier.from_env()
    try:  # before any child process starts: none may inherit the listener
        listener = sdlisten.smtp_socket(sdlisten.take())
    except sdlisten.ListenError as exc:
        get_logger(component="daemon").error(
            "daemon.failed", error=str(exc), fix="see systemd/buzon.socket for a working unit"
        )
        return 1
    if listener is not None and not cfg.roles.smtp:
        # Connections would wait in the kernel's backlog for a listener that never
        # serves them: better a failed unit an admin sees.
        listener.close()
        get_logger(component="daemon").error(
            "daemon.failed",
            error="systemd passed an SMTP socket, but [roles] smtp = false on this instance",
            fix="systemctl disable --now buzon.socket here, or set [roles] smtp = true",
        )
        return 1
    exit_code = 1
    with contextlib.ExitStack() as held:
        try:
            name = held.enter_context(instance.hold(Path(cfg.storage.spool)))
        except instance.InstanceBusyError as exc:
            if listener is not None:
                listener.close()
            get_logger(component="daemon").error(
                "daemon.failed", error=str(exc), fix="one buzon run per spool (docs/SCALING.md)"
            )
            return 1
        parts = held.enter_context(open_parts(cfg, recover=True))
        sup = Supervisor(cfg, parts, notifier, listener, name=name)
        with signal_handlers(loop, sup.stop, sup.reload_asked):
            if await sup.start():
                exit_code = await sup.run()
                await sup.shutdown()
        accepted = sup.handler.stats.accepted if sup.handler is not None else 0
    get_logger(component="daemon").info("daemon.stopped", exit_code=exit_code, accepted=accepted)
    notifier.close()
    return exit_code
