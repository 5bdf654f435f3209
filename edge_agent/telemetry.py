"""Telemetry delivery, off the serving path: a durable queue on disk and a background sender.

The serving thread only appends a window to the ``Spool`` (one SQLite INSERT in WAL mode: constant cost
whatever the queue holds; the spool of one file per message listed and sorted its folder on every write,
128 ms per message at 20,000 queued) and wakes the ``Sender``. The sender delivers the oldest messages
through a transport (MQTT v5 QoS 1, or HTTP when no broker is configured) and deletes one only when it is
*stored*: a PUBACK with reason code 0 (16 "no matching subscribers" and every code of 128 or more keep it),
or an HTTP 2xx. A refusal or a silent broker backs off (1 s doubling to 30 s) and is warned about once per
cause. A message the broker received but whose acknowledgement was lost is sent again with the same
``message_id``, which the registry stores once.

Policies (docs/EDGE.md "Telemetry spool"):

- cap: at most ``max_messages`` windows wait; at the cap the oldest is dropped (the newest describe the
  model serving now) and counted in ``dropped``;
- fsync: ``synchronous=NORMAL`` by default: a committed window survives a crash or kill of the agent, while
  an OS crash or power loss may lose the windows since the last WAL checkpoint; ``full`` fsyncs every write;
- degraded: a spool that cannot be opened or written (read-only, disk full) never stops serving: windows
  wait in a bounded memory queue (its overflow counted in ``dropped``), the reason is reported in status and
  heartbeats, and the disk is tried again every ``RETRY_DISK_S``.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Literal, Protocol
from urllib.parse import urlparse

from edgejoule.edge_agent.registry_client import RegistryClient, RegistryRefused, RegistryUnavailable
from edgejoule.schemas import topics
from edgejoule.schemas.messages import AgentState, Telemetry, TelemetryHealth

log = logging.getLogger("edge_agent.telemetry")
PUBLISH_TIMEOUT_S = 5.0
LOGIN_REFUSED = (134, 135)  # CONNACK: bad user name or password, not authorized (MQTT v5 3.2.2.2)
BACKOFF_S = (1.0, 30.0)
RETRY_DISK_S = 10.0
MEMORY_MESSAGES = 1000  # while the disk is unusable: ~1 MB, about 4 minutes at 4 windows a second
SPOOL_FILE = "spool.sqlite3"
PUBACK_SUCCESS = 0

Key = tuple[Literal["disk", "memory"], int]


class Spool:
    """Windows waiting for delivery, oldest first, on disk (SQLite, WAL) or, while it is unusable, in memory."""

    def __init__(self, directory: Path, max_messages: int = 100_000, sync: Literal["normal", "full"] = "normal") -> None:
        self.path = Path(directory) / SPOOL_FILE
        self.max_messages = max_messages
        self.sync = sync
        self.dropped = 0
        self.degraded: str | None = None
        self._db: sqlite3.Connection | None = None
        self._on_disk = 0
        self._memory: collections.deque[tuple[int, str]] = collections.deque()
        self._memory_seq = 0
        self._next_try = 0.0
        self._lock = threading.Lock()  # the serving thread appends, the sender reads and deletes
        with self._lock:
            self._open()

    def _open(self) -> bool:
        """Open (or create) the database; on failure note why and stay in memory until ``RETRY_DISK_S``."""
        if self._db is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync.upper()}")
            db.execute("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)")
            self._on_disk = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]  # once, at open
            self._db = db
        except (OSError, sqlite3.Error) as exc:
            self._fail(f"spool {self.path} unusable: {exc}")
            return False
        if self.degraded:
            log.warning("telemetry spool %s usable again", self.path)
        self.degraded = None
        return True

    def _fail(self, reason: str) -> None:
        if reason != self.degraded:
            log.warning("%s; keeping up to %d windows in memory", reason, MEMORY_MESSAGES)
        self.degraded = reason
        self._next_try = time.monotonic() + RETRY_DISK_S
        if self._db is not None:
            self._db.close()
            self._db = None

    def put(self, message: Telemetry) -> None:
        """Append one window; never raises (serving must go on whatever the disk does)."""
        body = message.model_dump_json(by_alias=True)
        with self._lock:
            if self._open():
                try:
                    # windows held in memory while the disk was away are older: they go in first, in order
                    self._insert([*(b for _, b in self._memory), body])
                    self._memory.clear()
                    return
                except sqlite3.Error as exc:
                    self._fail(f"spool {self.path} not writable: {exc}")
            if len(self._memory) >= MEMORY_MESSAGES:
                self._memory.popleft()
                self.dropped += 1
            self._memory_seq += 1
            self._memory.append((self._memory_seq, body))

    def _insert(self, bodies: list[str]) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO messages (body) VALUES (?)", [(b,) for b in bodies])
            excess = self._on_disk + len(bodies) - self.max_messages
            if excess > 0:  # the cap: drop the oldest (an index range on the primary key, not a scan)
                self._db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                                 (excess,))
                self.dropped += excess
        self._on_disk = min(self._on_disk + len(bodies), self.max_messages)

    def peek(self, limit: int) -> list[tuple[Key, str]]:
        """The oldest ``limit`` waiting windows, with the key that removes each."""
        with self._lock:
            rows: list[tuple[Key, str]] = []
            if self._db is not None:
                try:
                    rows = [(("disk", seq), body) for seq, body in
                            self._db.execute("SELECT seq, body FROM messages ORDER BY seq LIMIT ?", (limit,))]
                except sqlite3.Error as exc:
                    self._fail(f"spool {self.path} not readable: {exc}")
            rows += [(("memory", seq), body) for seq, body in list(self._memory)[: max(limit - len(rows), 0)]]
            return rows

    def remove(self, key: Key) -> None:
        with self._lock:
            where, seq = key
            if where == "memory":
                self._memory = collections.deque(item for item in self._memory if item[0] != seq)
                return
            if self._db is None:
                return  # the disk failed since: the window stays there and is sent again (stored once)
            try:
                if self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount:
                    self._on_disk -= 1
            except sqlite3.Error as exc:
                self._fail(f"spool {self.path} not writable: {exc}")

    def __len__(self) -> int:
        return self._on_disk + len(self._memory)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def spooled(directory: Path) -> int:
    """Windows waiting in the spool at ``directory``, read without opening it for writing (``edge-agent status``)."""
    path = Path(directory) / SPOOL_FILE
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    except sqlite3.Error:
        return 0


class Delivery(Exception):
    """A window was not stored; ``cause`` names why (one warning per distinct cause)."""

    def __init__(self, cause: str, drop: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.drop = drop  # the receiver will never take it (invalid): retrying would block the queue forever


class Transport(Protocol):
    def deliver(self, body: str) -> None:
        """Return once ``body`` is stored by the receiver; raise ``Delivery`` otherwise."""

    @property
    def problem(self) -> str | None:
        """Why the transport cannot deliver now (not connected), or None."""


class Sender:
    """A thread that empties the spool through a transport, oldest first, backing off while it cannot."""

    def __init__(self, spool: Spool, transport: Transport) -> None:
        self.spool = spool
        self.transport = transport
        self.rejected = 0
        self.refused: str | None = None
        self._warned: set[str] = set()
        self._wake = threading.Event()  # a new window: deliver now, unless backing off
        self._urgent = threading.Event()  # a reconnect or a flush: end the back-off
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._backoff = BACKOFF_S[0]
        self._thread = threading.Thread(target=self._loop, name="telemetry-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def retry_now(self) -> None:
        """End a back-off (the broker is back, or the agent is stopping)."""
        self._urgent.set()
        self.wake()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._urgent.clear()
            if self._drain():
                self._backoff = BACKOFF_S[0]
                self._idle.set()
                self._wake.wait()
            else:  # new windows do not end a back-off (4 a second would make it none)
                self._urgent.wait(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_S[1])

    def _drain(self) -> bool:
        """Deliver until the spool is empty (True) or a delivery fails (False)."""
        while not self._stop.is_set():
            batch = self.spool.peek(64)
            if not batch:
                return True
            for key, body in batch:
                try:
                    self.transport.deliver(body)
                except Delivery as exc:
                    if exc.cause not in self._warned:
                        self._warned.add(exc.cause)
                        log.warning("telemetry not delivered (%s)%s", exc.cause,
                                    ": dropped, the registry will never take it" if exc.drop
                                    else f": kept, {len(self.spool)} waiting; retrying with back-off")
                    if not exc.drop:
                        self.refused = exc.cause
                        return False
                    self.rejected += 1
                self.spool.remove(key)
                self.refused = None
        return False

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the spool to empty; returns how many windows still wait."""
        if len(self.spool):
            self.retry_now()
            self._idle.wait(timeout)
        return len(self.spool)

    def health(self) -> TelemetryHealth:
        return TelemetryHealth(pending=len(self.spool), dropped=self.spool.dropped, rejected=self.rejected,
                               degraded=self.spool.degraded, refused=self.refused, broker=self.transport.problem)

    def close(self) -> None:
        self._stop.set()
        self.retry_now()
        self._thread.join(PUBLISH_TIMEOUT_S + 1)
        self.spool.close()


