"""The registry over real HTTP (uvicorn on a loopback port) on real SQLite and PostgreSQL 15: packages,
credentials, deployments and rollback, telemetry, fleet queries, eCAL, migrations and the CLI client."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from edgejoule.energy.ecal import LifecycleStages, ecal_j_per_bit
from edgejoule.registry.db import ModelRow
from tests.conftest import run_cli, wait_for
from tests.fleet import start_registry
from tests.postgres import database_url, fresh_database, postgres_server  # noqa: F401 (fixtures)
from tests.registry_parts import as_agent, package, register, send, upload, window


@pytest.fixture
def registry(tmp_path, database_url):
    server = start_registry(tmp_path / "data", None, database_url, max_upload_bytes=4096)
    server.database_url = database_url
    yield server
    server.stop()


def test_packages_versions_aliases_and_download(registry):
    with registry.admin() as admin:
        first, second = package("nlos-a", energy_uj=20.0), package("nlos-b", energy_uj=5.0)
        assert upload(admin, *first).json()["version"] == 1
        assert upload(admin, *second).json()["version"] == 2
        assert upload(admin, *package("los-a", site="campus-los")).json()["version"] == 1  # versions per site
        assert upload(admin, *first).status_code == 409  # packages are immutable
        response = admin.get("/models/nlos-b/package")
        assert response.content == second[1]
        assert response.headers["X-Content-SHA256"] == hashlib.sha256(second[1]).hexdigest()
        assert admin.get("/models/nlos-b/manifest").json()["energy"]["total_uj"] == 5.0
        assert admin.put("/sites/urban-nlos/aliases/production", json={"model_id": "nlos-a"}).status_code == 200
        assert admin.put("/sites/urban-nlos/aliases/production", json={"model_id": "nlos-b"}).status_code == 200
        assert admin.put("/sites/urban-nlos/aliases/production", json={"model_id": "los-a"}).status_code == 409
        models = {m["id"]: m for m in admin.get("/models", params={"site": "urban-nlos"}).json()}
        assert set(models) == {"nlos-a", "nlos-b"}
        assert models["nlos-b"]["alias"] == "production" and models["nlos-a"]["alias"] is None
        assert admin.get("/models/nope/manifest").status_code == 404


def test_a_package_is_deleted_only_when_nothing_holds_it(registry):
    artifacts = registry.data_dir / "artifacts"
    with registry.admin() as admin:
        files = {}
        for model_id in ("old", "new", "kept"):
            files[model_id] = package(model_id)
            upload(admin, *files[model_id]).raise_for_status()
        token = register(admin, "bs-1")
        for model_id in ("old", "new"):  # bs-1 serves new, and would roll back to old
            admin.post("/deployments", json={"site": "urban-nlos", "model_id": model_id}).raise_for_status()
        admin.put("/sites/urban-nlos/aliases/production", json={"model_id": "kept"}).raise_for_status()
        for model_id, says in [("new", "is assigned to bs-1"), ("kept", "is aliased as production")]:
            refused = admin.delete(f"/models/{model_id}")
            assert refused.status_code == 409 and says in refused.json()["detail"], refused.text
        assert as_agent(registry.url, token).delete("/models/old").status_code == 403
        assert admin.delete("/models/nope").status_code == 404
        deleted = admin.delete("/models/old")
        assert deleted.status_code == 200 and deleted.json() == {"id": "old", "rollback_cleared": ["bs-1"]}
        assert admin.get("/models/old/manifest").status_code == 404
        assert [m["id"] for m in admin.get("/models").json()] == ["new", "kept"]
        assert admin.post("/agents/bs-1/rollback").status_code == 409  # nothing to roll back to any more
        assert as_agent(registry.url, token).get("/agents/bs-1/assignment").json()["model_id"] == "new"
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert stored == {hashlib.sha256(files[m][1]).hexdigest() for m in ("new", "kept")}  # old's file is gone
    env = {"EDGEJOULE_REGISTRY_URL": registry.url, "EDGEJOULE_ADMIN_TOKEN": registry.admin_token}
    refused = run_cli("unpublish", "new", env=env)
    assert refused.returncode == 2 and "is assigned to bs-1" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_bad_uploads_leave_no_file_and_no_row(registry):
    artifacts = registry.data_dir / "artifacts"
    manifest, data = package("good")
    bad_manifest = json.loads(manifest)
    with registry.admin() as admin:
        not_tflite = data[:4] + b"XXXX" + data[8:]
        cases = {
            "corrupt byte": (manifest, data[:-1] + bytes([data[-1] ^ 1]), 422),
            "not a tflite file": (json.dumps({**bad_manifest, "sha256": hashlib.sha256(not_tflite).hexdigest()}).encode(),
                                  not_tflite, 422),
            "oversized": (manifest, data + b"\0" * 5000, 413),
            "manifest schema": (json.dumps({**bad_manifest, "energy": {"total_uj": -1}}).encode(), data, 422),
            "manifest not json": (b"{nope", data, 422),
            "size disagrees": (manifest, data + b"\0", 422),
        }
        for name, (m, d, status) in cases.items():
            response = upload(admin, m, d)
            assert response.status_code == status, (name, response.text)
            assert "detail" in response.json()
    assert [p for p in artifacts.rglob("*") if p.is_file()] == []
    with create_engine(registry.database_url).connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ModelRow)) == 0
    with registry.admin() as admin:  # and the good one still goes in
        assert upload(admin, manifest, data).status_code == 201
    assert [p.name for p in artifacts.rglob("*") if p.is_file()] == [hashlib.sha256(data).hexdigest()]


def test_credentials_are_separate_and_agents_act_only_as_themselves(registry):
    with registry.admin() as admin:
        upload(admin, *package("m1"))
        token_a, token_b = register(admin, "bs-a"), register(admin, "bs-b")
        assert admin.post("/agents", json={"agent_id": "bs-a", "site": "urban-nlos"}).status_code == 409
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m1", "agents": ["bs-a"]}).raise_for_status()
    a, b = as_agent(registry.url, token_a), as_agent(registry.url, token_b)
    anonymous = httpx.Client(base_url=registry.url + "/api/v1")
    wrong = as_agent(registry.url, "not-a-token-" + "x" * 30)
    beat = {"agent_id": "bs-a", "site": "urban-nlos"}
    assert anonymous.post("/agents/bs-a/heartbeat", json=beat).status_code == 401
    assert wrong.post("/agents/bs-a/heartbeat", json=beat).status_code == 401
    assert wrong.get("/models").status_code == 401
    assert a.post("/agents/bs-a/heartbeat", json=beat).status_code == 204
    assert b.post("/agents/bs-a/heartbeat", json=beat).status_code == 403
    assert send(b, "/telemetry", window("bs-a", "m1", 0)).status_code == 403
    assert send(a, "/telemetry", window("bs-a", "m1", 0)).status_code == 202
    assert a.get("/agents/bs-a/assignment").json()["model_id"] == "m1"
    assert b.get("/agents/bs-a/assignment").status_code == 403
    assert b.get("/agents/bs-b/assignment").status_code == 204
    assert a.get("/models/m1/package").status_code == 200  # its own assigned model
    assert b.get("/models/m1/package").status_code == 403  # not assigned to b
    assert a.post("/agents/bs-b/events", json={"agent_id": "bs-b", "model_id": "m1", "outcome": "load_failed"}).status_code == 403
    manifest, data = package("m2")
    assert upload(a, manifest, data).status_code == 403  # agents cannot publish
    assert a.post("/deployments", json={"site": "urban-nlos", "model_id": "m1"}).status_code == 403
    assert a.get("/fleet").status_code == 403
    assert a.post("/agents", json={"agent_id": "bs-c", "site": "urban-nlos"}).status_code == 403
    # the tokens themselves are not stored
    with create_engine(registry.database_url).connect() as conn:
        dump = "\n".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM agents"))
    assert token_a not in dump and token_b not in dump


def test_staged_rollout_automatic_and_manual_rollback(registry):
    with registry.admin() as admin:
        for model_id in ("v1", "v2"):
            upload(admin, *package(model_id))
        tokens = {agent: register(admin, agent) for agent in ("bs-1", "bs-2", "bs-3", "bs-4")}
        assert admin.post("/deployments", json={"site": "urban-nlos", "model_id": "v1"}).json()["agents"] == sorted(tokens)
        staged = admin.post("/deployments", json={"site": "urban-nlos", "model_id": "v2", "fraction": 0.5}).json()
        assert staged["agents"] == ["bs-1", "bs-2"]
        first = {a: as_agent(registry.url, t).get(f"/agents/{a}/assignment").json()["model_id"] for a, t in tokens.items()}
        assert first == {"bs-1": "v2", "bs-2": "v2", "bs-3": "v1", "bs-4": "v1"}
        # bs-2 fails to load v2: the registry rolls it back to v1 by itself
        bs2 = as_agent(registry.url, tokens["bs-2"])
        event = {"agent_id": "bs-2", "model_id": "v2", "outcome": "load_failed", "detail": "bad flatbuffer"}
        assert bs2.post("/agents/bs-2/events", json=event).json() == {"rolled_back": True}
        assignment = bs2.get("/agents/bs-2/assignment").json()
        assert assignment["model_id"] == "v1" and assignment["sha256"] == admin.get("/models/v1/manifest").json()["sha256"]
        # the rest of the site follows; then a manual rollback of one agent
        rest = admin.post("/deployments", json={"site": "urban-nlos", "model_id": "v2", "fraction": 1.0}).json()
        assert rest["agents"] == sorted(tokens)
        assert admin.post("/agents/bs-4/rollback").json() == {"agent_id": "bs-4", "model_id": "v1"}
        assert admin.post("/agents/bs-1/rollback").json()["model_id"] == "v1"
        assert admin.post("/agents/nobody/rollback").status_code == 409
        assert admin.post("/deployments", json={"site": "campus-los", "model_id": "v1"}).status_code == 409
        assert admin.post("/deployments", json={"site": "urban-nlos", "model_id": "v1",
                                                "agents": ["ghost"]}).status_code == 404


def test_telemetry_is_idempotent_and_fleet_queries_weight_by_inferences(registry):
    with registry.admin() as admin:
        upload(admin, *package("m1", energy_uj=10.0, training_energy_j=7.5, sum_rate=12.0))
        upload(admin, *package("m2", energy_uj=4.0, sum_rate=11.0))
        upload(admin, *package("m3", energy_uj=30.0, sum_rate=10.0))  # dominated by m1: off the front
        # an estimate of the paper counting (a package from before the implemented one) would "dominate" every
        # other here: it is compared with packages of its own counting only
        upload(admin, *package("m4", energy_uj=1.0, sum_rate=12.5, counting="paper"))
        for agent in ("bs-1", "bs-2"):
            register(admin, agent)
        windows = [window("bs-1", "m1", 0, inferences=100, energy_uj=50.0, p95_ms=1.0, sum_rate=11.0),
                   window("bs-1", "m1", 1, inferences=300, energy_uj=30.0, p95_ms=3.0, sum_rate=12.0),
                   window("bs-2", "m1", 1, inferences=100, energy_uj=70.0, p95_ms=2.0, sum_rate=10.0),
                   window("bs-2", None, 10, inferences=50, energy_uj=1.0, fallback="zf")]
        for w in windows:
            assert send(admin, "/telemetry", w).json() == {"stored": True}
        assert send(admin, "/telemetry", windows[0]).json() == {"stored": False}
        by_model = {r["model_id"]: r for r in admin.get("/fleet", params={"group_by": "model"}).json()}
        m1 = by_model["m1"]
        assert m1["inferences"] == 500 and m1["windows"] == 3
        assert m1["energy_total_uj"] == pytest.approx((100 * 50 + 300 * 30 + 100 * 70) / 500)
        assert m1["latency_ms_p95"] == pytest.approx((100 * 1 + 300 * 3 + 100 * 2) / 500)
        assert m1["quality"]["sum_rate"] == pytest.approx((100 * 11 + 300 * 12 + 100 * 10) / 500)
        assert m1["estimated_energy_uj"] == 10.0 and m1["meters"] == ["rapl (measured)"]
        assert by_model[None]["inferences"] == 50
        by_agent = admin.get("/fleet", params={"group_by": "agent", "model_id": "m1"}).json()
        assert [(r["agent_id"], r["inferences"]) for r in by_agent] == [("bs-1", 400), ("bs-2", 100)]
        windowed = admin.get("/fleet", params={"group_by": "site", "since": "2026-11-01T00:01:30Z",
                                               "until": "2026-11-01T00:05:00Z"}).json()
        assert [(r["site"], r["inferences"]) for r in windowed] == [("urban-nlos", 400)]
        series = admin.get("/fleet/series", params={"bucket_s": 60, "model_id": "m1"}).json()
        assert [(s["inferences"], s["energy_total_uj"]) for s in series] == [(100, 50.0), (400, pytest.approx(40.0))]
        coarse = admin.get("/fleet/series", params={"bucket_s": 300, "model_id": "m1"}).json()
        assert [(s["bucket_start"] % 300, s["inferences"]) for s in coarse] == [(0, 500)]
        bad = window("bs-1", "m1", 5, quality={"sum rate; drop table": 1.0})
        assert send(admin, "/telemetry", bad).status_code == 422
        for field in ('"energy_total_uj":50.0', '"energy_dynamic_uj":25.0', '"sum_rate":11.0'):  # schema; check_fits
            nan = window("bs-1", "m1", 6).model_dump_json(by_alias=True).replace(field, field.split(":")[0] + ":NaN")
            assert "NaN" in nan  # a NaN would poison every sum of its hour in the roll-up
            assert admin.post("/telemetry", content=nan, headers={"Content-Type": "application/json"}).status_code == 422
        assert send(admin, "/telemetry", window("bs-1", "", 6)).status_code == 422  # '' would read as the fallback
        front = {p["model_id"]: p for p in admin.get("/sites/urban-nlos/pareto").json()}
        assert (front["m1"]["on_front"], front["m2"]["on_front"], front["m3"]["on_front"]) == (True, True, False)
        assert front["m4"]["on_front"] and front["m4"]["energy_counting"] == "paper"
        assert {front[m]["energy_counting"] for m in ("m1", "m2", "m3")} == {"implemented"}
        assert front["m1"]["measured_energy_uj"] == pytest.approx(m1["energy_total_uj"])
        ecal = admin.get("/models/m1/ecal").json()
    stages = LifecycleStages(training_j=7.5, inference_j=m1["energy_total_uj"] * 1e-6, values_per_sample=2 * 4 * 64,
                             n_train=1000)
    assert ecal["inferences"] == 500
    assert ecal["ecal_j_per_bit"] == pytest.approx(ecal_j_per_bit(stages, 500))


def test_agent_state_from_heartbeats(tmp_path):
    server = start_registry(tmp_path / "data", None)
    server.server.config.app.state.settings.offline_after_s = 3.0  # long enough for a loaded CI to read "online"
    try:
        with server.admin() as admin:
            token = register(admin, "bs-1")
            plugins = ["zf", "rapl"]
            beat = time.monotonic()
            as_agent(server.url, token).post("/agents/bs-1/heartbeat", json={
                "agent_id": "bs-1", "site": "urban-nlos", "runtime": "ai-edge-litert 2.3.0", "plugins": plugins,
                "hardware": {"machine": "x86_64"}}).raise_for_status()
            agent = admin.get("/agents").json()[0]
            assert (agent["state"], agent["runtime"], agent["plugins"]) == ("online", "ai-edge-litert 2.3.0", plugins)
            assert admin.get("/plugins").json()["agents"] == {"bs-1": plugins}
            wait_for(lambda: admin.get("/agents").json()[0]["state"] == "offline", timeout=20,
                     what="silent for too long")
            assert time.monotonic() - beat >= 3.0  # not before offline_after_s
    finally:
        server.stop()


def test_migrations_up_down_up_and_cli_client(tmp_path, postgres_server):
    url = fresh_database(postgres_server)
    for done in ("migrated from an empty database", "nothing to do"):  # idempotent
        result = run_cli("registry", "migrate", "--database-url", url)
        assert result.returncode == 0 and done in result.stdout, result.stderr
    from alembic import command

    from edgejoule.registry.migrate import alembic_config

    command.downgrade(alembic_config(url), "base")
    command.upgrade(alembic_config(url), "head")
    server = start_registry(tmp_path / "data", None, url)
    try:
        # the server's own variable serves the client as well
        env = {"EDGEJOULE_REGISTRY_URL": server.url, "EDGEJOULE_REGISTRY_ADMIN_TOKEN": server.admin_token,
               "EDGEJOULE_ADMIN_TOKEN": ""}
        with server.admin() as admin:
            upload(admin, *package("m1"))
        added = run_cli("agents", "add", "--agent-id", "bs-9", "--site", "urban-nlos", "--json", env=env)
        assert added.returncode == 0, added.stderr
        token = json.loads(added.stdout)["token"]
        deployed = run_cli("deploy", "m1", "--site", "urban-nlos", env=env)
        assert deployed.returncode == 0 and "bs-9" in deployed.stdout, deployed.stderr
        assert as_agent(server.url, token).get("/agents/bs-9/assignment").json()["model_id"] == "m1"
        fleet = run_cli("fleet", "--json", env=env)
        assert json.loads(fleet.stdout)["agents"][0]["agent_id"] == "bs-9"
        with server.admin() as admin:  # a window without inferences: its group has no energy per inference
            send(admin, "/telemetry", window("bs-9", "m1", 0, inferences=0)).raise_for_status()
        table = run_cli("fleet", env=env)
        assert table.returncode == 0 and "bs-9" in table.stdout and " - " in table.stdout, table.stderr
        listed = run_cli("models", env=env)
        assert listed.returncode == 0 and "m1" in listed.stdout, listed.stderr
        assert [m["id"] for m in json.loads(run_cli("models", "--json", env=env).stdout)] == ["m1"]
        redeployed = run_cli("deploy", "m1", "--site", "urban-nlos", "--json", env=env)
        assert json.loads(redeployed.stdout)["agents"] == ["bs-9"], redeployed.stderr
        refused = run_cli("deploy", "m1", "--site", "campus-los", env=env)
        assert refused.returncode == 2 and "409" in refused.stderr + refused.stdout
        bad = run_cli("deploy", "m1", "--site", "urban-nlos", "--fraction", "0", env=env)
        assert bad.returncode == 2 and "fraction" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    finally:
        server.stop()
