"""Telemetry, heartbeats, status and load events from MQTT, stored through the same service functions as HTTP.

The subscription is an MQTT v5 shared subscription (``$share/registry/...``): several registry processes
split the messages between them (``shared=False`` for a broker that serves one registry, whose plain
subscription the broker's persistence keeps across its restarts). Windows whose site or model are not their
sender's are refused and counted (``service.foreign_telemetry``). The session is persistent (a stable client id, ``clean_start=False``), so
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pydantic import ValidationError

from edgejoule.registry import service
from edgejoule.registry.broker_auth import CONTROL_RESPONSES
from edgejoule.registry.broker_passwords import BrokerPasswords
from edgejoule.registry.broker_sync import BrokerLogins
from edgejoule.schemas import topics
from edgejoule.schemas.api import LoadEvent
from edgejoule.schemas.messages import AgentState, Heartbeat, Telemetry

log = logging.getLogger("registry.ingest")

SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class TlsClient:
    """How the ingest checks an ``mqtts://`` broker (``ca_file``; None: the system's CAs) and, if the broker asks,
    proves who it is (a client certificate and key)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)
RECEIVE_MAXIMUM = 2000


class MqttIngest:
    def __init__(self, broker_url: str, sessions, counters, passwords: BrokerPasswords,
                 client_id: str = "edgejoule-registry", shared: bool = True,
                 username: str | None = None, password: str | None = None, batch_size: int = 500,
                 batch_delay_s: float = 0.05, on_rollback=None, tls: TlsClient | None = None,
                 retire_on_stop: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.sessions = sessions
        self.shared, self.retire_on_stop = shared, retire_on_stop
        self.counters = counters
        self.batch_size, self.batch_delay_s = batch_size, batch_delay_s
        self.on_rollback = on_rollback or (lambda agent_ids: None)
        url = urlparse(broker_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or (8883 if url.scheme == "mqtts" else 1883)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        if url.scheme == "mqtts":  # the broker's certificate is verified (its name too) against the CA given
            tls = tls or TlsClient()
            self.client.tls_set(ca_certs=_path(tls.ca_file), certfile=_path(tls.cert_file), keyfile=_path(tls.key_file))
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
        self._ingest_mid: int | None = None
        # agents' broker logins kept in step with the agents table (dynamic-security control topic)
        self.logins = BrokerLogins(sessions, self.publish, passwords)
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
        self.logins.start()

    def stop(self) -> None:
        """Store and acknowledge what has arrived, then disconnect. The session stays in the broker, which queues
        this worker's share of the shared subscription until it is back, and gives what arrives after this point
        (unacknowledged) to the next session.

        With ``retire_on_stop`` the worker hands its share to the others instead: it unsubscribes (what the broker
        sent before its UNSUBACK is in the inbox by then), stores and acknowledges all of it, and ends its session
        (session expiry 0 at DISCONNECT). The trade-off: with every worker retired, agents get PUBACK 16 (no
        subscribers) and keep their windows until a worker is back."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        ending = None
        if self.retire_on_stop and self.subscribed.is_set():
            unsubscribed = threading.Event()
            self.client.on_unsubscribe = lambda *args: unsubscribed.set()
            self.client.unsubscribe(self._filters())
            unsubscribed.wait(10)
            ending = Properties(PacketTypes.DISCONNECT)
            ending.SessionExpiryInterval = 0
        self._stopping.set()
        self.logins.stop()
        self._writer.join(30)
        self.client.disconnect(properties=ending)
        self.client.loop_stop()

    def _filters(self) -> list[str]:
        return [topics.shared(f) if self.shared else f for f in topics.REGISTRY_INGEST]

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == CONTROL_RESPONSES:
            self.logins.answer(message.payload)
        elif not self._stopping.is_set():
            self.inbox.put(message)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        _, self._ingest_mid = client.subscribe([(f, 1) for f in self._filters()])
        client.subscribe(CONTROL_RESPONSES, 1)  # the login commands' answers; a broker without the plugin refuses it
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if mid != self._ingest_mid:
            if refused:
                log.warning("the broker refused the registry its dynamic-security control topic: agents registered "
                            "now get no broker login until `edgejoule registry broker-auth` rewrites its files")
            else:
                self.logins.connected()
        elif refused:
            log.error("MQTT subscription refused: %s", ", ".join(str(code) for code in refused))
        else:
            self.subscribed.set()

    def _on_disconnect(self, *args, **kwargs) -> None:
        self.logins.disconnected()
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
            except Exception as exc:  # a message the database refuses: store the others one by one, drop it
                if len(batch) == 1:
                    self.counters["rejected_messages"].inc()
                    log.exception("dropping an MQTT message on %s the database refused", batch[0].topic)
                    with self.sessions.begin() as session:
                        service.dead_letter(session, batch[0].topic, f"the database refused it: {type(exc).__name__}",
                                            batch[0].payload)
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
                    reason = _reason(exc)
                    log.warning("dropping a bad message on %s: %s", message.topic, reason)
                    service.dead_letter(session, message.topic, reason, message.payload)
            foreign = service.foreign_telemetry(session, telemetry) if telemetry else {}
            for message in telemetry:
                if problem := foreign.get(message.message_id):
                    log.warning("refusing a telemetry window: %s", problem, extra={"message_id": message.message_id})
                    service.dead_letter(session, topics.telemetry(message.agent_id), problem,
                                        message.model_dump_json(by_alias=True).encode())
            telemetry = [m for m in telemetry if m.message_id not in foreign]
            stored = service.ingest_telemetry_batch(session, telemetry)
        self.counters["foreign"].labels("mqtt").inc(len(foreign))
        self.counters["telemetry"].labels("mqtt").inc(stored)
        self.counters["duplicates"].inc(len(telemetry) - stored)
        if rolled_back:
            self.on_rollback(rolled_back)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)


def _reason(exc: Exception) -> str:
    """One line that says what is wrong with a refused message (a ValidationError's first line says only how
    many errors it has)."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"invalid {'.'.join(str(part) for part in error['loc']) or 'message'}: {error['msg']}"
    return str(exc).splitlines()[0]


def _own(message, agent_id: str):
    """A message must name the agent whose topic it came on (the broker's ACL vouches for the topic)."""
    if message.agent_id != agent_id:
        raise ValueError(f"a message of '{message.agent_id}' on the topic of '{agent_id}'")
    return service.check_fits(message)
