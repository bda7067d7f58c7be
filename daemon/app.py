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
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from daemon import config as config_mod
from daemon import logging as logmod
from daemon import sdlisten
from daemon.config import Config
from daemon.errors import ConfigError
from daemon.imap import ImapIntake
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
    ) -> None:
        self.cfg, self.parts, self.notifier = cfg, parts, notifier
        self.listener = listener  # passed by systemd (buzon.socket), else [smtp] listen
        self.log = get_logger(component="daemon")
        self.stop = asyncio.Event()
        self.reload_asked = asyncio.Event()
        self.ingest = IngestProcess(cfg)
        self.writer = GroupCommitWriter(parts.spool)
        self.metrics: Metrics | None = None
        if cfg.metrics.listen:  # prometheus_client is imported only when asked for
            from daemon.metrics import Metrics

            self.metrics = Metrics(parts.db, parts.spool, cfg)
        self.handler = IntakeHandler(
            cfg.smtp,
            parts.spool,
            self.writer,
            on_reply=self.metrics.smtp_reply if self.metrics is not None else None,
        )
        self.server = SmtpServer(cfg.smtp, self.handler)
        # The ingest process is replaced on reload: notify whichever is current.
        parts.spool.on_new(self._wake_ingest)
        self.imap = ImapIntake(
            cfg.imap, spool=parts.spool, db=parts.db, max_size=cfg.smtp.max_message_size
        )
        self.voicemail_dirs = VoicemailFolders(
            cfg.voicemail_dir, parts.spool, hostname=cfg.smtp.hostname
        )
        self.sender = OutboxSender(parts.db, cfg.desk.outbound)
        self.scheduler = Scheduler(parts.db, cfg.desk.sla, parts.outbound)
        self.metrics_server: MetricsServer | None = None
        self.background: list[asyncio.Task[None]] = []
        self.listening = ""
        self.healthy_reason = "starting"
        self._last_status = 0.0

    def _wake_ingest(self) -> None:
        self.ingest.notify()

    # -- health -----------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """Whether every part makes progress, and what is wrong when one does not."""
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
        if not self.listening:
            return False, "starting"
        return self.health()

    def status_line(self) -> str:
        stats = self.handler.stats
        pending = len(self.parts.spool.pending())
        return (
            f"accepting on {self.listening}; {stats.accepted} accepted, {stats.refused} refused; "
            f"spool {pending} pending"
        )

    # -- start, run, stop -------------------------------------------------------------

    async def start(self) -> bool:
        loop = asyncio.get_running_loop()
        # Ingest starts (and loads its parsers) before READY: the first message after
        # a restart, often the one a crash interrupted, is processed at once.
        if not await asyncio.to_thread(self.ingest.start):
            self.log.error(
                "daemon.failed",
                error=f"the ingest process did not start (exit code {self.ingest.exitcode})",
                fix="see the ingest.crashed line before this one",
            )
            await asyncio.to_thread(self.ingest.stop)
            return False
        self.writer.start(loop)
        try:
            host, port = await self.server.start(self.listener)
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
            await self.server.stop(0)
            await asyncio.to_thread(self.ingest.stop)
            self.writer.stop()
            return False
        self.listening = f"{host}:{port}"
        self.imap.start()
        self.voicemail_dirs.start()
        # Deadlines and mail run in this process: the scheduler's passes are short
        # database transactions in a thread, the sender is asyncio (aiosmtplib).
        self.background = [
            asyncio.create_task(self.sender.run(self.stop), name="outbox"),
            asyncio.create_task(
                self.scheduler.run(self.stop, on_mail=self.sender.wake), name="scheduler"
            ),
        ]
        self.log.info(
            "daemon.ready",
            smtp=self.listening,
            database=self.parts.db.backend,
            spool=self.cfg.storage.spool,
            config=self.cfg.source,
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
            if not self.ingest.alive() or any(t.done() for t in self.background):
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
        await self.server.stop(STOP_GRACE)
        await asyncio.to_thread(self.writer.stop)
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
        if "smtp" in sections:
            self.handler.cfg = self.server.cfg = cfg.smtp  # new sessions see it
        if "imap" in sections:
            await asyncio.to_thread(self.imap.stop)
            self.imap = ImapIntake(
                cfg.imap,
                spool=self.parts.spool,
                db=self.parts.db,
                max_size=cfg.smtp.max_message_size,
            )
            self.imap.start()
        if "voicemail_dir" in sections:
            await asyncio.to_thread(self.voicemail_dirs.stop)
            self.voicemail_dirs = VoicemailFolders(
                cfg.voicemail_dir, self.parts.spool, hostname=cfg.smtp.hostname
            )
            self.voicemail_dirs.start()
        if "desk" in sections:
            self.scheduler.cfg, self.scheduler.outbound = cfg.desk.sla, outbound
            self.sender.cfg = cfg.desk.outbound
            self.parts.outbound = outbound
        ingest_reads = {"pipeline", "triage", "matching", "routing", "transcription", "desk", "log"}
        if sections & ingest_reads:
            # The ingest process read its config at start: replace it. The spool holds
            # whatever arrives meanwhile, and the old process finishes its message first.
            await asyncio.to_thread(self.ingest.stop)
            self.ingest = IngestProcess(cfg)
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
    exit_code = 1
    with open_parts(cfg, recover=True) as parts:
        sup = Supervisor(cfg, parts, notifier, listener)
        with signal_handlers(loop, sup.stop, sup.reload_asked):
            if await sup.start():
                exit_code = await sup.run()
                await sup.shutdown()
        stats = sup.handler.stats
    get_logger(component="daemon").info(
        "daemon.stopped", exit_code=exit_code, accepted=stats.accepted
    )
    notifier.close()
    return exit_code
