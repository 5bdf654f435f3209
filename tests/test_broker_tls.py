"""TLS on MQTT (issue 22, item 7), on the real mosquitto: ``registry serve --broker-tls`` makes a CA and a
certificate for 127.0.0.1 in its data directory at the first start, its ingest verifies the broker with that CA,
and an agent that verifies it too logs in and reports; a client in clear text, or one that does not trust the
CA, gets no connection."""

from __future__ import annotations

import ssl
import time

import paho.mqtt.client as mqtt
import pytest

from edgejoule.schemas import topics
from tests.brokers import mosquitto_binary, publish_acked
from tests.conftest import wait_for
from tests.fleet import serve
from tests.registry_parts import mqtt_password, register, window

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto package")


def tls_login(port: int, agent_id: str, password: str, ca_file: str | None) -> tuple[mqtt.Client, list]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=topics.agent_client_id(agent_id),
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(agent_id, password)
    if ca_file is not None:
        client.tls_set(ca_certs=ca_file)
    outcome: list = []
    client.on_connect = lambda c, u, flags, reason_code, properties: outcome.append(reason_code)
    try:
        client.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError) as exc:
        return client, [exc]
    client.loop_start()
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.02)
    return client, outcome


def test_the_embedded_broker_serves_tls_with_a_certificate_made_at_first_start(tmp_path):
    data = tmp_path / "data"
    registry = serve(data, "--broker-tls")  # ready: its own ingest verified the broker and subscribed
    try:
        url = registry.broker_url
        assert url.startswith("mqtts://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        tls = data / "broker" / "tls"
        assert {path.name: oct(path.stat().st_mode & 0o777) for path in tls.iterdir()} == {
            name: "0o600" for name in ("ca.crt", "ca.key", "server.crt", "server.key")}
        with registry.admin() as admin:
            register(admin, "bs-a")
            password = mqtt_password(admin, "bs-a")
            agent, connack = wait_for(lambda: (c := tls_login(port, "bs-a", password, str(tls / "ca.crt")))[1]
                                      and c[1][0] == 0 and c, what="the agent's TLS login")
            assert publish_acked(agent, topics.telemetry("bs-a"), [window("bs-a", None, 0).model_dump_json(by_alias=True)]) == [0]
            wait_for(lambda: sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json()) == 1,
                     what="the window sent over TLS")
            agent.loop_stop()
        plain, outcome = tls_login(port, "bs-a", password, None)  # clear text to a TLS listener: no CONNACK
        plain.loop_stop()
        assert not outcome or outcome[0] != 0
        with pytest.raises(ssl.SSLError):  # a client that trusts only the system's CAs refuses the certificate
            untrusting = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv5)
            untrusting.tls_set()
            untrusting.connect("127.0.0.1", port)
    finally:
        registry.stop()
    ca = (tls / "ca.crt").read_bytes()
    registry = serve(data, "--broker-tls")  # a restart keeps the certificate agents trust, and the URL
    try:
        assert registry.broker_url == url and (tls / "ca.crt").read_bytes() == ca
    finally:
        registry.stop()


def test_an_agent_reports_over_mqtts_and_trusts_only_the_ca_it_is_given(tmp_path):
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings

    data = tmp_path / "data"
    registry = serve(data, "--broker-tls")
    try:
        with registry.admin() as admin:
            token = register(admin, "bs-t")

            def agent(ca_file, name):
                return Agent(AgentSettings(agent_id="bs-t", site="urban-nlos", registry_url=registry.url, token=token,
                                           broker_url=registry.broker_url, mqtt_ca_file=ca_file, meter="cpu_time",
                                           data_dir=tmp_path / name, idle_seconds=0.05, window_inferences=50,
                                           warmup_inferences=0, shutdown_seconds=1))

            trusting = agent(data / "broker" / "tls" / "ca.crt", "trusting")
            try:
                wait_for(trusting.mqtt.connected.is_set, what="the agent's TLS connection")
                trusting.once(100)
                wait_for(lambda: sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json()) == 2,
                         what="both windows sent over TLS")
            finally:
                trusting.close()
            untrusting = agent(None, "untrusting")  # the system's CAs do not know the registry's
            try:
                untrusting.once(50)
                time.sleep(1.0)
                assert not untrusting.mqtt.connected.is_set() and len(untrusting.outbox.spool) == 1
            finally:
                untrusting.close()
            assert sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json()) == 2
    finally:
        registry.stop()
