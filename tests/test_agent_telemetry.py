"""The agent's telemetry path (issue 18 items 4 and 5, issue 22 item 3): a durable SQLite spool with constant
cost and a cap, an unusable spool that never stops serving, the HTTP path spooled like MQTT, PUBACK reason codes
that keep what the broker did not store, and a frozen broker that adds nothing to serving. Real mosquitto and a
real registry; only the spool's disk trouble is made by hand."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edgejoule.edge_agent.agent import Agent
from edgejoule.edge_agent.config import AgentSettings
from edgejoule.edge_agent.sources import open_source
from edgejoule.edge_agent.telemetry import SPOOL_FILE, Spool
from edgejoule.schemas import topics
from edgejoule.schemas.messages import Telemetry
from tests.brokers import Mosquitto, free_port
from tests.conftest import wait_for

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def window(i: int = 0) -> Telemetry:
    return Telemetry(agent_id="bs-t", site="urban-nlos", window_start="2026-01-01T00:00:00Z",
                     window_end="2026-01-01T00:00:01Z", inferences=10 + i, meter="cpu_time", meter_kind="estimated",
                     energy_total_uj=1.0, energy_dynamic_uj=1.0, idle_power_w=0.0, latency_ms_p50=0.1,
                     latency_ms_p95=0.1, latency_ms_p99=0.1)


def agent(tmp_path: Path, **extra) -> Agent:
    settings = dict(agent_id="bs-t", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                    data_dir=tmp_path / "agent", idle_seconds=0.01, window_inferences=10, warmup_inferences=0,
                    shutdown_seconds=0.5)
    return Agent(AgentSettings(**{**settings, **extra}))


def test_spool_write_cost_is_constant_at_100000_queued_and_the_cap_drops_the_oldest(tmp_path):
    spool = Spool(tmp_path, max_messages=100_000)
    spool.put(window())
    spool.close()
    body = window().model_dump_json(by_alias=True)
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:  # 100,000 waiting, as after ~7 h of outage
        db.executemany("INSERT INTO messages (body) VALUES (?)", ((body,) for _ in range(99_999)))
    spool = Spool(tmp_path, max_messages=100_000)
    assert len(spool) == 100_000
    messages = [window(i) for i in range(200)]
    started = time.perf_counter()
    for message in messages:
        spool.put(message)
    per_message = (time.perf_counter() - started) / len(messages)
    assert per_message < 2e-3, per_message  # the file-per-message spool took 128 ms at 20,000
    assert len(spool) == 100_000 and spool.dropped == 200  # at the cap the oldest go, counted
    assert [json.loads(b)["inferences"] for _, b in spool.peek(3)] == [10, 10, 10]
    spool.close()

    small = Spool(tmp_path / "small", max_messages=3)
    for i in range(5):
        small.put(window(i))
    assert (len(small), small.dropped) == (3, 2)
    key, body = small.peek(1)[0]
    assert json.loads(body)["inferences"] == 12  # windows 0 and 1 were dropped
    small.remove(key)
    small.close()
    again = Spool(tmp_path / "small", max_messages=3)  # on disk: a restart keeps what waits
    assert [json.loads(b)["inferences"] for _, b in again.peek(10)] == [13, 14]
    again.close()


def test_an_unusable_spool_keeps_the_agent_serving_and_says_so(tmp_path):
    """A spool directory that cannot be used (here a file where the directory should be: unwritable for root
    too) crashed the agent on its first report. Now it serves, keeps windows in memory, and says so."""
    data = tmp_path / "agent"
    data.mkdir()
    (data / "spool").write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update(EDGE_AGENT_AGENT_ID="bs-t", EDGE_AGENT_SITE="urban-nlos", EDGE_AGENT_TOKEN="t0k",
               EDGE_AGENT_REGISTRY_URL="http://127.0.0.1:9", EDGE_AGENT_METER="cpu_time",
               EDGE_AGENT_DATA_DIR=str(data), EDGE_AGENT_IDLE_SECONDS="0.01", EDGE_AGENT_WINDOW_INFERENCES="20",
               EDGE_AGENT_SHUTDOWN_SECONDS="0.2")
    once = subprocess.run([EDGE_AGENT, "once", "--inferences", "60"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert once.returncode == 0, once.stderr
    assert len(once.stdout.splitlines()) == 3  # every window served
    assert "spool" in once.stderr and "in memory" in once.stderr
    status = json.loads(subprocess.run([EDGE_AGENT, "status"], capture_output=True, text=True, env=env,
                                       timeout=60).stdout)
    assert status["agent"]["telemetry"]["degraded"].startswith(f"spool {data / 'spool' / SPOOL_FILE} unusable")

    a = agent(tmp_path)  # in process: the heartbeat carries it too
    try:
        source = open_source("replay", "urban-nlos", a.stop)
        for _ in range(3):
            a.report(a.window(source, 10))
        beat = a._beat()
        assert beat.telemetry.degraded and beat.telemetry.pending == 3
    finally:
        a.close()


def test_http_telemetry_waits_in_the_spool_while_the_registry_is_down(tmp_path, monkeypatch):
    """Without a broker the windows go over HTTP; with the registry down they were dropped. Now they wait and
    are stored once the registry is back (on the same port)."""
    import tests.fleet as fleet

    port = free_port()
    monkeypatch.setattr(fleet, "free_port", lambda: port)
    registry = fleet.start_registry(tmp_path / "registry", None)
    with registry.admin() as admin:
        token = admin.post("/agents", json={"agent_id": "bs-t", "site": "urban-nlos"}).json()["token"]
    registry.stop()
    a = agent(tmp_path, registry_url=f"http://127.0.0.1:{port}", token=token)
    try:
        source = open_source("replay", "urban-nlos", a.stop)
        for _ in range(3):
            a.report(a.window(source, 10))
        assert a.outbox.sender.flush(0.5) == 3
        assert "unreachable" in a.health().telemetry.broker  # the transport's problem, named
        registry = fleet.start_registry(tmp_path / "registry", None)
        assert a.outbox.sender.flush(20) == 0
        with registry.admin() as admin:
            assert admin.get("/fleet", params={"group_by": "agent"}).json()[0]["windows"] == 3
    finally:
        a.close()
        registry.stop()


def test_puback_refusals_keep_the_windows_and_say_why(tmp_path, caplog):
    """Reason 135 (the ACL refuses the topic) and 16 (nobody subscribed) kept nothing: the windows were deleted
    as if stored. Now all stay in the spool, one warning per cause, shown in the health; once the broker
    stores them they go."""
    acl = Path(tempfile.mkdtemp(prefix="mosquitto-acl-")) / "acl"
    acl.write_text("topic read edgejoule/#\n")  # anonymous clients may read, not publish
    os.chmod(acl.parent, 0o755)
    os.chmod(acl, 0o644)
    refusing = Mosquitto(extra_config=[f"acl_file {acl}"]).start()
    a = agent(tmp_path, broker_url=refusing.url)
    try:
        wait_for(a.mqtt.connected.is_set)
        source = open_source("replay", "urban-nlos", a.stop)
        with caplog.at_level(logging.WARNING, "edge_agent.telemetry"):
            for _ in range(10):
                a.report(a.window(source, 10))
            wait_for(lambda: a.health().telemetry.refused)
            assert a.outbox.sender.flush(1) == 10  # 10 of 10 kept
        assert "135" in a.health().telemetry.refused
        assert sum("135" in r.getMessage() for r in caplog.records) == 1  # warned once for the cause
    finally:
        a.close()
        refusing.stop()
        shutil.rmtree(acl.parent, ignore_errors=True)

    plain = Mosquitto().start()
    a = agent(tmp_path, broker_url=plain.url)  # the same spool: the 10 are still there
    received: list[str] = []
    try:
        wait_for(a.mqtt.connected.is_set)
        assert wait_for(lambda: (a.health().telemetry.refused or "").startswith("PUBACK reason code 16"))
        assert len(a.outbox.spool) == 10
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="registry-stand-in", protocol=mqtt.MQTTv5)
        subscriber.on_message = lambda client, userdata, msg: received.append(json.loads(msg.payload)["message_id"])
        subscribed = threading.Event()  # until the SUBACK, the broker still answers 16 and the sender backs off
        subscriber.on_subscribe = lambda *args: subscribed.set()
        subscriber.connect("127.0.0.1", plain.port)
        subscriber.subscribe(topics.telemetry("bs-t"), qos=1)
        subscriber.loop_start()
        assert subscribed.wait(10)
        assert a.outbox.sender.flush(20) == 0  # now stored: all delivered, none lost
        wait_for(lambda: len(set(received)) == 10)
        assert a.health().telemetry.refused is None
        subscriber.loop_stop()
        subscriber.disconnect()
    finally:
        a.close()
        plain.stop()


def test_a_broker_that_refuses_the_login_is_reported(tmp_path):
    workdir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
    os.chmod(workdir, 0o755)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(workdir / "passwd"), "bs-t", "right"], check=True,
                   capture_output=True)
    os.chmod(workdir / "passwd", 0o644)
    broker = Mosquitto(extra_config=[f"password_file {workdir / 'passwd'}"], workdir=workdir).start()
    a = agent(tmp_path, broker_url=broker.url, mqtt_username="bs-t", mqtt_password="wrong")
    try:
        problem = wait_for(lambda: a.health().telemetry.broker if "refused" in (a.health().telemetry.broker or "") else None)
        assert broker.url in problem and "refused the connection" in problem
    finally:
        a.close()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_frozen_broker_adds_nothing_to_serving(tmp_path):
    """SIGSTOP the broker: publishing waited up to 5 s on the serving thread. Now a report only appends to the
    spool; serving goes on at its pace, and after SIGCONT every window arrives."""
    broker = Mosquitto().start()
    received: set[str] = set()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="registry-stand-in", protocol=mqtt.MQTTv5)
    subscriber.on_message = lambda client, userdata, msg: received.add(json.loads(msg.payload)["message_id"])
    subscriber.reconnect_delay_set(1, 2)
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe(topics.telemetry("bs-t"), qos=1)
    subscriber.loop_start()
    a = agent(tmp_path, broker_url=broker.url)
    sent: list[str] = []
    try:
        wait_for(a.mqtt.connected.is_set)
        source = open_source("replay", "urban-nlos", a.stop)

        def serve_for(seconds: float) -> list[float]:
            costs = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                message = a.window(source, 10)
                t0 = time.perf_counter()
                a.report(message)
                costs.append(time.perf_counter() - t0)
                sent.append(message.message_id)
            return costs

        running = serve_for(1.0)
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            frozen = serve_for(3.0)
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert max(frozen) < 0.05, max(frozen)  # was 5 s per report
        assert statistics.median(frozen) < max(5 * statistics.median(running), 1e-3)
        assert a.outbox.sender.flush(60) == 0
        wait_for(lambda: received >= set(sent), timeout=30)
    finally:
        a.close()
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()
