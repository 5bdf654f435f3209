"""The embedded development broker: a local mosquitto on a loopback port, started by ``registry serve``
when no broker is configured, so the main job needs one command. Production uses a real broker URL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from edgejoule.errors import EdgejouleError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int | None = None, secure: bool = False) -> None:
        """``secure``: no anonymous access; ``passwd`` and ``acl`` (edgejoule.registry.broker_auth) live in ``workdir``,
        which the broker's own user can read, and must be written before ``start``."""
        self.port = port or free_port()
        self.secure = secure
        self.process: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="edgejoule-broker-"))

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedBroker":
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if binary is None:
            raise EdgejouleError("no broker configured and mosquitto is not installed: install the Debian package "
                                 "'mosquitto' or pass --broker mqtt://HOST:PORT")
        os.chmod(self.workdir, 0o755)  # mosquitto drops to its own user when started as root
        conf = self.workdir / "mosquitto.conf"
        auth = (f"allow_anonymous false\npassword_file {self.workdir / 'passwd'}\nacl_file {self.workdir / 'acl'}\n"
                if self.secure else "allow_anonymous true\n")
        conf.write_text(f"listener {self.port} 127.0.0.1\npersistence false\nmax_queued_messages 1000000\n{auth}")
        os.chmod(conf, 0o644)
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise EdgejouleError("the embedded mosquitto did not start within 10 s")

    def reload(self) -> None:
        """Re-read the password file and ACL (mosquitto reloads them on SIGHUP)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)
            self.process = None
