"""Run a real, private Dovecot IMAP server on loopback for the IMAP tests.

Each instance lives in its own short temporary directory (config, passwd file,
sockets, state, log and a maildir per user), listens for plain IMAP on
127.0.0.1 on a free port and nothing else (no IMAPS, LMTP, POP3 or doveadm
network listener).  The master runs in the foreground (``dovecot -F``) in its
own session, so ``pause()``/``kill()`` can signal the whole process group:
master, log/auth helpers and every ``imap-login``/``imap`` child.

Written for Dovecot 2.3 (Debian 12 ships 2.3.19).  Running as root works with
two twists, both forced by Dovecot itself: login processes refuse to run as
root (they run as ``dovenull``) and ``imap`` refuses mail access as uid 0 (mail
is owned by ``nobody``).  That is also why the instance directory is a
world-traversable directory under the system temp dir and not pytest's
``tmp_path`` (``/tmp/pytest-of-root`` is 0700); the log is copied into
``tmp_path`` when the instance is cleaned up.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

HOST = "127.0.0.1"
DEFAULT_USERS: Mapping[str, str] = {"support": "secret"}


def free_port() -> int:
    # Same as support.daemon.free_port; not imported so that `mypy --strict` on this
    # file does not also check support/daemon.py.
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class DovecotError(RuntimeError):
    """Dovecot could not be started or a doveadm command failed."""


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` master binary, also found in sbin dirs not on PATH."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def doveadm_binary() -> str:
    found = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/bin:/usr/local/bin")
    if found is None:
        raise DovecotError("doveadm not found (Debian package dovecot-core)")
    return found


def dovecot_version(binary: str | None = None) -> tuple[int, ...]:
    """Version of the installed Dovecot, e.g. ``(2, 3, 19, 1)``."""
    binary = binary or dovecot_binary()
    if binary is None:
        raise DovecotError("dovecot is not installed")
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.match(r"(\d+(?:\.\d+)*)", out.strip())
    if match is None:
        raise DovecotError(f"cannot parse `dovecot --version` output: {out!r}")
    return tuple(int(p) for p in match.group(1).split("."))


def require_dovecot() -> str:
    """The dovecot binary; skip the test outside CI if it is missing, fail in CI."""
    binary = dovecot_binary()
    if binary is None:
        message = "dovecot is not installed (Debian package dovecot-imapd, see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; it is required in CI")
        pytest.skip(message)
    return binary


def _accounts() -> tuple[str, str, str, str]:
    """(internal user, login user, mail user, mail group) for this process's privileges."""
    if os.geteuid() != 0:
        # Unprivileged: Dovecot cannot switch users, so everything runs as us.
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return me, me, me, group
    # Root: imap-login must not run as root ("This process must not be run as
    # root") and imap refuses "Mail access not allowed for root".
    try:
        login = pwd.getpwnam("dovenull").pw_name
    except KeyError:
        login = "nobody"
    nobody = pwd.getpwnam("nobody")
    return "root", login, nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name


def _config(root: Path, port: int, extra: str) -> str:
    internal, login, mail_user, mail_group = _accounts()
    # Unprivileged, Dovecot cannot chroot its login and anvil processes.
    chroot = "" if os.geteuid() == 0 else "\n  chroot ="
    return f"""\
# Written by tests/support/dovecot.py: a private IMAP server for one test.
protocols = imap
listen = {HOST}
base_dir = {root / "run"}
state_dir = {root / "state"}
instance_name = buzon-test-{port}
log_path = {root / "dovecot.log"}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# The worker's own back-off is under test (IMAP-11), not Dovecot's tarpit:
# no 2 s delay per failed login and no per-IP penalty growing to 15 s.
auth_failure_delay = 0
login_greeting = Buzon test Dovecot ready.
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(os.getegid()).gr_name}
default_login_user = {login}
first_valid_uid = {pwd.getpwnam(mail_user).pw_uid}
first_valid_gid = {grp.getgrnam(mail_group).gr_gid}
mail_uid = {mail_user}
mail_gid = {mail_group}
mail_location = maildir:{root / "mail"}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root / "passwd"}
}}
service imap-login {{{chroot}
  inet_listener imap {{
    address = {HOST}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{{chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  # Fault tests leave half-dead sessions around; the default is 10 per user+IP.
  mail_max_userip_connections = 200
}}
# IDLE wakes on inotify, and falls back to this interval (default 30 s) where
# notifications do not arrive, as in some sandboxes; tests must not wait 30 s.
mailbox_idle_check_interval = 1 secs
{extra}
"""


