"""The registry's MQTT side against a real mosquitto: ingest through the shared subscription (idempotent,
split between workers, nothing lost across a restart), heartbeats, last will, load events with automatic
rollback announced on the agent's assignment topic, and the broker ACL of ``registry serve`` (secure by default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import create_engine, func, select

from edgejoule.registry.db import TelemetryRow
from edgejoule.schemas import topics
from edgejoule.schemas.api import Assignment, LoadEvent
from edgejoule.schemas.messages import AgentState, Heartbeat
from tests.brokers import free_port
from tests.conftest import run_cli, wait_for  # noqa: E402
from tests.fleet import start_registry
from tests.postgres import database_url, postgres_server  # noqa: F401 (fixtures)
from tests.registry_parts import mqtt_password, package, register, upload, window


def agent_client(broker_url: str, agent_id: str, username: str | None = None, password: str | None = None,
                 will: bool = False) -> mqtt.Client:
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"agent-{agent_id}-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if will:
        client.will_set(topics.status(agent_id), AgentState(agent_id=agent_id, state="offline").model_dump_json(by_alias=True),
                        qos=1, retain=True)
    client.connect(host, int(port))
    client.loop_start()
    return client


def publish_all(client: mqtt.Client, topic: str, payloads: list[str]) -> None:
    infos = [client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(10)




def stored_windows(admin: httpx.Client) -> int:
    return sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json())


def test_ingest_heartbeat_last_will_and_rollback_over_mqtt(tmp_path, mosquitto):
    registry = start_registry(tmp_path / "data", mosquitto.url)
    try:
        with registry.admin() as admin:
            for model_id in ("v1", "v2"):
                upload(admin, *package(model_id))
            register(admin, "bs-1")
            admin.post("/deployments", json={"site": "urban-nlos", "model_id": "v1"}).raise_for_status()
            wait_for(lambda: httpx.get(registry.url + "/healthz").json()["mqtt"], what="the registry's subscription")
            agent = agent_client(mosquitto.url, "bs-1", will=True)
            announced: list[Assignment] = []
            agent.on_message = lambda c, u, m: announced.append(Assignment.model_validate_json(m.payload))
            agent.subscribe(topics.assignment("bs-1"), qos=1)
            admin.post("/deployments", json={"site": "urban-nlos", "model_id": "v2"}).raise_for_status()
            wait_for(lambda: [a for a in announced if a.model_id == "v2"], what="the v2 announcement")

            messages = [window("bs-1", "v2", i, inferences=10) for i in range(300)]
            payloads = [m.model_dump_json(by_alias=True) for m in messages]
            publish_all(agent, topics.telemetry("bs-1"), payloads + payloads[:50])  # 50 redelivered
            publish_all(agent, topics.telemetry("bs-1"), ["{not json", window("bs-2", "v2", 0).model_dump_json()])
            publish_all(agent, topics.heartbeat("bs-1"), [Heartbeat(agent_id="bs-1", site="urban-nlos", runtime="litert",
                                                                    current_model_id="v2").model_dump_json(by_alias=True)])
            publish_all(agent, topics.status("bs-1"), [AgentState(agent_id="bs-1", state="online").model_dump_json(by_alias=True)])
            wait_for(lambda: stored_windows(admin) == 300, what="300 stored windows")
            time.sleep(0.5)
            assert stored_windows(admin) == 300  # duplicates, malformed and mislabelled messages were not stored
            state = wait_for(lambda: (a := admin.get("/agents").json()[0])["runtime"] == "litert" and a)
            assert (state["state"], state["current_model_id"]) == ("online", "v2")
            metrics = httpx.get(registry.url + "/metrics").text
            assert 'edgejoule_telemetry_ingested_total{via="mqtt"} 300.0' in metrics
            assert "edgejoule_telemetry_duplicates_total 50.0" in metrics

            # v2 fails its self-test: the registry rolls the agent back and announces v1 on its topic
            event = LoadEvent(agent_id="bs-1", model_id="v2", outcome="selftest_failed", detail="parity")
            publish_all(agent, topics.events("bs-1"), [event.model_dump_json()])
            rolled = wait_for(lambda: [a for a in announced if a.model_id == "v1"], what="the rollback announcement")
            assert rolled[-1].sha256 == admin.get("/models/v1/manifest").json()["sha256"]

            # the agent vanishes without a DISCONNECT: the broker publishes its last will
            agent.loop_stop()
            agent.socket().close()
            wait_for(lambda: admin.get("/agents").json()[0]["state"] == "offline", what="the last will")
    finally:
        registry.stop()


def test_restart_during_ingest_loses_nothing(tmp_path, mosquitto, database_url):
    registry = start_registry(tmp_path / "data", mosquitto.url, database_url)
    with registry.admin() as admin:
        register(admin, "bs-1")
    wait_for(lambda: httpx.get(registry.url + "/healthz").json()["mqtt"], what="the subscription")
    agent = agent_client(mosquitto.url, "bs-1")
    payloads = [window("bs-1", None, i, inferences=1).model_dump_json(by_alias=True) for i in range(3000)]
    publisher = threading.Thread(target=lambda: [publish_all(agent, topics.telemetry("bs-1"), payloads[i:i + 100]) or
                                                 time.sleep(0.02) for i in range(0, 3000, 100)])
    publisher.start()
    time.sleep(0.3)
    registry.stop()  # mid-ingest: what the broker acknowledged to the agent is queued or redelivered
    with create_engine(database_url).connect() as conn:
        before = conn.scalar(select(func.count()).select_from(TelemetryRow))
    publisher.join(60)
    assert 0 < before < 3000
    registry = start_registry(tmp_path / "data", mosquitto.url, database_url)
    try:
        with registry.admin() as admin:
            wait_for(lambda: stored_windows(admin) == 3000, what="all 3000 windows after the restart")
    finally:
        registry.stop()
        agent.loop_stop()


def test_two_registry_workers_split_the_shared_subscription(tmp_path, mosquitto, monkeypatch):
    workers = []
    for i in range(2):
        monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_CLIENT_ID", f"registry-{i}")
        workers.append(start_registry(tmp_path / "data", mosquitto.url))
    try:
        with workers[0].admin() as admin:
            register(admin, "bs-1")
            for w in workers:
                wait_for(lambda: httpx.get(w.url + "/healthz").json()["mqtt"], what="both subscriptions")
            agent = agent_client(mosquitto.url, "bs-1")
            publish_all(agent, topics.telemetry("bs-1"),
                        [window("bs-1", None, i, inferences=1).model_dump_json(by_alias=True) for i in range(1000)])
            wait_for(lambda: stored_windows(admin) == 1000, what="1000 stored windows")
        shares = [float(httpx.get(w.url + "/metrics").text.split('edgejoule_telemetry_ingested_total{via="mqtt"} ')[1]
                        .split()[0]) for w in workers]
        assert sum(shares) == 1000 and min(shares) > 0, shares
    finally:
        for w in workers:
            w.stop()


@pytest.mark.skipif(not os.path.exists("/usr/sbin/mosquitto"), reason="needs the mosquitto package")
def test_embedded_broker_is_secure_by_default_and_confines_each_agent_to_its_topics(tmp_path):
    port = free_port()
    env = {**os.environ, "EDGEJOULE_REGISTRY_ADMIN_TOKEN": "admin-" + "y" * 20}
    exe = Path(sys.executable).parent / "edgejoule"
    server = subprocess.Popen([str(exe), "registry", "serve", "--port", str(port),
                               "--data-dir", str(tmp_path / "data")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), what="registry serve")
        admin = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": "Bearer " + env["EDGEJOULE_REGISTRY_ADMIN_TOKEN"]})
        tokens = {a: register(admin, a) for a in ("bs-a", "bs-b")}
        passwords = {a: mqtt_password(admin, a) for a in tokens}
        broker = (tmp_path / "data" / "broker-url").read_text()
        results: dict[int, mqtt.ReasonCode] = {}
        agent = wait_for(lambda: _connected(broker, "bs-a", passwords["bs-a"]), what="the agent's broker login")
        agent.on_publish = lambda c, u, mid, reason_code, properties: results.__setitem__(mid, reason_code)
        own = agent.publish(topics.telemetry("bs-a"), window("bs-a", None, 0).model_dump_json(by_alias=True), qos=1)
        other = agent.publish(topics.telemetry("bs-b"), window("bs-b", None, 0).model_dump_json(by_alias=True), qos=1)
        wait_for(lambda: own.mid in results and other.mid in results, what="both PUBACKs")
        assert results[own.mid].value == 0
        assert results[other.mid].value == 135  # Not authorized
        wait_for(lambda: stored_windows(admin) == 1, what="the agent's own telemetry")
        assert admin.get("/fleet", params={"group_by": "agent"}).json()[0]["agent_id"] == "bs-a"
        assert _connected(broker, "bs-a", passwords["bs-b"]) is None  # another agent's password
        assert _connected(broker, "bs-a", tokens["bs-a"]) is None  # its token is not its broker password
        assert _connected(broker, "bs-a", None) is None  # anonymous
        agent.loop_stop()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    assert env["EDGEJOULE_REGISTRY_ADMIN_TOKEN"] not in server.stdout.read()
    assert not any(secret in (tmp_path / "data" / "registry.db").read_bytes().decode(errors="replace")
                   for secret in [*tokens.values(), *passwords.values()])


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz").json()["mqtt"] is True
    except httpx.HTTPError:
        return False


def _connected(broker_url: str, agent_id: str, password: str | None) -> mqtt.Client | None:
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=topics.agent_client_id(agent_id),
                         protocol=mqtt.MQTTv5)
    if password is not None:
        client.username_pw_set(agent_id, password)
    outcome: list = []
    client.on_connect = lambda c, u, flags, reason_code, properties: outcome.append(reason_code)
    client.connect(host, int(port))
    client.loop_start()
    wait_for(lambda: outcome, timeout=5, what="CONNACK")
    if outcome[0].is_failure:
        client.loop_stop()
        return None
    return client


def _mqtt_stored(worker) -> float:
    return float(httpx.get(worker.url + "/metrics").text.split('edgejoule_telemetry_ingested_total{via="mqtt"} ')[1]
                 .split()[0])


def test_a_worker_stopped_cleanly_or_retired_hands_its_share_to_the_other(tmp_path, mosquitto, monkeypatch):
    """Two workers split the shared subscription. One stops cleanly with MQTT_RETIRE_ON_STOP: the other stores all
    of a 20,000-window burst. One dies (its session stays, and with it a share of what follows): ``edgejoule
    registry retire-worker`` stores what the broker kept for it and ends the session."""
    monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_RETIRE_ON_STOP", "true")
    workers = []
    for i in range(2):
        monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_CLIENT_ID", f"registry-{i}")
        workers.append(start_registry(tmp_path / "data", mosquitto.url))
    try:
        for w in workers:
            wait_for(lambda: httpx.get(w.url + "/readyz").status_code == 200, what="both subscriptions")
        with workers[0].admin() as admin:
            register(admin, "bs-1")
        workers[1].stop()
        agent = agent_client(mosquitto.url, "bs-1")
        payloads = [window("bs-1", None, i, inferences=1).model_dump_json(by_alias=True) for i in range(23_000)]
        publish_all(agent, topics.telemetry("bs-1"), payloads[:20_000])
        wait_for(lambda: _mqtt_stored(workers[0]) == 20_000, timeout=120, what="all 20,000 windows at the other worker")

        monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_RETIRE_ON_STOP", "false")
        monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_CLIENT_ID", "registry-dead")
        dead = start_registry(tmp_path / "data", mosquitto.url)
        wait_for(lambda: httpx.get(dead.url + "/readyz").status_code == 200, what="the doomed worker's subscription")
        dead.stop()  # as if it died: its session stays and takes a share of what follows
        publish_all(agent, topics.telemetry("bs-1"), payloads[20_000:22_000])
        wait_for(lambda: _mqtt_stored(workers[0]) > 20_000, what="the live worker's share")
        time.sleep(1.0)
        assert _mqtt_stored(workers[0]) < 22_000  # the rest waits for the dead worker's session
        retired = run_cli("registry", "retire-worker", "--client-id", "registry-dead", env={
            "EDGEJOULE_REGISTRY_ADMIN_TOKEN": workers[0].admin_token, "EDGEJOULE_REGISTRY_DATA_DIR": str(tmp_path / "data"),
            "EDGEJOULE_REGISTRY_BROKER_URL": mosquitto.url})
        assert retired.returncode == 0, retired.stderr
        with workers[0].admin() as admin:
            wait_for(lambda: stored_windows(admin) == 22_000, what="the dead worker's share, stored by retire-worker")
            publish_all(agent, topics.telemetry("bs-1"), payloads[22_000:])
            wait_for(lambda: stored_windows(admin) == 23_000, what="what follows, all at the live worker")
        agent.loop_stop()
    finally:
        workers[0].stop()
