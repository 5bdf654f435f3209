"""Telemetry, heartbeats, status and load events from MQTT, stored through the same service functions as HTTP.

The subscription is an MQTT v5 shared subscription (``$share/registry/...``): several registry processes
split the messages between them. The session is persistent (a stable client id, ``clean_start=False``), so
messages published while the registry is down wait in the broker. Messages are written in batches by one
writer thread and acknowledged only after their batch is committed (paho's manual acknowledgement): a registry
that dies mid-ingest loses nothing the broker accepted, because the broker redelivers what was not
acknowledged, and ``message_id`` keeps the store free of duplicates.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from urllib.parse import urlparse

from pydantic import ValidationError

from edgejoule.registry import service
from edgejoule.schemas import topics
from edgejoule.schemas.api import LoadEvent
from edgejoule.schemas.messages import AgentState, Heartbeat, Telemetry

log = logging.getLogger("registry.ingest")

SESSION_EXPIRY_S = 7 * 24 * 3600
RECEIVE_MAXIMUM = 2000
SUBSCRIPTIONS = (topics.ALL_TELEMETRY, topics.ALL_HEARTBEATS, topics.ALL_STATUS, topics.ALL_EVENTS)


class MqttIngest:
    def __init__(self, broker_url: str, sessions, counters, client_id: str = "edgejoule-registry",
                 username: str | None = None, password: str | None = None, batch_size: int = 500,
                 batch_delay_s: float = 0.05, on_rollback=None) -> None:
        import paho.mqtt.client as mqtt

        self.sessions = sessions
        self.counters = counters
        self.batch_size, self.batch_delay_s = batch_size, batch_delay_s
        self.on_rollback = on_rollback or (lambda agent_ids: None)
        url = urlparse(broker_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 1883
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        if username or url.username:
            self.client.username_pw_set(username or url.username, password or url.password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(1, 5)
        self.connected = threading.Event()
        # messages flow only once the broker granted the shared subscriptions, which a connection alone does not say
        self.subscribed = threading.Event()
        self.inbox: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="mqtt-ingest-writer", daemon=True)

    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM  # unacknowledged messages in flight: the batch can fill
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=properties)
        self.client.loop_start()
        self._writer.start()

    def stop(self) -> None:
        """Store and acknowledge what has arrived, then disconnect (the session stays in the broker).

        Messages arriving after this point are left unacknowledged: the broker gives them to the next session."""
        self._stopping.set()
        self._writer.join(30)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client, userdata, message) -> None:
        if not self._stopping.is_set():
            self.inbox.put(message)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        client.subscribe([(topics.shared(f), 1) for f in SUBSCRIPTIONS])
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            log.error("MQTT subscription refused: %s", ", ".join(str(code) for code in refused))
        else:
            self.subscribed.set()

    def _on_disconnect(self, *args, **kwargs) -> None:
        self.connected.clear()
        self.subscribed.clear()

    # -- the writer thread ---------------------------------------------------------------------------------
    def _next_batch(self) -> list:
        try:
            batch = [self.inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_delay_s
        while len(batch) < self.batch_size:
            try:
                batch.append(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        while not (self._stopping.is_set() and self.inbox.empty()):
            batch = self._next_batch()
            if batch and self._store_or_retry(batch):
                for message in batch:
                    self.client.ack(message.mid, message.qos)

    def _store_or_retry(self, batch: list) -> bool:
        """Store a batch; True once it is committed (or its bad messages dropped), False when stopping first."""
        from sqlalchemy.exc import IntegrityError, OperationalError

        while True:
            try:
                self.store(batch)
                return True
            except IntegrityError:  # another registry worker stored some of these meanwhile: the retry skips them
                continue
            except OperationalError:  # the database is away: keep the batch unacknowledged and retry
                log.exception("could not store %d MQTT messages; retrying", len(batch))
                if self._stopping.wait(1.0):
                    return False  # the broker redelivers them to the next registry session
            except Exception:  # a message the database refuses: store the others one by one, drop it
                if len(batch) == 1:
                    self.counters["rejected_messages"].inc()
                    log.exception("dropping an MQTT message on %s the database refused", batch[0].topic)
                    return True
                return all([self._store_or_retry([message]) for message in batch])

    def store(self, batch: list) -> None:
        """Store one batch of MQTT messages in one transaction; malformed ones are dropped with a warning."""
        telemetry: list[Telemetry] = []
        rolled_back: list[str] = []
        with self.sessions.begin() as session:
            for message in batch:
                agent_id, kind = message.topic.split("/")[-2:]
                try:
                    if kind == "telemetry":
                        telemetry.append(_own(Telemetry.model_validate_json(message.payload), agent_id))
                    elif kind == "heartbeat":
                        service.heartbeat(session, _own(Heartbeat.model_validate_json(message.payload), agent_id))
                    elif kind == "status":
                        state = _own(AgentState.model_validate_json(message.payload), agent_id)
                        service.set_state(session, agent_id, state.state, state.at)
                    elif kind == "events":
                        if service.record_event(session, _own(LoadEvent.model_validate_json(message.payload), agent_id)):
                            rolled_back.append(agent_id)
                except (ValidationError, ValueError, service.NotFound) as exc:
                    self.counters["rejected_messages"].inc()
                    log.warning("dropping a bad message on %s: %s", message.topic, str(exc).splitlines()[0])
            stored = service.ingest_telemetry_batch(session, telemetry)
        self.counters["telemetry"].labels("mqtt").inc(stored)
        self.counters["duplicates"].inc(len(telemetry) - stored)
        if rolled_back:
            self.on_rollback(rolled_back)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)


def _own(message, agent_id: str):
    """A message must name the agent whose topic it came on (the broker's ACL vouches for the topic)."""
    if message.agent_id != agent_id:
        raise ValueError(f"a message of '{message.agent_id}' on the topic of '{agent_id}'")
    return service.check_fits(message)
