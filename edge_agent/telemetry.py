"""Telemetry over MQTT v5 (paho-mqtt 2) with a disk spool: nothing is lost while the broker is away.

Every message is first written to the spool (one file per message, named by a sequence number), then
published with QoS 1; its file is deleted only when the broker acknowledges it. After a reconnect the
spool is replayed in order. A message the broker received but whose acknowledgement was lost is sent
again with the same ``message_id``, which the registry ingests once. The client sets a retained
last will "offline" on the agent's status topic, publishes "online" there on every connect, and listens
on its assignment topic, where the registry announces a new deployment.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlparse

from edgejoule.schemas import topics
from edgejoule.schemas.messages import AgentState, Telemetry

PUBLISH_TIMEOUT_S = 5.0


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def put(self, message: Telemetry) -> Path:
        with self._lock:
            existing = sorted(self.directory.glob("*.json"))
            seq = int(existing[-1].stem.split("-")[0]) + 1 if existing else 1
            path = self.directory / f"{seq:012d}-{message.message_id}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(message.model_dump_json(by_alias=True))
            os.replace(tmp, path)
            return path

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.json"))


class MqttTelemetry:
    def __init__(self, broker_url: str, agent_id: str, spool: Spool, username: str | None = None,
                 password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.agent_id = agent_id
        self.spool = spool
        url = urlparse(broker_url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-agent-{agent_id}",
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        offline = AgentState(agent_id=agent_id, state="offline").model_dump_json(by_alias=True)
        self.client.will_set(topics.status(agent_id), offline, qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.connected = threading.Event()
        self.assignment_changed = threading.Event()
        self.client.on_message = lambda client, userdata, message: self.assignment_changed.set()
        self.client.on_disconnect = lambda *args, **kwargs: self.connected.clear()
        self.client.connect_async(url.hostname or "127.0.0.1", url.port or 1883, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        online = AgentState(agent_id=self.agent_id, state="online").model_dump_json(by_alias=True)
        client.publish(topics.status(self.agent_id), online, qos=1, retain=True)
        client.subscribe(topics.assignment(self.agent_id), qos=1)
        self.connected.set()

    def send(self, message: Telemetry) -> int:
        """Spool ``message`` and flush the spool; returns how many messages are still waiting."""
        self.spool.put(message)
        return self.flush()

    def flush(self) -> int:
        import paho.mqtt.client as mqtt

        for path in self.spool.pending():
            if not self.connected.is_set():
                break
            info = self.client.publish(topics.telemetry(self.agent_id), path.read_text(), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            path.unlink()
        return len(self.spool.pending())

    def close(self) -> None:
        """A clean disconnect sends no last will, so say "offline" ourselves first."""
        if self.connected.is_set():
            offline = AgentState(agent_id=self.agent_id, state="offline").model_dump_json(by_alias=True)
            self.client.publish(topics.status(self.agent_id), offline, qos=1, retain=True).wait_for_publish(PUBLISH_TIMEOUT_S)
        self.client.disconnect()
        self.client.loop_stop()