class MqttLink:
    """The agent's MQTT v5 session: a retained status with an "offline" last will, the assignment topic, and
    telemetry delivery (a ``Transport``) that waits for the PUBACK's reason code."""

    def __init__(self, broker_url: str, agent_id: str, username: str | None = None, password: str | None = None,
                 ca_file: Path | None = None) -> None:
        """``mqtts://`` verifies the broker with ``ca_file`` (the registry's ``DATA_DIR/broker/tls/ca.crt``), or with
        the system's CAs without one."""
        import paho.mqtt.client as mqtt

        self.agent_id = agent_id
        self.url = broker_url
        url = urlparse(broker_url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=topics.agent_client_id(agent_id),
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        offline = AgentState(agent_id=agent_id, state="offline").model_dump_json(by_alias=True)
        self.client.will_set(topics.status(agent_id), offline, qos=1, retain=True)
        self.connected = threading.Event()
        self.on_ready: Callable[[], None] = lambda: None  # called on every connect (the sender retries at once)
        self.assignment_changed = threading.Event()
        self._problem: str | None = "not connected yet"
        self.login_refused = False  # the last CONNACK said the login is wrong (a new password may be due)
        self._acks: dict[int, int] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = lambda client, userdata: self._trouble("connection failed")
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda client, userdata, message: self.assignment_changed.set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        tls = url.scheme == "mqtts"
        if tls:
            self.client.tls_set(ca_certs=str(ca_file) if ca_file else None)
        self.client.connect_async(url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), keepalive=10)
        self.client.loop_start()

    def _trouble(self, what: str) -> None:
        problem = f"broker {self.url}: {what}"
        if problem != self._problem:
            log.warning("%s", problem)
        self._problem = problem
        self.connected.clear()
        with self._acked:
            self._acked.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:  # bad login, not authorized, ...: say so; paho keeps retrying
            self.login_refused = reason_code.value in LOGIN_REFUSED
            return self._trouble(f"refused the connection ({reason_code})")
        online = AgentState(agent_id=self.agent_id, state="online").model_dump_json(by_alias=True)
        client.publish(topics.status(self.agent_id), online, qos=1, retain=True)
        client.subscribe(topics.assignment(self.agent_id), qos=1)
        if self._problem and self._problem != "not connected yet":
            log.info("broker %s connected again", self.url)
        self._problem = None
        self.connected.set()
        self.on_ready()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():  # not after a refused connect: the refusal is the news, not its hang-up
            self._trouble(f"disconnected ({reason_code})")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acked:
            self._acks[mid] = reason_code.value
            self._acked.notify_all()

    @property
    def problem(self) -> str | None:
        return self._problem

    def deliver(self, body: str) -> None:
        import paho.mqtt.client as mqtt

        if not self.connected.is_set():
            raise Delivery(self._problem or "broker not connected")
        info = self.client.publish(topics.telemetry(self.agent_id), body, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Delivery(f"publish failed: {mqtt.error_string(info.rc)}")
        with self._acked:
            self._acked.wait_for(lambda: info.mid in self._acks or not self.connected.is_set(), PUBLISH_TIMEOUT_S)
            code = self._acks.pop(info.mid, None)
        if code is None:
            raise Delivery(f"no PUBACK from {self.url} within {PUBLISH_TIMEOUT_S:g} s")
        if code != PUBACK_SUCCESS:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.reasoncodes import ReasonCode

            raise Delivery(f"PUBACK reason code {code} ({ReasonCode(PacketTypes.PUBACK, identifier=code)})")

    def close(self) -> None:
        """A clean disconnect sends no last will, so say "offline" ourselves first."""
        if self.connected.is_set():
            offline = AgentState(agent_id=self.agent_id, state="offline").model_dump_json(by_alias=True)
            info = self.client.publish(topics.status(self.agent_id), offline, qos=1, retain=True)
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError):  # the connection went down meanwhile: the last will says it
                pass
        self.connected.clear()  # our own hang-up is no trouble to warn about
        self.client.disconnect()
        self.client.loop_stop()


