"""A fault-injecting loopback TCP proxy to put between a client and its server
(an IMAP client and Dovecot; the daemon and PostgreSQL).

Each accepted connection gets its own upstream connection and two daemon
pump threads (client→server, server→client).  Faults:

- ``cut_after_bytes(n)``: a one-shot budget on the next server→client bytes
  forwarded by any connection, live or future; the connection that forwards
  byte ``n`` is closed on both sides right after it (IMAP-01: cut mid-FETCH).
- ``cut_all()``: close every live connection now.
- ``hang()`` / ``unhang()``: stop / restart forwarding in both directions
  without closing anything; connections accepted meanwhile get no greeting
  either (IMAP-02: a hung server).
- ``down("refuse")`` / ``down("blackhole")`` / ``up()``: the server goes away and
  comes back (DUR-10).  ``down`` closes every live connection; new ones are then
  refused (``connect()`` fails, as with a stopped server: the port stays bound
  by a socket that does not listen, so ``up()`` gets it back) or blackholed
  (accepted, then nothing comes back, as with a network partition; ``up()``
  passes them through, as a retransmitted SYN would be). ``down`` again while
  down switches the mode: ``"refuse"`` then resets the held connections.

Loopback only, at most ``max_connections`` live connections (more are closed
on accept), and ``stop()`` joins every thread it started.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType

CHUNK = 65536
POLL = 0.05  # seconds between checks of the stop/hang flags


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close both sockets; shutdown() first wakes a pump blocked in send/recv."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            for sock in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module doc."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._threads: list[threading.Thread] = []
        self._cut_budget: int | None = None
        self._accepted = 0
        self._cuts = 0
        self._to_client = 0
        self._state = "up"  # up | refuse | blackhole
        self._held: list[socket.socket] = []  # blackholed clients, forwarded on up()
        self._halt_accept = threading.Event()  # stops the current accept thread only

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))  # port 0 first time; the same one after
        listener.listen(self.max_connections)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._stopping.clear()
        self._start_accepting()
        return self

    def _start_accepting(self) -> None:
        self._halt_accept = threading.Event()
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(self._halt_accept,),
            name=f"tcpproxy-accept-{self.port}",
            daemon=True,
        )
        self._accept_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; join all threads."""
        self._stopping.set()
        self._flowing.set()  # wake hung pumps so they see the stop flag
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.cut_all()
        with self._lock:
            held, self._held = self._held, []
            threads, self._threads = self._threads, []
        for client in held:
            client.close()
        for thread in threads:
            thread.join(timeout)
        self._flowing.set()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------

    def cut_after_bytes(self, n: int) -> None:
        """Cut the connection that forwards the n-th next server→client byte (one-shot)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._cut_budget = n

    def cut_all(self) -> None:
        """Close every live connection, both sides, now."""
        with self._lock:
            connections = list(self._connections)
            # Closed now, so no longer live; the pump threads' own discard is then a no-op.
            self._connections.clear()
        for conn in connections:
            conn.close()

    def hang(self) -> None:
        """Stop forwarding (both directions, all connections) without closing anything."""
        self._flowing.clear()

    def unhang(self) -> None:
        self._flowing.set()

    def down(self, mode: str = "refuse") -> None:
        """The server goes away: live connections closed, new ones refused or blackholed.

        Called again while down it changes the mode: a partition that turns into a
        stopped server resets the connects it was holding, as that server's host would.
        """
        if mode not in ("refuse", "blackhole"):
            raise ValueError(f"mode must be 'refuse' or 'blackhole', not {mode!r}")
        with self._lock:
            previous, self._state = self._state, mode  # no new connection is registered now
            dropped, self._held = (self._held, []) if mode == "refuse" else ([], self._held)
        if mode == "refuse" and previous != "refuse":
            self._stop_listening()
        elif mode == "blackhole" and previous == "refuse":
            self._listen_again()
        for client in dropped:
            client.close()
        self.cut_all()

    def up(self) -> None:
        """The server is back: accept and forward again; blackholed clients go through."""
        with self._lock:
            previous, self._state = self._state, "up"
            held, self._held = self._held, []
        if previous == "refuse":
            self._listen_again()
        for client in held:
            self._forward(client)

    def _stop_listening(self) -> None:
        self._halt_accept.set()
        if self._accept_thread is not None:
            self._accept_thread.join()
        assert self._listener is not None
        self._listener.close()  # the backlog not yet accepted is reset with it
        # Keep the port: a bound socket that does not listen answers SYN with RST,
        # and nothing else can take the port before we listen on it again.
        placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.bind((self.host, self.port))
        self._listener = placeholder

    def _listen_again(self) -> None:
        assert self._listener is not None
        self._listener.listen(self.max_connections)
        self._start_accepting()

    # -- counters ----------------------------------------------------------------

    @property
    def accepted(self) -> int:
        """Connections accepted since start (including ones closed at once)."""
        return self._accepted

    @property
    def live(self) -> int:
        """Connections currently open."""
        with self._lock:
            return len(self._connections)

    @property
    def cuts(self) -> int:
        """Connections cut by ``cut_after_bytes`` so far."""
        return self._cuts

    @property
    def cut_pending(self) -> bool:
        """True while a ``cut_after_bytes`` budget is armed and not yet spent."""
        with self._lock:
            return self._cut_budget is not None

    @property
    def bytes_to_client(self) -> int:
        """Server→client bytes forwarded so far, all connections."""
        return self._to_client

    @property
    def hung(self) -> bool:
        return not self._flowing.is_set()

    @property
    def state(self) -> str:
        """``up``, or the mode of ``down()``: ``refuse`` or ``blackhole``."""
        return self._state

    @property
    def held(self) -> int:
        """Blackholed connections waiting for ``up()``."""
        with self._lock:
            return len(self._held)

    # -- internals ----------------------------------------------------------------

    def _accept_loop(self, halt: threading.Event) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set() and not halt.is_set():
            ready, _, _ = select.select([listener], [], [], POLL)
            if not ready:
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            with self._lock:
                self._accepted += 1
                full = len(self._connections) >= self.max_connections
                if self._state == "blackhole" and not full:
                    self._held.append(client)
                    continue
            if full or self._stopping.is_set():
                client.close()
                continue
            self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        """Connect ``client`` to the target and start its two pumps."""
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            client.close()  # target down: the client sees an immediate close
            return
        upstream.settimeout(None)
        conn = _Connection(client, upstream)
        pumps = [
            threading.Thread(
                target=self._pump,
                args=(conn, src, dst, to_client),
                name=f"tcpproxy-{self.port}-{'s2c' if to_client else 'c2s'}",
                daemon=True,
            )
            for src, dst, to_client in ((client, upstream, False), (upstream, client, True))
        ]
        with self._lock:
            if self._state != "up":  # down() ran while we connected: it would miss this one
                conn.close()
                return
            self._connections.add(conn)
            self._threads = [t for t in self._threads if t.is_alive()] + pumps
        for thread in pumps:
            thread.start()

    def _pump(
        self, conn: _Connection, src: socket.socket, dst: socket.socket, to_client: bool
    ) -> None:
        try:
            while not conn.closed.is_set() and not self._stopping.is_set():
                if not self._flowing.wait(POLL):
                    continue  # hung: leave the bytes in the kernel buffers
                ready, _, _ = select.select([src], [], [], POLL)
                if not ready or not self._flowing.is_set():
                    continue
                data = src.recv(CHUNK)
                if not data:
                    break
                cut = False
                if to_client:
                    with self._lock:
                        if self._cut_budget is not None:
                            if len(data) >= self._cut_budget:
                                data = data[: self._cut_budget]
                                self._cut_budget = None
                                self._cuts += 1
                                cut = True
                            else:
                                self._cut_budget -= len(data)
                        self._to_client += len(data)
                if data:
                    dst.sendall(data)
                if cut:
                    break
        except (OSError, ValueError):
            pass  # the other pump or cut_all() closed the sockets under us
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(conn)
