"""The embedded broker: a local mosquitto started by ``registry serve`` when no broker is configured, so the main
job needs one command. Production may use an external broker (``edgejoule registry broker-auth`` writes its
configuration).

It lives in the data directory (``DATA_DIR/broker``: its configuration, the dynamic-security file, its
persistence and its log, mode 700 / 600; nothing in the system temp directory), listens on a port kept there
(``DATA_DIR/broker/port``, chosen once, or given), and keeps sessions and queued messages across restarts. It
cannot outlive the registry: the kernel sends it SIGTERM when the process that started it dies, kill -9
included (``PR_SET_PDEATHSIG``), and on SIGTERM mosquitto saves its persistence before it exits. So a restarted
registry finds the same URL, and what the old broker had acknowledged and queued."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from edgejoule.errors import EdgejouleError
from edgejoule.registry.broker_auth import CONFIG_FILE, TlsFiles, broker_config, current_user, write_private

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the registry dies. The kernel clears this when a process changes
    its user, so the broker's config names the registry's own user (mosquitto started as root drops to it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ensure_tls(directory: Path) -> TlsFiles:
    """A CA and a certificate for 127.0.0.1 and localhost signed by it, made with ``openssl`` into ``directory``
    at the first start and kept (EC P-256, ten years): agents verify the broker with ``ca.crt``."""
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    if all(path.exists() for path in (files.ca, files.cert, files.key)):
        return files
    if shutil.which("openssl") is None:
        raise EdgejouleError("a TLS broker needs a certificate: install openssl, or give the broker one")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650"]
    for command in (
        ["req", "-x509", *key, "-keyout", directory / "ca.key", "-out", files.ca, "-subj", "/CN=edgejoule registry CA"],
        ["req", "-x509", *key, "-keyout", files.key, "-out", files.cert, "-subj", "/CN=localhost", "-CA", files.ca,
         "-CAkey", directory / "ca.key", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    for path in directory.iterdir():
        os.chmod(path, 0o600)
    return files


class EmbeddedBroker:
    def __init__(self, directory: Path, port: int | None = None, secure: bool = True, tls: bool = False) -> None:
        """``secure``: logins and access from ``DIRECTORY/dynamic-security.json``
        (``broker_auth.write_broker_files``, written before ``start``); else anonymous (development). ``tls``: a
        TLS listener, with a certificate made at the first start (``DIRECTORY/tls``)."""
        self.directory = Path(directory)
        self.secure = secure
        self.tls = ensure_tls(self.directory / "tls") if tls else None
        self.process: subprocess.Popen | None = None
        kept = self.directory / "port"
        self.port = port or (int(kept.read_text()) if kept.exists() else free_port())
        write_private(self.directory, {"port": str(self.port)}, current_user())

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedBroker":
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if binary is None:
            raise EdgejouleError("no broker configured and mosquitto is not installed: install the Debian package "
                                 "'mosquitto' or pass --broker mqtt://HOST:PORT")
        if not self.secure:
            write_private(self.directory, {CONFIG_FILE: broker_config(self.directory, self.port, "127.0.0.1",
                                                                      current_user(), secure=False, tls=self.tls)},
                          current_user())
        # a broker of this directory that is still saving its persistence (its registry just died) holds the port
        deadline = time.monotonic() + 15
        while not _port_free(self.port):
            if time.monotonic() > deadline:
                raise EdgejouleError(f"port {self.port} of the embedded broker ({self.directory / 'port'}) is taken "
                                     f"by another process")
            time.sleep(0.1)
        log = os.open(self.directory / "mosquitto.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = subprocess.Popen([binary, "-c", str(self.directory / CONFIG_FILE)], stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        finally:
            os.close(log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgejouleError(f"the embedded mosquitto exited: see {self.directory / 'mosquitto.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise EdgejouleError("the embedded mosquitto did not start within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)  # it saves its persistence first
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
