"""The agent as a service: systemd's notify protocol and watchdog, a local health endpoint, JSON logs.

- ``notify``: the sd_notify datagram protocol, written by hand (a Unix datagram to ``$NOTIFY_SOCKET``) so that
  no dependency is added; outside systemd (no ``$NOTIFY_SOCKET``) it does nothing. The unit file
  (``edge-agent.service`` beside this module) uses ``Type=notify`` and ``WatchdogSec``.
- ``Watchdog``: pings ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` while the serving loop shows progress, so
  systemd restarts an agent whose serving loop hangs, and not one that is merely idle.
- ``HealthServer``: ``GET /healthz`` on a loopback port: 200 and the agent's health as JSON while it serves,
  503 while it starts or stops.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Callable

from pydantic import BaseModel

from edgejoule.edge_agent.sources import BackgroundHttp
from edgejoule.schemas.messages import TelemetryHealth

log = logging.getLogger("edge_agent.service")


class AgentHealth(BaseModel):
    """What ``GET /healthz``, ``edge-agent status`` and the logs say about a running agent."""

    state: str  # starting, serving, stopping
    model_id: str | None
    fallback: str | None
    package_problem: str | None
    windows: int
    last_error: str | None
    telemetry: TelemetryHealth


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd with ``Type=notify``."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: a leading NUL byte
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False


class Watchdog:
    """``WATCHDOG=1`` every half period while ``alive_at()`` (monotonic seconds) is within one period."""

    def __init__(self, alive_at: Callable[[], float]) -> None:
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.period_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None
        self.alive_at = alive_at
        self._stop = threading.Event()
        if self.period_s is not None:
            threading.Thread(target=self._loop, name="watchdog", daemon=True).start()

    def _loop(self) -> None:
        assert self.period_s is not None
        while not self._stop.wait(self.period_s / 2):
            if time.monotonic() - self.alive_at() < self.period_s:
                notify("WATCHDOG=1")
            else:  # no ping: systemd kills and restarts the agent after the period
                log.error("the serving loop shows no progress for %.0f s: not pinging the watchdog", self.period_s)

    def close(self) -> None:
        self._stop.set()


class HealthServer(BackgroundHttp):
    """``GET /healthz`` on ``host:port`` (loopback: it is for the device's own supervisor, not the network)."""

    def __init__(self, address: str, health: Callable[[], AgentHealth]) -> None:
        host, _, port = address.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # a probe every few seconds is noise
                pass

            def do_GET(self) -> None:
                if self.path != "/healthz":
                    self.send_error(404)
                    return
                now = health()
                body = now.model_dump_json().encode()
                self.send_response(200 if now.state == "serving" else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(host, int(port), Handler)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))  # one line per request is noise