class Dovecot:
    """One private Dovecot instance; see the module docstring.

    ``users`` maps user name to (plain) password.  ``extra`` is appended to
    the generated ``dovecot.conf`` (e.g. ``"mail_debug = yes"``).
    """

    host: str = HOST

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        extra: str = "",
        logs_to: Path | None = None,
    ) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError("dovecot is not installed (Debian package dovecot-imapd)")
        self.binary = binary
        self.version = dovecot_version(binary)
        if self.version[:2] != (2, 3):
            # 2.4 renamed most settings (mail_driver/mail_path, auth_allow_cleartext, ...).
            raise DovecotError(
                f"tests/support/dovecot.py writes a Dovecot 2.3 config; found {self.version}"
            )
        self.users: dict[str, str] = dict(users if users is not None else DEFAULT_USERS)
        for name, password in self.users.items():
            if not name or any(c in name + password for c in ":\r\n\0"):
                raise ValueError(f"user {name!r}: no ':', CR, LF or NUL in names or passwords")
        self.extra = extra
        self.logs_to = logs_to
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._group_alive = False
        # Short path: unix sockets under base_dir must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="buzon-dovecot-"))
        self.root.chmod(0o755)
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self._stderr_path = self.root / "dovecot.stderr"
        self._write_files()

    # -- files -----------------------------------------------------------------

    def _write_files(self) -> None:
        _, _, mail_user, mail_group = _accounts()
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, pwd.getpwnam(mail_user).pw_uid, grp.getgrnam(mail_group).gr_gid)
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()))
        passwd.chmod(0o600)

    def log_text(self) -> str:
        """Dovecot's log so far (and anything the master wrote to stderr)."""
        parts = [p.read_text(errors="replace") for p in (self._stderr_path, self.log_path)]
        return "".join(p for p in parts if p)

    # -- process control -------------------------------------------------------

    def start(self, timeout: float = 20.0) -> Dovecot:
        """Start the master and wait for an IMAP greeting; a fresh port on first start.

        On a restart the port stays the same, so clients and proxies keep working.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise DovecotError("already running")
        fresh_port = self.port == 0
        for _attempt in range(3 if fresh_port else 1):
            if fresh_port:
                self.port = free_port()
            self.config_path.write_text(_config(self.root, self.port, self.extra))
            with self._stderr_path.open("ab") as err:
                self.proc = subprocess.Popen(
                    [self.binary, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                )
            self._group_alive = True
            self.paused = False
            if self._wait_for_greeting(timeout):
                return self
            self._reap(signal.SIGKILL)
            if "Address already in use" not in self.log_text():
                break  # not a lost race for the free port: report it
        raise DovecotError(
            f"Dovecot did not come up on {self.host}:{self.port}:\n{self.log_text()[-4000:]}"
        )

    def _wait_for_greeting(self, timeout: float) -> bool:
        """True once the port answers ``* OK``; False if the master exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(4096).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _signal_group(self, sig: signal.Signals) -> None:
        # Only while the group is ours: once reaped, its id may belong to someone else.
        if self.proc is None or not self._group_alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _reap(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        """Send ``sig`` to the master, wait for it, then SIGKILL any straggler in its group."""
        if self.proc is None or not self._group_alive:
            return
        if self.proc.poll() is None:
            if sig == signal.SIGKILL:
                self._signal_group(sig)  # all at once, like a machine crash
            else:
                self._signal_group(signal.SIGCONT)  # a stopped master cannot handle SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout)
        self._signal_group(signal.SIGKILL)  # children outliving the master
        self._group_alive = False
        self.paused = False

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM to the master; it closes every session)."""
        self._reap(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash: SIGKILL the master and all its children at once; mail stays on disk."""
        self._reap(signal.SIGKILL)

    def restart(self, timeout: float = 20.0) -> Dovecot:
        """Stop cleanly and start again on the same port with the same mail."""
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP the whole process group: connects still complete, nothing answers."""
        self._signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the process group; queued connections are then served."""
        self._signal_group(signal.SIGCONT)
        self.paused = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """SIGKILL the process group, keep the log in ``logs_to`` (if given), remove the rest.

        (Not ``stop()``: a clean Dovecot shutdown takes about a second.)
        """
        try:
            self.kill()
        finally:
            if self.logs_to is not None:
                self.logs_to.mkdir(parents=True, exist_ok=True)
                for path in (self.log_path, self._stderr_path, self.config_path):
                    if path.exists():
                        shutil.copy(path, self.logs_to / path.name)
            shutil.rmtree(self.root, ignore_errors=True)

    # -- IMAP and doveadm helpers ------------------------------------------------

    def client(self, user: str = "support", timeout: float = 10.0) -> IMAPClient:
        """A logged-in IMAPClient talking straight to this Dovecot (caller closes it)."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        try:
            client.login(user, self.users[user])
        except BaseException:
            client.shutdown()
            raise
        return client

    @contextlib.contextmanager
    def session(self, user: str = "support", timeout: float = 10.0) -> Iterator[IMAPClient]:
        client = self.client(user, timeout)
        with client:  # logs out (or shuts down) on exit
            yield client

    def create_folder(self, user: str, folder: str) -> None:
        with self.session(user) as c:
            c.create_folder(folder)

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str | bytes] = (),
        msg_time: datetime | None = None,
    ) -> int:
        """APPEND ``raw`` and return its UID (from UIDPLUS).

        Dovecot gives messages back with CRLF line ends; pass CRLF messages when
        the test compares bytes.
        """
        with self.session(user) as c:
            response: bytes = c.append(folder, raw, flags=tuple(flags), msg_time=msg_time)
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", response)
        if match is None:
            raise DovecotError(f"no APPENDUID in {response!r}")
        return int(match.group(1))

    def uids(self, user: str, folder: str) -> list[int]:
        """Every UID in the folder, ascending."""
        with self.session(user) as c:
            c.select_folder(folder, readonly=True)
            return sorted(int(u) for u in c.search("ALL"))

    def fetch(self, user: str, folder: str, uid: int) -> bytes:
        """The raw message (``BODY.PEEK[]``, so ``\\Seen`` is not set)."""
        with self.session(user) as c:
            c.select_folder(folder, readonly=True)
            data: dict[int, dict[bytes, Any]] = c.fetch([uid], [b"BODY.PEEK[]"])
        if uid not in data:
            raise KeyError(f"no UID {uid} in {user}/{folder}")
        body: bytes = data[uid][b"BODY[]"]
        return body

    def flags(self, user: str, folder: str, uid: int) -> frozenset[str]:
        """The message's flags, e.g. ``{"\\\\Seen"}`` (``\\Recent`` left out)."""
        with self.session(user) as c:
            c.select_folder(folder, readonly=True)
            data: dict[int, tuple[bytes, ...]] = c.get_flags([uid])
        if uid not in data:
            raise KeyError(f"no UID {uid} in {user}/{folder}")
        return frozenset(f.decode() for f in data[uid] if f != b"\\Recent")

    def uidvalidity(self, user: str, folder: str) -> int:
        with self.session(user) as c:
            status: dict[bytes, int] = c.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <this config> ARGS`` (works on the mail store directly)."""
        result = subprocess.run(
            [doveadm_binary(), "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def reset_uidvalidity(self, user: str, folder: str, *, renumber: bool = False) -> int:
        """Give the folder a new, higher UIDVALIDITY; its messages stay.  Returns the new value.

        Uses ``doveadm mailbox update --uid-validity``, which keeps every
        message under its old UID number.  With ``renumber=True`` the messages
        are also fetched, expunged and re-appended (same bytes, flags and
        internal dates), so they come back under new, higher UIDs.  Sessions
        that have the folder selected are dropped by Dovecot when they next sync
        it (a NOOP gets EOF; an IDLE may stay quiet a while).  Works on INBOX.
        """
        saved: list[tuple[bytes, tuple[bytes, ...], datetime]] = []
        if renumber:
            with self.session(user) as c:
                c.select_folder(folder)
                uids = c.search("ALL")
                if uids:
                    data = c.fetch(uids, [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
                    for uid in sorted(data):
                        item = data[uid]
                        kept = tuple(f for f in item[b"FLAGS"] if f != b"\\Recent")
                        saved.append((item[b"BODY[]"], kept, item[b"INTERNALDATE"]))
                    c.delete_messages(uids)
                    c.expunge()
        new = self.uidvalidity(user, folder) + 1
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(new), folder)
        if saved:
            with self.session(user) as c:
                for raw, flags, when in saved:
                    c.append(folder, raw, flags=flags, msg_time=when)
        return new


@contextlib.contextmanager
def running_dovecot(
    tmp_path: Path, users: Mapping[str, str] | None = None, *, extra: str = ""
) -> Iterator[Dovecot]:
    """A started Dovecot, torn down (process group killed) however the block ends.

    Its log, stderr and config are copied to ``tmp_path / "dovecot"`` afterwards.
    """
    server = Dovecot(users, extra=extra, logs_to=tmp_path / "dovecot")
    try:
        server.start()
        yield server
    finally:
        server.close()
