"""A registry killed with -9 loses nothing (issue 22, item 3): its embedded broker dies with it (no orphan keeps
acknowledging telemetry nobody will read), saves its persistence on the way out, and comes back on the same port
with the registry, whose persistent session gets what was queued and redelivered."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import create_engine, func, select

from edgejoule.registry.db import TelemetryRow
from edgejoule.schemas import topics
from tests.brokers import mosquitto_binary
from tests.conftest import wait_for
from tests.fleet import serve
from tests.registry_parts import mqtt_password, register, window

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto package")
WINDOWS = 5000


def brokers_of(data_dir: Path) -> list[int]:
    """The live mosquitto processes started from ``data_dir``'s broker configuration."""
    conf = str((data_dir / "broker" / "mosquitto.conf").resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and conf in (entry / "cmdline").read_bytes() \
                    and "State:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def persistent_agent(broker_url: str, agent_id: str, password: str) -> mqtt.Client:
    """An agent's connection as the edge agent makes it: its client id, a persistent session, reconnecting."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=topics.agent_client_id(agent_id),
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(agent_id, password)
    client.reconnect_delay_set(0.1, 1)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 86400
    client.connect(host, int(port), clean_start=False, properties=properties)
    client.loop_start()
    return client


def test_kill_9_of_the_registry_with_its_embedded_broker_loses_and_duplicates_nothing(tmp_path):
    data = tmp_path / "data"
    registry = serve(data)
    with registry.admin() as admin:
        register(admin, "bs-a")
        password = mqtt_password(admin, "bs-a")
    url = registry.broker_url
    [broker] = brokers_of(data)
    agent = persistent_agent(url, "bs-a", password)
    payloads = [window("bs-a", None, i, inferences=1).model_dump_json(by_alias=True) for i in range(WINDOWS)]
    sent: list[int] = []
    acked: dict[int, int] = {}
    agent.on_publish = lambda c, u, mid, reason_code, properties: acked.__setitem__(mid, reason_code.value)

    def send() -> None:  # paho keeps what it publishes while the broker is away and sends it on reconnecting
        for i in range(0, WINDOWS, 50):
            sent.extend(agent.publish(topics.telemetry("bs-a"), p, qos=1).mid for p in payloads[i:i + 50])
            time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    engine = create_engine(f"sqlite:///{data / 'registry.db'}")

    def rows() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(TelemetryRow))

    wait_for(lambda: rows() >= 500, what="the first windows stored")
    os.kill(registry.process.pid, signal.SIGKILL)
    registry.process.wait()
    wait_for(lambda: brokers_of(data) == [], timeout=15, what="the embedded broker to die with the registry")
    assert 0 < rows() < WINDOWS
    registry = serve(data)
    try:
        assert registry.broker_url == url  # the agents' URL still holds
        assert brokers_of(data) != [broker] and len(brokers_of(data)) == 1
        sender.join(60)
        wait_for(lambda: len(acked) == WINDOWS, timeout=60, what="every PUBACK")
        assert set(acked) == set(sent) and set(acked.values()) == {0}
        wait_for(lambda: rows() == WINDOWS, timeout=60, what=f"all {WINDOWS} windows")
        time.sleep(1.0)
        assert rows() == WINDOWS  # nothing twice: message_id is the key, and nothing was lost
    finally:
        agent.loop_stop()
        registry.stop()
        engine.dispose()
    assert brokers_of(data) == []
