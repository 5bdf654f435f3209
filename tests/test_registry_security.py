"""What one agent (or anyone without a token) could do to the registry, each reproduction of issue 22 on the
real broker and both databases: forged telemetry for another site or model, poisoned times, lone surrogates,
NUL under any spelling of the JSON type, oversized fields and bodies, racing registrations, a lost artifact,
manifests no agent could run, and poison messages in an MQTT batch."""

from __future__ import annotations

import json
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from edgejoule.schemas import topics
from tests.brokers import publish_acked
from tests.conftest import run_cli, wait_for
from tests.fleet import serve, start_registry
from tests.postgres import database_url, postgres_server  # noqa: F401 (fixtures)
from tests.registry_parts import as_agent, package, register, send, upload, window
from tests.test_registry_mqtt import agent_client

FLEET_READS = ["/agents", "/plugins", "/models", "/sites/urban-nlos/pareto", "/fleet/series",
               *[f"/fleet?group_by={g}" for g in ("site", "model", "agent")]]


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def registry(tmp_path, database_url):
    server = start_registry(tmp_path / "data", None, database_url, max_upload_bytes=4096)
    yield server
    server.stop()


def test_forged_telemetry_for_another_site_or_model_stores_nothing(tmp_path, mosquitto):
    registry = start_registry(tmp_path / "data", mosquitto.url)
    try:
        with registry.admin() as admin:
            upload(admin, *package("nlos-1"))
            upload(admin, *package("los-1", site="campus-los"))
            token = register(admin, "bs-a")  # at urban-nlos
            admin.post("/deployments", json={"site": "urban-nlos", "model_id": "nlos-1"}).raise_for_status()
            forged = [window("bs-a", "los-1", 0, site="campus-los", inferences=1_000_000, energy_uj=999_899.0),
                      window("bs-a", "nlos-1", 1, site="campus-los"),  # its model, another site
                      window("bs-a", "los-1", 2)]  # its site, a model never assigned to it
            agent = as_agent(registry.url, token)
            for message in forged:
                refused = send(agent, "/telemetry", message)
                assert refused.status_code == 403 and "bs-a" in refused.json()["detail"], refused.text
            assert send(agent, "/telemetry", window("bs-a", "nlos-1", 3)).status_code == 202
            assert send(agent, "/telemetry", window("bs-a", None, 4, fallback="zf")).status_code == 202
            wait_for(lambda: httpx.get(registry.url + "/healthz").json()["mqtt"], what="the subscription")
            client = agent_client(mosquitto.url, "bs-a")
            bad = [m.model_copy(update={"message_id": f"mqtt-{i:08d}"}).model_dump_json(by_alias=True)
                   for i, m in enumerate(forged * 10)]
            good = [window("bs-a", "nlos-1", 100 + i).model_dump_json(by_alias=True) for i in range(20)]
            assert set(publish_acked(client, topics.telemetry("bs-a"), bad + good)) == {0}
            wait_for(lambda: metric(registry.url, 'edgejoule_telemetry_foreign_total{via="mqtt"}') == 30,
                     what="30 forged windows counted")
            wait_for(lambda: sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json()) == 22,
                     what="the 22 genuine windows")
            sites = {r["site"]: r["inferences"] for r in admin.get("/fleet", params={"group_by": "site"}).json()}
            assert set(sites) == {"urban-nlos"}  # campus-los got nothing
            assert metric(registry.url, 'edgejoule_telemetry_foreign_total{via="http"}') == 3
            letters = admin.get("/dead-letters", params={"limit": 1000}).json()
            assert len(letters) == 30 and all(json.loads(d["payload"])["agent_id"] == "bs-a" for d in letters)
            client.loop_stop()
    finally:
        registry.stop()


POISONED_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1999-12-31T23:59:59Z", "2999-01-01T00:00:00Z"]


def test_after_poisoned_heartbeats_and_windows_every_fleet_endpoint_answers(registry, database_url):
    with registry.admin() as admin:
        upload(admin, *package("m1"))
        token = register(admin, "bs-1")
        agent = as_agent(registry.url, token)
        beat = {"agent_id": "bs-1", "site": "urban-nlos"}

        def post_beat(body: str, content_type: str = "application/json") -> int:
            return agent.post("/agents/bs-1/heartbeat", content=body, headers={"Content-Type": content_type}).status_code

        for moment in POISONED_TIMES:
            assert post_beat(json.dumps(beat | {"sent_at": moment})) == 422, moment
            poisoned = window("bs-1", None, 0).model_dump(mode="json", by_alias=True) | {"window_end": moment}
            assert admin.post("/telemetry", json=poisoned).status_code == 422, moment
            for bound in ("since", "until"):  # a query may reach far ahead ("until 2999"), not out of range
                expected = 200 if moment.startswith("2999") else 422
                assert admin.get("/fleet", params={bound: moment}).status_code == expected, (bound, moment)
                assert admin.get("/fleet/series", params={bound: moment}).status_code == expected, (bound, moment)
        lone = '{"agent_id": "bs-1", "site": "urban-nlos", "hardware": {"cpu": "\\ud800"}, "plugins": ["\\udfff"]}'
        assert post_beat(lone) == 422
        for spelling in ("application/JSON", "Application/Json; charset=utf-8", "application/vnd.x+json", ""):
            assert post_beat(json.dumps(beat | {"runtime": "lit\u0000ert"}), spelling) == 422, spelling
        assert post_beat(json.dumps(beat | {"hardware": {"cpu": "x" * 5_000_000}})) == 413  # over the JSON cap
        assert post_beat(json.dumps(beat | {"hardware": {"cpu": "x" * 5000}})) == 422  # a field over its own cap
        assert post_beat(json.dumps(beat | {"plugins": ["p"] * 1000})) == 422
        event = {"agent_id": "bs-1", "model_id": "m1", "outcome": "load_failed", "detail": "x" * 5000}
        assert agent.post("/agents/bs-1/events", json=event).status_code == 422
        assert post_beat(json.dumps(beat | {"sent_at": "2026-11-01T00:00:00Z"})) == 204  # a clean one still goes in
        for path in FLEET_READS:
            assert admin.get(path).status_code == 200, path
        assert admin.get("/agents").json()[0]["state"] == "offline"  # its last heartbeat is old, not 'forever'
    env = {"EDGEJOULE_REGISTRY_URL": registry.url, "EDGEJOULE_ADMIN_TOKEN": registry.admin_token}
    assert run_cli("fleet", env=env).returncode == 0
    assert run_cli("models", env=env).returncode == 0


