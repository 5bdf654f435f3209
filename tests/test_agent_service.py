"""The agent as a service (issue 18 items 1, 2 and 7): a bad setting stops it with one line and exit 2 before
anything is served, the registry refuses an agent configured for another site, and SIGTERM ends `edge-agent
run` cleanly (requests answered and counted, "offline" at once, exit 0) while systemd's notify socket, the
watchdog, the health endpoint and JSON logs work. Real registry, real mosquitto, the installed command."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgejoule.schemas import topics
from edgejoule.sites import get_site, load_dataset
from tests.brokers import free_port
from tests.conftest import run_cli, wait_for
from tests.fleet import start_registry

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def agent_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update({"EDGE_AGENT_AGENT_ID": "bs-s", "EDGE_AGENT_SITE": "urban-nlos", "EDGE_AGENT_METER": "cpu_time",
                "EDGE_AGENT_TOKEN": "t0k", "EDGE_AGENT_REGISTRY_URL": "http://127.0.0.1:9",
                "EDGE_AGENT_DATA_DIR": str(tmp_path / "agent"), "EDGE_AGENT_IDLE_SECONDS": "0.01",
                "EDGE_AGENT_WINDOW_INFERENCES": "20", "EDGE_AGENT_SHUTDOWN_SECONDS": "0.5", **extra})
    return env


def once(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([EDGE_AGENT, "once", "--inferences", "20"], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = start_registry(tmp_path_factory.mktemp("registry"), None)
    yield server
    server.stop()


def register(registry, agent_id: str, site: str = "urban-nlos") -> str:
    """The new agent's token."""
    with registry.admin() as admin:
        return admin.post("/agents", json={"agent_id": agent_id, "site": site}).raise_for_status().json()["token"]


def test_bad_settings_stop_the_agent_with_one_line_naming_the_variable(tmp_path, registry):
    """Each used to look like an outage ("registry unreachable", ZF served, exit 0)."""
    token = register(registry, "bs-f")
    cases = {
        "EDGE_AGENT_TOKEN": {"EDGE_AGENT_TOKEN": ""},
        "EDGE_AGENT_REGISTRY_URL": {"EDGE_AGENT_REGISTRY_URL": "http://127.0.0.1:"},
        "EDGE_AGENT_BROKER_URL": {"EDGE_AGENT_BROKER_URL": "mqtt://127.0.0.1:x"},
        "EDGE_AGENT_METER": {"EDGE_AGENT_METER": "wattmeter"},
        "EDGE_AGENT_SOURCE": {"EDGE_AGENT_SOURCE": "ftp:somewhere"},
        "EDGE_AGENT_LOG_FORMAT": {"EDGE_AGENT_LOG_FORMAT": "xml"},
    }
    wrong_token = {"EDGE_AGENT_AGENT_ID": "bs-f", "EDGE_AGENT_REGISTRY_URL": registry.url, "EDGE_AGENT_TOKEN": "x" * 20}
    for variable, bad in [*cases.items(), ("EDGE_AGENT_TOKEN", wrong_token)]:
        result = once(agent_env(tmp_path, **bad))
        line = result.stderr.strip()
        assert result.returncode == 2 and "\n" not in line and variable in line, (variable, result.stderr)
        assert result.stdout == ""  # nothing served
    assert "401" in line and registry.url in line
    right = once(agent_env(tmp_path, EDGE_AGENT_AGENT_ID="bs-f", EDGE_AGENT_REGISTRY_URL=registry.url,
                           EDGE_AGENT_TOKEN=token))
    assert right.returncode == 0 and len(right.stdout.splitlines()) == 1, right.stderr
    fleet = run_cli("fleet", "--registry", registry.url, "--token", registry.admin_token, env={"COLUMNS": "250"})
    assert fleet.returncode == 0 and "measured" not in fleet.stdout  # cpu_time only estimates: said so
    assert "fleet uJ" in fleet.stdout and " est." in fleet.stdout and "cpu_time (estimated)" in fleet.stdout
    port = free_port()  # nothing listens: a real connection failure, named with its URL and error
    away = once(agent_env(tmp_path, EDGE_AGENT_REGISTRY_URL=f"http://127.0.0.1:{port}"))
    assert away.returncode == 0 and f"registry unreachable at http://127.0.0.1:{port}: " in away.stderr


def test_an_agent_configured_for_another_site_is_refused(tmp_path, registry):
    """Registered at urban-nlos, started as campus-los: it installed the urban model and its reports were
    accepted. Now the registry answers 409 naming both sites and the agent stops before serving."""
    token = register(registry, "bs-i", "urban-nlos")
    result = once(agent_env(tmp_path, EDGE_AGENT_AGENT_ID="bs-i", EDGE_AGENT_SITE="campus-los",
                            EDGE_AGENT_REGISTRY_URL=registry.url, EDGE_AGENT_TOKEN=token))
    line = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in line and result.stdout == ""
    assert "EDGE_AGENT_SITE" in line and "409" in line and "'urban-nlos'" in line and "'campus-los'" in line
    with registry.admin() as admin:
        assert not [r for r in admin.get("/fleet", params={"group_by": "agent"}).json() if r.get("agent_id") == "bs-i"]


