"""The edge agent with real parts: a torch-free process, its configuration, the package store on real exported
files, the HTTP and socket endpoints a base station calls for precoders, the assignment announced over a
real mosquitto by the real registry, and a full 30 s broker outage while the agent serves. (Registry-side faults and the broker outage: tests/test_fleet.py.)"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgejoule.plugins.precoding.zf import zf_precoder
from edgejoule.schemas.manifest import ModelManifest
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.precoding import sum_rate
from tests.conftest import wait_for

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def agent_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update({"EDGE_AGENT_AGENT_ID": "bs-t", "EDGE_AGENT_SITE": "urban-nlos", "EDGE_AGENT_METER": "cpu_time",
                "EDGE_AGENT_REGISTRY_URL": "http://127.0.0.1:9", "EDGE_AGENT_DATA_DIR": str(tmp_path / "agent"),
                "EDGE_AGENT_IDLE_SECONDS": "0.05", **extra})
    return env


def channels(n: int) -> np.ndarray:
    return load_dataset(get_site("urban-nlos").with_overrides(n_samples=400)).H("test", n)


def test_agent_serves_zf_without_torch_while_the_registry_is_away(tmp_path):
    H = channels(30)
    np.savez(tmp_path / "h.npz", H=H)
    code = BLOCK_TORCH + "from edgejoule.edge_agent.cli import main\nsys.argv = ['edge-agent', 'once', '--inferences', '100']\nmain()\n"
    env = agent_env(tmp_path, EDGE_AGENT_SOURCE=f"npz:{tmp_path / 'h.npz'}", EDGE_AGENT_WINDOW_INFERENCES="10",
                    EDGE_AGENT_TOKEN="t0k", EDGE_AGENT_SHUTDOWN_SECONDS="0.2", EDGE_AGENT_WARMUP_INFERENCES="0")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    windows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [w["inferences"] for w in windows] == [10, 10, 10]  # the file had 30 channels
    assert all(w["fallback"] == "zf" and w["model_id"] is None and w["meter_kind"] == "estimated" for w in windows)
    assert len({w["message_id"] for w in windows}) == 3
    site = get_site("urban-nlos")
    W = zf_precoder(H, site.tx_power_w)
    expected = [float(sum_rate(H[i : i + 10], W[i : i + 10], site.noise_power_w).mean()) for i in (0, 10, 20)]
    assert [w["quality"]["sum_rate"] for w in windows] == pytest.approx(expected, rel=1e-5)
    assert "registry unreachable at http://127.0.0.1:9: " in result.stderr  # the URL and the error


def test_settings_come_from_a_file_and_the_environment_wins(tmp_path):
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"agent_id": "from-file", "site": "campus-los", "window_inferences": 7}))
    env = agent_env(tmp_path, EDGE_AGENT_CONFIG_FILE=str(config))
    del env["EDGE_AGENT_AGENT_ID"], env["EDGE_AGENT_SITE"]
    env["EDGE_AGENT_WINDOW_INFERENCES"] = "9"
    code = "from edgejoule.edge_agent.config import AgentSettings\ns = AgentSettings()\nprint(s.agent_id, s.site, s.window_inferences)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["from-file", "campus-los", "9"], out.stderr
    status = subprocess.run([EDGE_AGENT, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert status.returncode == 0 and json.loads(status.stdout)["current_model"] is None
    bad = subprocess.run([EDGE_AGENT, "status"], capture_output=True, text=True, timeout=60,
                         env={**env, "EDGE_AGENT_BROKER_URL": "tcp://x"})
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "EDGE_AGENT_BROKER_URL" in bad.stderr


def test_mqtt_login_defaults_to_the_agent_id_and_a_password_asked_of_the_registry():
    from edgejoule.edge_agent.config import AgentSettings

    plain = AgentSettings(agent_id="bs-1", site="urban-nlos", token="t0k")
    assert (plain.mqtt_username, plain.mqtt_password) == ("bs-1", None)
    other = AgentSettings(agent_id="bs-1", site="urban-nlos", token="t0k", mqtt_username="u", mqtt_password="p")
    assert (other.mqtt_username, other.mqtt_password) == ("u", "p")
    none = AgentSettings(agent_id="bs-1", site="urban-nlos")
    assert (none.mqtt_username, none.mqtt_password) == (None, None)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgejoule.plugins.export.tflite import export_precoder
    from tests.fleet import make_chosen

    root = tmp_path_factory.mktemp("edge-packages")
    export_precoder(make_chosen(root / "src", [16, 8, 4, 4]), root / "pkg", model_id="tiny-mixed")
    return root / "pkg"


def forged(tmp_path: Path, package: Path, data: bytes, name: str) -> tuple[ModelManifest, Path]:
    """A manifest that vouches for ``data`` (right sha256 and size), as a compromised upload would."""
    import hashlib

    manifest = ModelManifest.model_validate_json((package / "manifest.json").read_text())
    manifest = manifest.model_copy(update={"id": name, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)})
    path = tmp_path / f"{name}.bin"
    path.write_bytes(data)
    return manifest, path


def test_package_store_keeps_the_working_model_through_bad_downloads(package, tmp_path):
    from edgejoule.edge_agent.packages import PackageRejected, PackageStore

    store = PackageStore(tmp_path / "packages")
    good_manifest = ModelManifest.model_validate_json((package / "manifest.json").read_text())
    good = (package / "model.tflite").read_bytes()
    assert store.install(good_manifest, package / "model.tflite").manifest.id == "tiny-mixed"
    H = channels(4)
    reference = store.load().runtime.precode(H)

    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(good[: len(good) // 3])
    flipped = tmp_path / "flipped.tflite"
    flipped.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    cases = [
        (good_manifest, truncated, "truncated"),
        (good_manifest, flipped, "sha256"),
        (*forged(tmp_path, package, b"<html>not a model</html>" * 100, "html"), "not a TFLite"),
        (*forged(tmp_path, package, good[:8] + os.urandom(len(good) - 8), "garbage"), "not a loadable"),
    ]
    for manifest, path, reason in cases:
        with pytest.raises(PackageRejected, match=reason):
            store.install(manifest, path)
        assert store.manifest("current").id == "tiny-mixed" and store.manifest("previous") is None
        assert not list(store.root.glob("staging-*"))
    np.testing.assert_array_equal(store.load().runtime.precode(H), reference)

    second = good_manifest.model_copy(update={"id": "tiny-mixed-2"})
    store.install(second, package / "model.tflite")
    assert (store.manifest("current").id, store.manifest("previous").id) == ("tiny-mixed-2", "tiny-mixed")
    shutil.rmtree(store.current_dir)  # as if the agent died between the two renames of a swap
    assert PackageStore(store.root).manifest("current").id == "tiny-mixed"


def test_base_station_gets_its_precoder_over_http(package, tmp_path):
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageStore
    from edgejoule.edge_agent.sources import open_source
    from tests.brokers import free_port

    settings = AgentSettings(agent_id="bs-h", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                             data_dir=tmp_path / "agent", idle_seconds=0.05, source=f"http:127.0.0.1:{free_port()}")
    manifest = ModelManifest.model_validate_json((package / "manifest.json").read_text())
    PackageStore(settings.packages_dir).install(manifest, package / "model.tflite")
    agent = Agent(settings)
    source = open_source(settings.source, settings.site)
    url = f"http://{settings.source[5:]}/precode"
    messages = []
    server = threading.Thread(target=lambda: messages.append(agent.window(source, 3)))
    server.start()
    H = channels(3)
    answers = []
    with httpx.Client(timeout=30) as client:
        assert client.post(url, content=b"not an npz").status_code == 400
        for h in H:
            body = io.BytesIO()
            np.savez(body, H=h)
            response = client.post(url, content=body.getvalue())
            assert response.status_code == 200
            answers.append(np.load(io.BytesIO(response.content))["W"])
    server.join(30)
    W = np.stack(answers)
    assert W.shape == (3, 64, 4)
    np.testing.assert_allclose(W, agent.package.runtime.precode(H), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sum(np.abs(W) ** 2, axis=(1, 2)), get_site("urban-nlos").tx_power_w, rtol=1e-3)
    (message,) = messages
    assert message.inferences == 3 and message.model_id == "tiny-mixed"
    assert message.quality["sum_rate"] == pytest.approx(float(sum_rate(H, W, get_site("urban-nlos").noise_power_w).mean()), rel=1e-4)


def test_assignment_is_announced_over_mqtt_and_installed(package, tmp_path, mosquitto):
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from tests.fleet import publish, start_registry

    registry = start_registry(tmp_path / "registry", mosquitto.url)
    try:
        with registry.admin() as admin:
            token = admin.post("/agents", json={"agent_id": "bs-m", "site": "urban-nlos"}).json()["token"]
        agent = Agent(AgentSettings(agent_id="bs-m", site="urban-nlos", registry_url=registry.url, token=token,
                                    broker_url=mosquitto.url, meter="cpu_time", data_dir=tmp_path / "agent",
                                    idle_seconds=0.05, poll_seconds=3600))
        try:
            wait_for(agent.mqtt.connected.is_set)
            model_id = publish(registry, package)["id"]
            with registry.admin() as admin:
                assert admin.post("/deployments", json={"site": "urban-nlos", "model_id": model_id}).status_code == 201
            wait_for(agent.mqtt.assignment_changed.is_set)  # no poll would come for an hour
            assert agent.sync() == f"installed {model_id}" and agent.model_id == model_id
        finally:
            agent.close()
    finally:
        registry.stop()


def test_an_agent_without_a_broker_setting_takes_the_one_its_assignment_names(package, tmp_path, mosquitto):
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from tests.fleet import publish, start_registry
    from tests.test_registry_security import metric

    registry = start_registry(tmp_path / "registry", mosquitto.url)
    try:
        with registry.admin() as admin:
            token = admin.post("/agents", json={"agent_id": "bs-b", "site": "urban-nlos"}).json()["token"]
            model_id = publish(registry, package)["id"]
            assert admin.post("/deployments", json={"site": "urban-nlos", "model_id": model_id}).status_code == 201
        agent = Agent(AgentSettings(agent_id="bs-b", site="urban-nlos", registry_url=registry.url, token=token,
                                    meter="cpu_time", data_dir=tmp_path / "agent", idle_seconds=0.05,
                                    window_inferences=50, warmup_inferences=0))
        try:
            assert agent.mqtt is None  # nothing configured: HTTP until the registry names a broker
            agent.start()
            assert agent.model_id == model_id and agent.mqtt is not None and agent.mqtt.url == mosquitto.url
            wait_for(agent.mqtt.connected.is_set)
            agent.once(100)
            wait_for(lambda: metric(registry.url, 'edgejoule_telemetry_ingested_total{via="mqtt"}') == 2,
                     what="both windows stored from MQTT")
            assert metric(registry.url, 'edgejoule_telemetry_ingested_total{via="http"}') == 0
        finally:
            agent.close()
    finally:
        registry.stop()


def _frame(header: dict, payload: bytes = b"") -> bytes:
    """A frame as docs/EDGE.md describes it, built by hand (not with the agent's own code)."""
    data = json.dumps(header).encode()
    return struct.pack(">I", len(data)) + data + payload


def _answer(conn: socket.socket) -> tuple[dict, np.ndarray | None]:
    stream = conn.makefile("rb")
    (length,) = struct.unpack(">I", stream.read(4))
    header = json.loads(stream.read(length))
    if "error" in header:
        return header, None
    shape = header["shape"]
    return header, np.frombuffer(stream.read(int(np.prod(shape)) * 8), dtype="<c8").reshape(shape)


def test_base_station_gets_its_precoder_over_a_socket(package, tmp_path):
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageStore
    from edgejoule.edge_agent.sources import open_source
    from tests.brokers import free_port

    path = tmp_path / "agent.sock"
    settings = AgentSettings(agent_id="bs-s", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                             data_dir=tmp_path / "agent", idle_seconds=0.05, source=f"unix:{path}")
    PackageStore(settings.packages_dir).install(ModelManifest.model_validate_json((package / "manifest.json").read_text()),
                                                package / "model.tflite")
    agent = Agent(settings)
    source = open_source(settings.source, settings.site)
    messages = []
    serving = threading.Thread(target=lambda: messages.append(agent.window(source, 4)))
    serving.start()
    H = channels(4)
    answers = []
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(_frame({"shape": [3, 64]}, H[0, :3].tobytes()))  # well framed, wrong shape: answered, kept open
        error, _ = _answer(conn)
        assert "[4, 64]" in error["error"] and "[3, 64]" in error["error"]
        nan = H[0].copy()
        nan[1, 2] = np.nan
        conn.sendall(_frame({"shape": [4, 64], "dtype": "complex64"}, nan.tobytes()))
        assert "non-finite" in _answer(conn)[0]["error"]
        for h in H[:3]:  # several requests on one connection
            conn.sendall(_frame({"shape": [4, 64]}, h.astype("<c8").tobytes()))
            header, W = _answer(conn)
            assert header["shape"] == [64, 4] and header["dtype"] == "complex64"
            answers.append(W)
    with socket.socket(socket.AF_UNIX) as conn:  # an HTTP request on the socket: framing lost, answered, closed
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(b"POST /precode HTTP/1.1\r\n\r\n")
        assert "header length" in _answer(conn)[0]["error"]
        assert conn.recv(1) == b""
    with socket.socket(socket.AF_UNIX) as conn:  # a header that is not a frame header: its payload size is unknown
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(_frame({"shape": [-4, 64]}))
        assert "not a valid frame header" in _answer(conn)[0]["error"]
        assert conn.recv(1) == b""
    with socket.socket(socket.AF_UNIX) as conn:  # the agent is still serving
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(_frame({"shape": [1, 4, 64]}, H[3].tobytes()))
        answers.append(_answer(conn)[1])
    serving.join(30)
    W = np.stack(answers)
    np.testing.assert_allclose(W, agent.package.runtime.precode(H), rtol=1e-5, atol=1e-7)  # LiteRT on the same H
    np.testing.assert_allclose(np.sum(np.abs(W) ** 2, axis=(1, 2)), get_site("urban-nlos").tx_power_w, rtol=1e-3)
    (message,) = messages
    assert message.inferences == 4 and message.model_id == "tiny-mixed"  # the refused frames were not served
    assert message.quality["sum_rate"] == pytest.approx(float(sum_rate(H, W, get_site("urban-nlos").noise_power_w).mean()), rel=1e-4)

    port = free_port()  # the same frames over TCP loopback
    tcp = open_source(f"tcp:127.0.0.1:{port}", "urban-nlos")
    serving = threading.Thread(target=lambda: messages.append(agent.window(tcp, 1)))
    serving.start()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(_frame({"shape": [4, 64]}, H[0].tobytes()))
        np.testing.assert_array_equal(_answer(conn)[1], W[0])
    serving.join(30)
    assert messages[-1].inferences == 1


def test_a_30_s_broker_outage_loses_no_telemetry_and_repeats_at_most_what_was_in_flight(tmp_path):
    """The acceptance fault, at full length: mosquitto stopped for 30 s while the agent serves and reports,
    restarted on the same port; a subscriber whose session the broker keeps on disk sees every message id.
    QoS 1 is at least once: a window whose PUBACK the stop cut off comes again (paho resends its own copy
    after the reconnect, and the spool still holds it), which the registry's message ids make harmless
    (tests/test_fleet.py::test_broker_outage_loses_and_duplicates_nothing). The sender has one window in
    flight at a time, so one outage repeats a few at most, never the spool. (About 40 s.)"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.schemas import topics
    from tests.brokers import Mosquitto

    workdir = Path(tempfile.mkdtemp(prefix="mosquitto-"))  # pytest's tmp_path is closed to other users
    store = workdir / "db"
    store.mkdir()
    if os.geteuid() == 0:  # mosquitto drops to its own user and writes its database on shutdown
        shutil.chown(store, "mosquitto")
    broker = Mosquitto(extra_config=["persistence true", f"persistence_location {store}/"], workdir=workdir).start()
    received: list[str] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="outage-subscriber", protocol=mqtt.MQTTv5)
    subscriber.on_message = lambda client, userdata, msg: received.append(json.loads(msg.payload)["message_id"])
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *args: subscribed.set()
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 600  # the broker queues QoS 1 messages for us while we are away
    subscriber.reconnect_delay_set(1, 2)
    subscriber.connect("127.0.0.1", broker.port, clean_start=False, properties=session)
    subscriber.subscribe(topics.telemetry("bs-o"), qos=1)
    subscriber.loop_start()
    agent = Agent(AgentSettings(agent_id="bs-o", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                                broker_url=broker.url, data_dir=tmp_path / "agent", idle_seconds=0.05,
                                window_inferences=25))
    sent: list[str] = []
    report = agent.report

    def counted(message):
        sent.append(message.message_id)
        return report(message)

    agent.report = counted
    spool = agent.outbox.spool
    H = channels(50)

    def base_station():  # a channel every 10 ms: a window and a message every ~0.25 s
        while True:
            for h in H:
                time.sleep(0.01)
                yield h, None

    serving = threading.Thread(target=agent.run, kwargs={"source": base_station()})
    try:
        assert subscribed.wait(10)
        wait_for(agent.mqtt.connected.is_set)
        serving.start()
        wait_for(lambda: len(received) >= 3 and len(spool) == 0)
        broker.stop()
        outage = time.monotonic()
        while time.monotonic() - outage < 30:
            time.sleep(1)
            assert serving.is_alive()  # the agent keeps serving and reporting into its spool
        spooled, during = len(spool), len(sent)
        assert spooled >= 20, spooled  # ~4 windows a second were served and spooled
        broker.start()  # same port; the subscriber's session comes back from the broker's database
        wait_for(lambda: len(spool) == 0 and len(sent) > during, timeout=40)  # reconnected, spool replayed
        agent.stop.set()
        serving.join(30)
        wait_for(lambda: agent.outbox.sender.flush(5) == 0)
        wait_for(lambda: set(received) >= set(sent), timeout=30)
        time.sleep(1)  # a late repeat would arrive now
    finally:
        agent.stop.set()
        agent.close()
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert len(set(sent)) == len(sent)
    assert set(received) == set(sent)  # every window arrived, and nothing the agent did not send
    repeats = len(received) - len(set(received))
    assert repeats <= 3, f"{repeats} windows came twice: more than the one in flight at the stop"


def test_a_manifest_this_agent_cannot_read_is_a_failed_load_not_a_crash(tmp_path):
    """A registry newer than the agent may serve a manifest of a later schema (a package whose meaning changed):
    the agent's client says so in one readable error, which the agent reports as a failed load (the registry
    then rolls it back), instead of a validation traceback."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from edgejoule.edge_agent.registry_client import RegistryClient
    from edgejoule.errors import EdgejouleError
    from edgejoule.schemas.api import API_PREFIX, Assignment

    newer = {"schema": 3, "id": "m-next", "site": "urban-nlos"}

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(newer).encode()
            self.send_response(200 if self.path == f"{API_PREFIX}/models/m-next/manifest" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RegistryClient(f"http://127.0.0.1:{server.server_port}", "bs-t", "token")
        assignment = Assignment(agent_id="bs-t", model_id="m-next", version=3, sha256="0" * 64, size_bytes=1,
                                manifest_url=f"{API_PREFIX}/models/m-next/manifest",
                                package_url=f"{API_PREFIX}/models/m-next/package")
        with pytest.raises(EdgejouleError, match=r"manifest of m-next is not readable by this agent \(schema: "):
            client.manifest(assignment)
    finally:
        server.shutdown()


def test_every_package_failure_ends_in_rollback_or_zf(package, tmp_path):
    """A manifest with ``inputs: []`` crashed the agent (IndexError) on every start; a corrupt
    ``current/manifest.json`` stopped it from starting and broke ``edge-agent status``; a manifest claiming
    ``in_graph: false`` for a graph that normalizes installed and served worse precoders."""
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageRejected, PackageStore

    settings = AgentSettings(agent_id="bs-p", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                             data_dir=tmp_path / "agent", idle_seconds=0.01, warmup_inferences=0, shutdown_seconds=0.2)
    store = PackageStore(settings.packages_dir)
    good = ModelManifest.model_validate_json((package / "manifest.json").read_text())
    model = package / "model.tflite"
    store.install(good, model)
    agent = Agent(settings)
    try:
        no_inputs = good.model_copy(update={"id": "no-inputs", "inputs": []})
        with pytest.raises(PackageRejected, match="no-inputs"):  # refused, whichever check sees it first
            store.install(no_inputs, model, agent._check)
        # what a double normalization looks like to the agent (2.72 -> 2.36 in the field; this tiny network
        # barely cares about its input scale): a package far below the sum rate its manifest claims
        below = good.model_copy(update={"id": "below", "metrics": {**good.metrics,
                                                                   "sum_rate_litert": 1.3 * good.metrics["sum_rate_litert"]}})
        with pytest.raises(PackageRejected, match=r"below: self-test failed: sum rate .* the manifest claims"):
            store.install(below, model, agent._check)
        assert store.manifest().id == "tiny-mixed"
        store.install(good.model_copy(update={"id": "tiny-mixed-2"}), model, agent._check)  # a good one passes
    finally:
        agent.close()

    (store.current_dir / "manifest.json").write_text('{"id": "tiny-mixed-2", "schema": ')  # corrupt on disk
    env = agent_env(tmp_path, EDGE_AGENT_DATA_DIR=str(settings.data_dir))
    status = subprocess.run([EDGE_AGENT, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "current/manifest.json is unreadable" in json.loads(status.stdout)["current_problem"]
    agent = Agent(settings)  # starts: the corrupt one set aside, the previous one served, and said so
    try:
        assert agent.model_id == "tiny-mixed" and "tiny-mixed-2 unusable, set aside" in agent.health().package_problem
        assert (store.root / "rejected" / "manifest.json").exists()
        assert [(e.model_id, e.outcome) for e in agent._failed_loads] == [("tiny-mixed-2", "load_failed")]
    finally:
        agent.close()
    (store.current_dir / "manifest.json").write_text("[]")  # and with no previous package: ZF
    agent = Agent(settings)
    try:
        assert agent.package is None and agent.health().fallback == "zf"
    finally:
        agent.close()


def test_precode_refuses_an_npz_that_would_inflate_before_inflating_it(tmp_path):
    """A 969 KiB zip bomb cost ~1 GB per request. Its members' sizes are now read from the zip directory and
    the .npy header first: 400, and the agent's peak memory does not move."""
    import resource
    import zipfile

    from edgejoule.edge_agent.sources import PrecodeEndpoint
    from tests.brokers import free_port

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:  # 256 MiB of zeros, written in 1 MiB steps
        with archive.open("H.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, {"descr": "<c8", "fortran_order": False,
                                                          "shape": (4096, 8192)})
            zeros = bytes(1 << 20)
            for _ in range(256):
                member.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    liar = io.BytesIO()  # a header that asks for 2^40 values in a member of one channel's size
    with zipfile.ZipFile(liar, "w") as archive:
        with archive.open("H.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<c8", "fortran_order": False, "shape": (1 << 20, 1 << 20)})
            member.write(bytes(4 * 64 * 8))
    stop = threading.Event()
    endpoint = PrecodeEndpoint("127.0.0.1", free_port(), 4, 64, stop)
    url = f"http://127.0.0.1:{endpoint.port}/precode"
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with httpx.Client(timeout=30) as client:
            answer = client.post(url, content=bomb.read_bytes())
            assert answer.status_code == 400 and "more than one [N_U, N_T] = [4, 64] channel" in answer.text
            answer = client.post(url, content=liar.getvalue())
            assert answer.status_code == 400 and "[4, 64]" in answer.text
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 20 * 1024  # kB: under 20 MB
    finally:
        stop.set()
        endpoint.close()


def test_the_first_window_carries_no_start_up_cost(tmp_path):
    """In a fresh process the first window cost many times the next ones (5,974 vs 174 uJ in the field: the site's
    channels were generated inside it), averaged into the fleet's view. The source is now read before serving,
    and the first ``warmup_inferences`` after a load are served but not measured."""
    env = agent_env(tmp_path, EDGE_AGENT_TOKEN="t0k", EDGE_AGENT_WINDOW_INFERENCES="50", EDGE_AGENT_SHUTDOWN_SECONDS="0.2",
                    EDGEJOULE_CACHE=str(tmp_path / "empty-cache"))
    result = subprocess.run([EDGE_AGENT, "once", "--inferences", "300"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    energy = [json.loads(line)["energy_total_uj"] for line in result.stdout.splitlines()]
    assert len(energy) == 6
    assert energy[0] < 2 * float(np.median(energy[1:])), energy


def test_a_package_reports_its_estimate_only_under_the_fleets_counting():
    """The fleet compares a model's estimate with the classical methods' counted ``implemented`` energy; a package
    whose estimate is of the ``paper`` counting (exported before the other existed) reported it as if comparable."""
    from edgejoule.edge_agent.packages import LoadedPackage
    from tests.registry_parts import package

    for counting, expected in (("implemented", 3.0), ("paper", None)):
        manifest = ModelManifest.model_validate_json(package("m", energy_uj=3.0, counting=counting)[0])
        assert LoadedPackage(manifest, runtime=None).estimated_energy_uj == expected