def test_uploads_that_no_agent_could_run_are_refused_saying_why(registry):
    manifest, data = package("m1")
    parsed = json.loads(manifest)
    with registry.admin() as admin:
        for change, why in (({"metrics": {"sum_rate": float("nan")}}, "metrics"),
                            ({"metrics": {"sum_rate": float("inf")}}, "metrics"),
                            ({"inputs": []}, "inputs"), ({"outputs": []}, "outputs")):
            response = upload(admin, json.dumps(parsed | change).encode(), data)
            assert response.status_code == 422 and why in response.json()["detail"], (change, response.text)
        assert upload(admin, manifest, data + b"\0" * 5000).status_code == 413  # over the upload cap
        assert upload(admin, manifest, data).status_code == 201


def test_concurrent_registrations_of_one_agent_answer_409_and_a_lost_artifact_410(registry):
    with registry.admin() as admin:
        for round_ in range(10):
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda _: admin.post("/agents", json={"agent_id": f"bs-{round_}",
                                                                                 "site": "urban-nlos"}).status_code,
                                         range(4)))
            assert sorted(statuses) == [201, 409, 409, 409], statuses
        manifest, data = package("m1")
        upload(admin, manifest, data)
        stored = next(p for p in (registry.data_dir / "artifacts").rglob("*") if p.is_file())
        stored.unlink()
        response = admin.get("/models/m1/package")
        assert response.status_code == 410 and "missing" in response.json()["detail"]


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith(field + ":")).split()[1])


def test_an_unauthenticated_200_mb_body_is_refused_before_it_is_read(tmp_path):
    registry = serve(tmp_path / "data", "--no-broker")
    try:
        pid = registry.process.pid
        before = rss_kib(pid, "VmRSS")
        chunk = b"[" + b"0," * (512 * 1024)
        answers = []
        for authorization in ("", "Authorization: Bearer not-a-token\r\n"):
            with socket.create_connection(("127.0.0.1", int(registry.url.rsplit(":", 1)[1]))) as conn:
                conn.sendall(f"POST /api/v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             f"{authorization}Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode())
                sent = 0
                try:
                    while sent < 200 * 1024 * 1024:
                        conn.sendall(chunk)
                        sent += len(chunk)
                except OSError:  # the registry answered and closed: it does not take the rest
                    pass
                answers.append(conn.recv(4096).split(b"\r\n")[0])
        peak = rss_kib(pid, "VmHWM")
        assert answers == [b"HTTP/1.1 401 Unauthorized"] * 2
        assert peak - before < 50 * 1024, (before, peak)  # KiB
        with registry.admin() as admin:  # with a token, the JSON cap: 413 from the declared length alone
            big = admin.post("/telemetry", content=b"0" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"})
            assert big.status_code == 413
    finally:
        registry.stop()


def test_poison_windows_in_an_mqtt_batch_are_refused_alone_and_counted(tmp_path, mosquitto):
    registry = start_registry(tmp_path / "data", mosquitto.url)
    try:
        with registry.admin() as admin:
            register(admin, "bs-1")
            wait_for(lambda: httpx.get(registry.url + "/healthz").json()["mqtt"], what="the subscription")
            client = agent_client(mosquitto.url, "bs-1")
            clean = [window("bs-1", None, i, inferences=1).model_dump_json(by_alias=True) for i in range(2000)]
            poison = [json.dumps(json.loads(window("bs-1", None, 5000 + i).model_dump_json(by_alias=True))
                                 | {"window_end": POISONED_TIMES[i % len(POISONED_TIMES)]}) for i in range(40)]
            mixed = clean[:]
            for i, p in enumerate(poison):
                mixed.insert(i * 50, p)
            assert set(publish_acked(client, topics.telemetry("bs-1"), mixed)) == {0}
            wait_for(lambda: sum(r["windows"] for r in admin.get("/fleet", params={"group_by": "site"}).json()) == 2000,
                     what="the 2000 clean windows")
            assert metric(registry.url, "edgejoule_mqtt_messages_rejected_total") == 40
            for path in FLEET_READS:
                assert admin.get(path).status_code == 200, path
            # each refused message is kept for the admin, with why, newest first
            letters = admin.get("/dead-letters", params={"limit": 1000}).json()
            assert len(letters) == 40 and {d["topic"] for d in letters} == {topics.telemetry("bs-1")}
            assert sorted(d["payload"] for d in letters) == sorted(poison)
            assert all(d["reason"].startswith("invalid window_end: ") for d in letters), letters[0]
            assert [d["id"] for d in letters] == sorted((d["id"] for d in letters), reverse=True)
            client.loop_stop()
    finally:
        registry.stop()