def test_sigterm_ends_the_service_cleanly(tmp_path, mosquitto):
    """systemd's or docker's SIGTERM skipped close(): no last window, "offline" only by the last will ~15 s
    later, exit -15. Now every answered request is counted, "offline" is published at once, exit 0, while
    READY/WATCHDOG reach $NOTIFY_SOCKET, /healthz answers and the logs are JSON lines."""
    registry = start_registry(tmp_path / "registry", mosquitto.url)  # subscribed: it stores what is published
    token = register(registry, "bs-svc")
    sockets = Path(tempfile.mkdtemp(prefix="notify-"))  # short: a Unix socket path has 108 bytes at most
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sockets / "notify"))
    notify.settimeout(60)
    precode, health = free_port(), free_port()
    env = agent_env(tmp_path, EDGE_AGENT_AGENT_ID="bs-svc", EDGE_AGENT_TOKEN=token, EDGE_AGENT_REGISTRY_URL=registry.url,
                    EDGE_AGENT_BROKER_URL=mosquitto.url, EDGE_AGENT_SOURCE=f"http:127.0.0.1:{precode}",
                    EDGE_AGENT_HEALTH=f"127.0.0.1:{health}", EDGE_AGENT_LOG_FORMAT="json",
                    EDGE_AGENT_WINDOW_INFERENCES="1000", EDGE_AGENT_SHUTDOWN_SECONDS="5", EDGE_AGENT_WARMUP_INFERENCES="5",
                    NOTIFY_SOCKET=str(sockets / "notify"), WATCHDOG_USEC="1000000")
    process = subprocess.Popen([EDGE_AGENT, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    states: list[str] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="status-watcher", protocol=mqtt.MQTTv5)
    watcher.on_message = lambda client, userdata, msg: states.append(json.loads(msg.payload)["state"])
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe(topics.status("bs-svc"), qos=1)
    watcher.loop_start()
    try:
        messages = []
        while "READY=1" not in messages:
            messages.append(notify.recv(4096).decode())
        assert notify.recv(4096).decode() == "WATCHDOG=1"  # within half the period
        answer = httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=10)
        assert answer.status_code == 200 and answer.json()["state"] == "serving" and answer.json()["fallback"] == "zf"
        wait_for(lambda: states and states[-1] == "online")

        H = load_dataset(get_site("urban-nlos").with_overrides(n_samples=400)).H("test", 8)
        answered: list[int] = []
        failed: list[str] = []

        def base_station(n: int) -> None:
            with httpx.Client(timeout=10) as client:
                for i in range(n):
                    body = io.BytesIO()
                    np.savez(body, H=H[i % len(H)])
                    try:
                        response = client.post(f"http://127.0.0.1:{precode}/precode", content=body.getvalue())
                    except httpx.TransportError:  # the endpoint closed: the agent is stopping
                        return
                    if response.status_code != 200:
                        failed.append(f"{response.status_code} {response.text}")
                        return
                    answered.append(1)

        base_station(5)  # the warm-up: served, not measured
        callers = [threading.Thread(target=base_station, args=(200,)) for _ in range(3)]
        for caller in callers:
            caller.start()
        wait_for(lambda: len(answered) >= 20)
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)  # requests in flight
        for caller in callers:
            caller.join(20)
        assert process.wait(20) == 0
        assert time.monotonic() - stopped < 10
        assert not failed  # each request was answered, or refused at connect once the agent stopped listening
        wait_for(lambda: states[-1] == "offline", timeout=3)  # at once, not by the last will 15 s later
        while "STOPPING=1" not in messages:
            messages.append(notify.recv(4096).decode())
        with registry.admin() as admin:  # the partial window was reported: every answered request counted
            rows = wait_for(lambda: [r for r in admin.get("/fleet", params={"group_by": "agent"}).json()
                                     if r.get("agent_id") == "bs-svc"])
            assert rows[0]["inferences"] == len(answered) - 5
        logs = [json.loads(line) for line in process.stderr.read().splitlines() if line.strip()]  # all JSON
        assert {"time", "level", "logger", "message"} <= set(logs[0])
    finally:
        if process.poll() is None:
            process.kill()
        watcher.loop_stop()
        watcher.disconnect()
        notify.close()
        shutil.rmtree(sockets, ignore_errors=True)
        registry.stop()


def test_bench_prints_energy_per_inference_with_its_spread(tmp_path):
    result = subprocess.run([EDGE_AGENT, "bench", "--seconds", "1", "--method", "zf"], capture_output=True, text=True,
                            env=agent_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    bench = json.loads(result.stdout)
    assert bench["method"] == "zf" and bench["meter_kind"] == "estimated" and bench["inferences"] > 10
    assert bench["dynamic_uj_per_inference"] > 0 and bench["dynamic_uj_spread"] >= 0


def test_bench_measures_a_classical_method_as_the_agent_would_serve_it(tmp_path):
    """A method that is not deployed is measured on this device beside the installed package; a bad one is one line."""
    run = partial(subprocess.run, capture_output=True, text=True, env=agent_env(tmp_path), timeout=120)
    result = run([EDGE_AGENT, "bench", "--seconds", "1", "--method", "wmmse(tol=0.01)"])
    assert result.returncode == 0, result.stderr
    bench = json.loads(result.stdout)
    assert bench["method"] == "method:wmmse(tol=0.01)" and bench["inferences"] > 10 and bench["dynamic_uj_per_inference"] > 0
    for bad, says in [("nope", "unknown baseline 'nope'"), ("rzf(", "is not a method target")]:
        result = run([EDGE_AGENT, "bench", "--seconds", "1", "--method", bad])
        assert result.returncode == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
