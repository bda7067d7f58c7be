"""Listening sockets systemd hands a socket-activated service (sd_listen_fds(3)).

With ``buzon.socket`` systemd binds port 25 itself and starts the service with the
listening socket as file descriptor 3 (``LISTEN_FDS``, ``LISTEN_PID``,
``LISTEN_FDNAMES``), so the daemon never needs root or CAP_NET_BIND_SERVICE. The
variables are removed as they are read and the descriptors made non-inheritable:
no parser, recogniser or ``token_command`` may inherit a listener.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

FIRST_FD = 3  # SD_LISTEN_FDS_START
SMTP_NAME = "smtp"  # FileDescriptorName= in buzon.socket


class ListenError(ValueError):
    """A passed descriptor is not what the daemon can serve SMTP on."""


def take(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> dict[str, socket.socket]:
    """The sockets passed to this process, by name; {} when not socket-activated."""
    env = os.environ if environ is None else environ
    listen_pid = env.pop("LISTEN_PID", "")
    count = env.pop("LISTEN_FDS", "")
    names = env.pop("LISTEN_FDNAMES", "")
    if not listen_pid or listen_pid != str(os.getpid() if pid is None else pid):
        return {}  # meant for another process (our parent), or none at all
    if not count.isdigit() or int(count) < 1:
        return {}
    labels = names.split(":") if names else []
    out: dict[str, socket.socket] = {}
    for i in range(int(count)):
        fd = FIRST_FD + i
        os.set_inheritable(fd, False)
        label = labels[i] if i < len(labels) else f"fd{fd}"
        out[label] = socket.socket(fileno=fd)
    return out


def smtp_socket(sockets: dict[str, socket.socket]) -> socket.socket | None:
    """The listener to serve SMTP on: the one named ``smtp``, or the only one passed."""
    if not sockets:
        return None
    chosen = sockets.get(SMTP_NAME) or (next(iter(sockets.values())) if len(sockets) == 1 else None)
    if chosen is None:
        raise ListenError(
            f"systemd passed {len(sockets)} sockets ({', '.join(sockets)}) and none is named "
            f"{SMTP_NAME!r}; set FileDescriptorName={SMTP_NAME} in buzon.socket"
        )
    listening = chosen.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if chosen.family not in (socket.AF_INET, socket.AF_INET6) or chosen.type != socket.SOCK_STREAM:
        raise ListenError(
            "the socket systemd passed is not a TCP stream socket; "
            "use ListenStream= in buzon.socket"
        )
    if not listening:
        raise ListenError(
            "the socket systemd passed is not listening; use Accept=no in buzon.socket"
        )
    return chosen
