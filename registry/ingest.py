"""Telemetry, status and load events from MQTT, stored through the same service functions as HTTP.

The subscription is an MQTT v5 shared subscription (``$share/registry/...``): several registry processes
split the messages between them. Messages are acknowledged only after they are committed (paho's manual
acknowledgement), so a registry that dies mid-ingest loses nothing the broker accepted: the broker
redelivers, and ``message_id`` keeps the store free of duplicates.
"""

from __future__ import annotations

import logging
import threading
import uuid
from urllib.parse import urlparse

from core.schemas import topics
from core.schemas.api import Assignment, LoadEvent
from core.schemas.messages import AgentState, Telemetry
from registry import service

log = logging.getLogger("registry.ingest")


class MqttIngest:
    def __init__(self, broker_url: str, sessions, counters, username: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.sessions = sessions
        self.counters = counters
        url = urlparse(broker_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 1883
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"registry-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        if username or url.username:
            self.client.username_pw_set(username or url.username, password or url.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 5)
        self.connected = threading.Event()
        self.client.on_disconnect = lambda *args, **kwargs: self.connected.clear()

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        for topic_filter in (topics.ALL_TELEMETRY, topics.ALL_STATUS, topics.ALL_EVENTS):
            client.subscribe(topics.shared(topic_filter), qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            self.handle(message.topic, message.payload)
        except ValueError as exc:  # malformed or mislabelled (pydantic's ValidationError is a ValueError)
            log.warning("dropping a bad message on %s: %s", message.topic, str(exc).splitlines()[0])
        except Exception:  # keep the ingest loop alive; the message will be redelivered
            log.exception("could not store a message from %s", message.topic)
            return
        client.ack(message.mid, message.qos)

    def handle(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        agent_id, kind = parts[-2], parts[-1]
        with self.sessions.begin() as session:
            if kind == "telemetry":
                msg = Telemetry.model_validate_json(payload)
                if msg.agent_id != agent_id:
                    raise ValueError(f"telemetry of '{msg.agent_id}' on the topic of '{agent_id}'")
                stored = service.ingest_telemetry(session, msg)
                (self.counters["telemetry"].labels("mqtt") if stored else self.counters["duplicates"]).inc()
            elif kind == "status":
                state = AgentState.model_validate_json(payload)
                service.set_state(session, agent_id, state.state, state.at)
            elif kind == "events":
                if service.record_event(session, LoadEvent.model_validate_json(payload)):
                    self.notify_assignment([agent_id])

    def notify_assignment(self, agent_ids: list[str]) -> None:
        """Tell agents their assignment changed (they fetch it over HTTP)."""
        for agent_id in agent_ids:
            self.client.publish(topics.assignment(agent_id), b'{"changed": true}', qos=1)
