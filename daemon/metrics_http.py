"""The metrics endpoint's HTTP side: ``/metrics``, ``/healthz`` and ``/readyz`` in a thread.

A ``ThreadingHTTPServer`` on the configured address (no dependency beyond the standard
library and prometheus_client's exposition): ``/metrics`` is the registry of
``daemon.metrics.Metrics`` in Prometheus text format, the probes answer 200 or 503 with
the reason the daemon gives.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from daemon.logging import get_logger
from daemon.metrics import Metrics

Check = Callable[[], tuple[bool, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress never holds up the daemon's exit

    def __init__(self, address: tuple[str, int], metrics: Metrics, live: Check, ready: Check):
        self.metrics = metrics
        self.live = live
        self.ready = ready
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks up the host's FQDN (DNS, seconds without a resolver)
        # for a name nothing here uses.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, outside the JSON log.
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):  # a scraper that gave up and hung up
            get_logger(component="metrics").error("metrics.request_failed", error=repr(error))


class _Server6(_Server):
    address_family = socket.AF_INET6


def _probe(check: Check) -> tuple[bool, str]:
    try:
        return check()
    except Exception as exc:  # a probe that cannot tell says "not ok", with why
        return False, f"the check failed: {exc!r}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "Buzon"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            status, ctype = 200, CONTENT_TYPE_PLAIN_0_0_4
            payload = generate_latest(self.server.metrics.registry)
        elif path in ("/healthz", "/readyz"):
            ok, reason = _probe(self.server.live if path == "/healthz" else self.server.ready)
            status, ctype = (200 if ok else 503), text
            payload = ("ok" if ok else reason or "not ok").encode() + b"\n"
        else:
            status, ctype = 404, text
            payload = b"not found; try /metrics, /healthz or /readyz\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a stderr line per scrape would interleave with the JSON log


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``listen`` (host:port), in a thread."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        *,
        live: Check,
        ready: Check,
    ) -> None:
        self.listen = listen
        self.metrics = metrics
        self.live = live
        self.ready = ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.log = get_logger(component="metrics")

    def start(self) -> tuple[str, int]:
        """Bind (port 0 picks one) and serve; the bound address. OSError when it cannot bind."""
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        cls = _Server6 if ":" in host else _Server
        self._server = cls((host, int(port)), self.metrics, self.live, self.ready)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        bound_host, bound_port = self._server.server_address[:2]
        self.log.info("metrics.listening", host=str(bound_host), port=int(bound_port))
        return str(bound_host), int(bound_port)

    def stop(self) -> None:
        """Stop serving and close the socket; a scrape in progress is cut off."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