class HttpTransport:
    """Telemetry over HTTP (no broker configured): ``POST /telemetry``, stored on a 2xx."""

    #: answers that say the window itself is wrong: sending it again could never succeed
    INVALID = frozenset({400, 413, 422})

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._problem: str | None = None

    @property
    def problem(self) -> str | None:
        return self._problem

    def deliver(self, body: str) -> None:
        try:
            self.client.telemetry(body)
        except RegistryUnavailable as exc:
            self._problem = str(exc)
            raise Delivery(str(exc)) from None
        except RegistryRefused as exc:
            self._problem = None
            raise Delivery(str(exc), drop=exc.status in self.INVALID) from None
        self._problem = None


class Outbox:
    """What the agent holds: the spool, its sender, and the MQTT link (None when telemetry goes over HTTP)."""

    def __init__(self, spool: Spool, transport: Transport, mqtt: MqttLink | None) -> None:
        self.spool = spool
        self.mqtt = mqtt
        self.sender = Sender(spool, transport)
        if mqtt is not None:
            mqtt.on_ready = self.sender.retry_now

    def use(self, mqtt: MqttLink) -> None:
        """Deliver over ``mqtt`` from now on (the broker the registry named after the agent started)."""
        self.mqtt = mqtt
        mqtt.on_ready = self.sender.retry_now
        self.sender.transport = mqtt

    def submit(self, message: Telemetry) -> int:
        """Queue ``message`` for delivery (returns at once); returns how many windows wait."""
        self.spool.put(message)
        self.sender.wake()
        return len(self.spool)

    def close(self, timeout: float) -> int:
        """Deliver what can be delivered within ``timeout`` s (the rest stays on disk), then say offline."""
        left = self.sender.flush(timeout)
        self.sender.close()
        if self.mqtt is not None:
            self.mqtt.close()
        return left
