"""The broker confines every agent (issue 22, items 1 and 12), on the real mosquitto: the embedded broker of
``registry serve``, and an external one run from exactly the files ``edgejoule registry broker-auth`` writes.

An agent subscribes only to its own assignment topic (a shared subscription that would take a share of every
agent's telemetry is refused with SUBACK 135, so nothing is handed to it and dropped), and connects only with its
own client id (it can take over neither the registry's session nor another agent's)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time

import httpx
import pytest

from edgejoule.schemas import topics
from tests.brokers import login, mosquitto_binary, publish_acked, suback
from tests.conftest import run_cli, wait_for
from tests.fleet import serve, start_registry
from tests.registry_parts import as_agent, mqtt_password, package, register, upload, window

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto package")
NOT_AUTHORIZED = 135


def stored(admin: httpx.Client) -> int:
    return sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json())


def payloads(agent_id: str, first: int, count: int) -> list[str]:
    return [window(agent_id, None, first + i, inferences=1).model_dump_json(by_alias=True) for i in range(count)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    registry = serve(tmp_path_factory.mktemp("confinement") / "data")
    with registry.admin() as admin:
        registry.tokens = {agent: register(admin, agent) for agent in ("bs-a", "bs-b")}
        registry.passwords = {agent: mqtt_password(admin, agent) for agent in registry.tokens}
    yield registry
    registry.stop()


def test_an_agent_may_subscribe_only_to_its_own_assignment_and_a_hijack_loses_nothing(served):
    hijacker, connack = login(served.broker_url, "bs-b", served.passwords["bs-b"], topics.agent_client_id("bs-b"))
    for stolen in (topics.shared(topics.ALL_TELEMETRY), topics.shared(topics.ALL_TELEMETRY, "other"),
                   topics.ALL_TELEMETRY, "#", "$share/registry/#", topics.assignment("bs-a"), "$CONTROL/#"):
        assert suback(hijacker, stolen) == NOT_AUTHORIZED, stolen
    assert suback(hijacker, topics.assignment("bs-b")) == 1  # its own: granted at QoS 1
    sender, _ = login(served.broker_url, "bs-a", served.passwords["bs-a"], topics.agent_client_id("bs-a"))
    with served.admin() as admin:
        before = stored(admin)
        assert publish_acked(sender, topics.telemetry("bs-a"), payloads("bs-a", 0, 200)) == [0] * 200
        wait_for(lambda: stored(admin) == before + 200, what="all 200 windows")
    for client in (hijacker, sender):
        client.loop_stop()
        client.disconnect()


def test_no_login_takes_over_the_registrys_session_or_another_agents(served):
    sender, _ = login(served.broker_url, "bs-a", served.passwords["bs-a"], topics.agent_client_id("bs-a"))
    dropped: list = []
    sender.on_disconnect = lambda *args: dropped.append(args)
    # bs-b tries both client ids, and its client keeps reconnecting (paho's loop) while bs-a sends
    thieves = [login(served.broker_url, "bs-b", served.passwords["bs-b"], client_id)
               for client_id in ("edgejoule-registry", topics.agent_client_id("bs-a"))]
    assert [connack.value for _, connack in thieves] == [NOT_AUTHORIZED, NOT_AUTHORIZED]
    subscribed = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            subscribed.append(httpx.get(served.url + "/readyz").json()["mqtt"])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with served.admin() as admin:
        before = stored(admin)
        assert publish_acked(sender, topics.telemetry("bs-a"), payloads("bs-a", 1000, 300)) == [0] * 300
        wait_for(lambda: stored(admin) == before + 300, what="all 300 windows")
    watching.set()
    watcher.join()
    assert subscribed and all(subscribed)  # the registry's session was never taken
    assert dropped == []  # nor bs-a's
    for client, _ in [*thieves, (sender, None)]:
        client.loop_stop()


def test_a_broker_run_from_broker_auths_files_confines_agents_and_loses_nothing_in_a_burst(tmp_path, monkeypatch):
    password = "registry-" + "p" * 20
    monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_PASSWORD", password)
    registry = start_registry(tmp_path / "data", None)
    with registry.admin() as admin:
        register(admin, "bs-a")
        password_a = mqtt_password(admin, "bs-a")
    registry.stop()
    # mosquitto started as root drops to its own user, which must reach the directory (pytest's is private)
    parent = tempfile.mkdtemp(prefix="edgejoule-broker-auth-")
    os.chmod(parent, 0o711)
    out = os.path.join(parent, "broker")
    from tests.brokers import Mosquitto, free_port

    port = free_port()
    written = run_cli("registry", "broker-auth", "--out", out, "--data-dir", str(tmp_path / "data"), "--port",
                      str(port), "--host", "127.0.0.1")
    assert written.returncode == 0, written.stderr
    assert {oct(os.stat(os.path.join(out, name)).st_mode & 0o777) for name in os.listdir(out)} == {"0o600"}
    broker = Mosquitto(port=port).start_from(os.path.join(out, "mosquitto.conf"))
    url = f"mqtt://edgejoule-registry@127.0.0.1:{port}"
    registry = start_registry(tmp_path / "data", url)
    try:
        wait_for(lambda: httpx.get(registry.url + "/readyz").status_code == 200, what="the registry's subscription")
        with registry.admin() as admin:
            register(admin, "bs-b")  # enrolled at run time, on the plugin's control topic
            password_b = mqtt_password(admin, "bs-b")
            late, connack = wait_for(lambda: (c := login(broker.url, "bs-b", password_b, topics.agent_client_id("bs-b")))
                                     [1].value == 0 and c, what="the late agent's login")
            assert suback(late, topics.shared(topics.ALL_TELEMETRY)) == NOT_AUTHORIZED
            sender, _ = login(broker.url, "bs-a", password_a, topics.agent_client_id("bs-a"))
            assert publish_acked(sender, topics.telemetry("bs-a"), payloads("bs-a", 0, 20_000)) == [0] * 20_000
            wait_for(lambda: stored(admin) == 20_000, timeout=120, what="all 20,000 windows")
            time.sleep(0.5)
            assert stored(admin) == 20_000
    finally:
        registry.stop()
        broker.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_agents_learn_the_broker_from_their_assignment(served):
    with served.admin() as admin:
        upload(admin, *package("m-broker"))
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m-broker", "agents": ["bs-a"]}).raise_for_status()
    assignment = as_agent(served.url, served.tokens["bs-a"]).get("/agents/bs-a/assignment").json()
    assert assignment["broker_url"] == served.broker_url  # the embedded broker's, without the registry's login


def test_a_rotated_or_revoked_token_stops_working_over_http_and_on_the_broker_at_once(served):
    env = {"EDGEJOULE_REGISTRY_URL": served.url, "EDGEJOULE_ADMIN_TOKEN": served.admin_token}
    added = run_cli("agents", "add", "--agent-id", "bs-r", "--site", "campus-los", "--json", env=env)
    first = json_of(added)
    dropped = threading.Event()
    session, connack = wait_for(lambda: (c := login(served.broker_url, "bs-r", first["mqtt_password"],
                                                    topics.agent_client_id("bs-r")))[1] == 0 and c,
                                what="the agent's login")
    session.on_disconnect = lambda *args: dropped.set()

    second = json_of(run_cli("agents", "rotate", "bs-r", "--json", env=env))
    assert second["token"] != first["token"] and second["mqtt_password"] != first["mqtt_password"]
    assert dropped.wait(10), "the session logged in with the old token was not ended"
    session.loop_stop()
    assert as_agent(served.url, first["token"]).get("/agents/bs-r/assignment").status_code == 401
    assert as_agent(served.url, second["token"]).get("/agents/bs-r/assignment").status_code == 204  # nothing assigned
    assert as_agent(served.url, second["token"]).get("/agents/bs-r/broker-login").json() == {
        "mqtt_username": "bs-r", "mqtt_password": second["mqtt_password"]}
    assert as_agent(served.url, served.tokens["bs-a"]).get("/agents/bs-r/broker-login").status_code == 403
    old, refused = login(served.broker_url, "bs-r", first["mqtt_password"], topics.agent_client_id("bs-r"))
    old.loop_stop()
    assert refused != 0
    session, connack = login(served.broker_url, "bs-r", second["mqtt_password"], topics.agent_client_id("bs-r"))
    assert connack == 0
    listed = {a["agent_id"]: a for a in json_of(run_cli("agents", "list", "--json", env=env))}
    assert listed["bs-r"]["site"] == "campus-los"

    dropped.clear()
    session.on_disconnect = lambda *args: dropped.set()
    revoked = run_cli("agents", "revoke", "bs-r", env=env)
    assert revoked.returncode == 0 and "bs-r revoked" in revoked.stdout, revoked.stderr
    assert dropped.wait(10), "the revoked agent's session was not ended"
    session.loop_stop()
    assert as_agent(served.url, second["token"]).get("/agents/bs-r/assignment").status_code == 401
    gone, refused = login(served.broker_url, "bs-r", second["mqtt_password"], topics.agent_client_id("bs-r"))
    gone.loop_stop()
    assert refused != 0
    assert "bs-r" not in {a["agent_id"] for a in json_of(run_cli("agents", "list", "--json", env=env))}
    again = run_cli("agents", "revoke", "bs-r", env=env)
    assert again.returncode == 2 and "unknown agent 'bs-r'" in again.stderr and "Traceback" not in again.stderr


def json_of(result) -> dict | list:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_agent_asks_the_registry_for_its_broker_login_and_keeps_it_for_a_restart_with_the_registry_away(
        served, tmp_path):
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from tests.brokers import free_port

    with served.admin() as admin:
        token = register(admin, "bs-k")

    def start(registry_url: str, agent_token: str) -> Agent:
        return Agent(AgentSettings(agent_id="bs-k", site="urban-nlos", registry_url=registry_url, token=agent_token,
                                   broker_url=served.broker_url, meter="cpu_time", data_dir=tmp_path / "agent",
                                   shutdown_seconds=0.5))

    first = start(served.url, token)  # nothing but the token configured
    try:
        wait_for(lambda: first.mqtt is not None and first.mqtt.connected.is_set(), what="the agent's broker login")
    finally:
        first.close()
    kept = tmp_path / "agent" / "broker-login.json"
    assert oct(kept.stat().st_mode & 0o777) == "0o600" and token not in kept.read_text()
    away = f"http://127.0.0.1:{free_port()}"  # the registry unreachable: the kept login still logs in
    again = start(away, token)
    try:
        wait_for(lambda: again.mqtt is not None and again.mqtt.connected.is_set(), what="the kept login")
    finally:
        again.close()
    other = start(away, "another-token")  # kept for another token: not used
    try:
        assert other.mqtt is None
    finally:
        other.close()
