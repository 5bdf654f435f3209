"""Broker logins follow the agents table through broker outages (issue 22): an agent registered, rotated or
revoked while the external broker is down gets (or loses) its login once the broker is back, without
``edgejoule registry broker-auth`` being rerun. On the real mosquitto, run from broker-auth's files."""

from __future__ import annotations

import os
import shutil
import tempfile

import httpx
import pytest

from edgejoule.schemas import topics
from tests.brokers import Mosquitto, free_port, login, mosquitto_binary
from tests.conftest import run_cli, wait_for
from tests.fleet import start_registry
from tests.registry_parts import mqtt_password, register

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto package")
BACK_WITHIN_S = 15.0


def connack(broker: Mosquitto, agent_id: str, password: str) -> int:
    """The CONNACK reason an agent's login gets (0: accepted)."""
    client, reason = login(broker.url, agent_id, password, topics.agent_client_id(agent_id))
    client.loop_stop()
    client.disconnect()
    return reason.value


@pytest.fixture
def external(tmp_path, monkeypatch):
    """A registry on an external broker started from broker-auth's files, with agents bs-a and bs-b registered
    before the files were written: (registry, broker, their broker passwords)."""
    monkeypatch.setenv("EDGEJOULE_REGISTRY_MQTT_PASSWORD", "registry-" + "p" * 20)
    registry = start_registry(tmp_path / "data", None)
    with registry.admin() as admin:
        for agent in ("bs-a", "bs-b"):
            register(admin, agent)
        passwords = {agent: mqtt_password(admin, agent) for agent in ("bs-a", "bs-b")}
    registry.stop()
    parent = tempfile.mkdtemp(prefix="edgejoule-reconcile-")  # mosquitto started as root must reach it
    os.chmod(parent, 0o711)
    out, port = os.path.join(parent, "broker"), free_port()
    written = run_cli("registry", "broker-auth", "--out", out, "--data-dir", str(tmp_path / "data"), "--port",
                      str(port), "--host", "127.0.0.1")
    assert written.returncode == 0, written.stderr
    broker = Mosquitto(port=port).start_from(os.path.join(out, "mosquitto.conf"))
    broker.conf = os.path.join(out, "mosquitto.conf")
    registry = start_registry(tmp_path / "data", f"mqtt://edgejoule-registry@127.0.0.1:{port}")
    wait_for(lambda: httpx.get(registry.url + "/readyz").status_code == 200, what="the registry's subscription")
    yield registry, broker, passwords
    registry.stop()
    broker.stop()
    shutil.rmtree(parent, ignore_errors=True)


def test_logins_follow_registrations_rotations_and_revocations_made_while_the_broker_was_down(external):
    registry, broker, passwords = external
    broker.stop()  # it saves its dynamic-security file: the logins of bs-a and bs-b as they were
    with registry.admin() as admin:
        new = admin.post("/agents", json={"agent_id": "bs-new", "site": "urban-nlos"}).json()["mqtt_password"]
        rotated = admin.post("/agents/bs-a/token")
        assert rotated.status_code == 200, rotated.text
        assert admin.delete("/agents/bs-b").status_code == 204
    broker.start_from(broker.conf)
    wait_for(lambda: connack(broker, "bs-new", new) == 0, timeout=BACK_WITHIN_S, what="the new agent's login")
    wait_for(lambda: connack(broker, "bs-a", rotated.json()["mqtt_password"]) == 0, timeout=BACK_WITHIN_S,
             what="the rotated token's login")
    assert connack(broker, "bs-a", passwords["bs-a"]) != 0, "the old password still logs in"
    wait_for(lambda: connack(broker, "bs-b", passwords["bs-b"]) != 0, timeout=BACK_WITHIN_S,
             what="the revoked agent's login to be refused")


def test_logins_given_while_the_broker_was_down_by_a_worker_that_stopped_reach_it_through_the_next(external,
                                                                                                    tmp_path):
    """The worker that registered one agent and rotated another's token stopped before the broker came back; it
    held nothing the next worker lacks: both logins are on the broker once the next worker is up."""
    registry, broker, passwords = external
    broker.stop()
    with registry.admin() as admin:
        new = admin.post("/agents", json={"agent_id": "bs-new", "site": "urban-nlos"}).json()["mqtt_password"]
        rotated = admin.post("/agents/bs-a/token").json()["mqtt_password"]
    registry.stop()
    broker.start_from(broker.conf)
    assert connack(broker, "bs-new", new) != 0 and connack(broker, "bs-a", rotated) != 0  # nobody gave them yet
    registry = start_registry(tmp_path / "data", f"mqtt://edgejoule-registry@127.0.0.1:{broker.port}")
    try:
        wait_for(lambda: connack(broker, "bs-new", new) == 0, timeout=BACK_WITHIN_S, what="the new agent's login")
        wait_for(lambda: connack(broker, "bs-a", rotated) == 0, timeout=BACK_WITHIN_S, what="the rotated login")
        assert connack(broker, "bs-a", passwords["bs-a"]) != 0, "the old password still logs in"
        assert connack(broker, "bs-b", passwords["bs-b"]) == 0
    finally:
        registry.stop()


def test_a_revocation_made_while_the_broker_was_down_holds_after_the_registry_restarted(external, tmp_path):
    """The worker that took the revocation stopped before the broker came back: the next one finds the login of
    an agent the database no longer has, and deletes it; the other agents' logins and the registry's stay."""
    registry, broker, passwords = external
    broker.stop()
    with registry.admin() as admin:
        assert admin.delete("/agents/bs-b").status_code == 204
    registry.stop()
    broker.start_from(broker.conf)
    registry = start_registry(tmp_path / "data", f"mqtt://edgejoule-registry@127.0.0.1:{broker.port}")
    try:
        wait_for(lambda: httpx.get(registry.url + "/readyz").status_code == 200, what="the registry's subscription")
        wait_for(lambda: connack(broker, "bs-b", passwords["bs-b"]) != 0, timeout=BACK_WITHIN_S,
                 what="the revoked agent's login to be refused")
        assert connack(broker, "bs-a", passwords["bs-a"]) == 0
    finally:
        registry.stop()
