"""A real mosquitto broker for tests: started on a free loopback port with its own config, stopped after.

mosquitto drops privileges to user ``mosquitto`` when started as root, so its files live in a directory
that user can read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


@dataclass
class Mosquitto:
    """One broker process. ``extra_config`` lines (password_file, acl_file, ...) go into its config."""

    extra_config: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mosquitto-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        os.chmod(self.workdir, 0o755)
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "max_queued_messages 1000000",
            f"allow_anonymous {'false' if any(l.startswith('password_file') for l in self.extra_config) else 'true'}",
            *self.extra_config,
        ]
        conf.write_text("\n".join(lines) + "\n")
        os.chmod(conf, 0o644)
        return self.start_from(str(conf))

    def start_from(self, conf: str) -> "Mosquitto":
        """Run mosquitto with exactly the configuration file ``conf`` (which must listen on ``port``)."""
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed: run ./run setup (Debian package 'mosquitto')")
        self.process = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def login(broker_url: str, username: str, password: str | None, client_id: str, timeout: float = 5.0):
    """An MQTT v5 connection as ``username`` with ``client_id``: (the client, looping, and its CONNACK reason)."""
    import paho.mqtt.client as mqtt

    host, port = broker_url.removeprefix("mqtt://").rsplit("@", 1)[-1].split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    outcome: list = []
    client.on_connect = lambda c, u, flags, reason_code, properties: outcome.append(reason_code)
    client.connect(host, int(port))
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.02)
    if not outcome:
        raise AssertionError(f"no CONNACK for {username} within {timeout} s")
    return client, outcome[0]


def suback(client, topic_filter: str, timeout: float = 5.0) -> int:
    """The reason code the broker answers a SUBSCRIBE to ``topic_filter`` with (QoS 1)."""
    codes: dict[int, int] = {}
    client.on_subscribe = lambda c, u, mid, reason_codes, properties: codes.__setitem__(mid, reason_codes[0].value)
    _, mid = client.subscribe(topic_filter, qos=1)
    deadline = time.monotonic() + timeout
    while mid not in codes and time.monotonic() < deadline:
        time.sleep(0.02)
    return codes[mid]


def publish_acked(client, topic: str, payloads: list[str], timeout: float = 120.0) -> list[int]:
    """Publish each payload with QoS 1 and return the PUBACK reason codes, in order (0: accepted)."""
    codes: dict[int, int] = {}
    client.on_publish = lambda c, u, mid, reason_code, properties: codes.__setitem__(mid, reason_code.value)
    mids = [client.publish(topic, payload, qos=1).mid for payload in payloads]
    deadline = time.monotonic() + timeout
    while len(codes) < len(mids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [codes.get(mid, -1) for mid in mids]
