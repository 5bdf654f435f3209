"""Gated rollouts over real HTTP (uvicorn on a loopback port) on real SQLite and PostgreSQL 15: the agents are
driven with controlled inputs, each reading its assignment as an agent does and posting its telemetry windows as
itself (POST /api/v1/telemetry) with a chosen sum rate and energy per inference, seeded noise on both; and the
gate's statistics alone over many seeded runs."""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import numpy as np
import pytest

from edgejoule.registry.rollout_gate import Windows, judge, parse_policy, t_quantile
from edgejoule.schemas import topics
from edgejoule.schemas.api import Assignment
from tests.conftest import wait_for
from tests.fleet import start_registry
from tests.postgres import database_url, postgres_server  # noqa: F401 (fixtures)
from tests.registry_parts import as_agent, package, register, send, upload, window_now
from tests.test_registry_mqtt import agent_client, publish_all

AGENTS = ("bs-1", "bs-2", "bs-3", "bs-4")
# what each model achieves on these agents: sum rate (bit/s/Hz) and energy per inference (uJ)
PROFILES = {"incumbent": (11.0, 50.0), "better": (11.2, 40.0), "worse": (9.5, 45.0), "twin": (11.0, 50.0),
            "method:rzf-equal": (10.5, 60.0)}
FAST = dict(stages=[0.25, 0.5, 1.0], min_windows=5, min_inferences=500, timeout_s=600)


@pytest.fixture
def registry(tmp_path, database_url, monkeypatch):
    monkeypatch.setenv("EDGEJOULE_REGISTRY_ROLLOUT_INTERVAL_S", "0.2")
    server = start_registry(tmp_path / "data", None, database_url)
    server.database_url = database_url
    yield server
    server.stop()


def fleet(registry, incumbent: str = "incumbent", candidates: tuple[str, ...] = ("better",)) -> dict:
    """Four agents at urban-nlos serving ``incumbent``; the candidate packages uploaded. Agent clients by id."""
    with registry.admin() as admin:
        for model_id in {incumbent, *candidates} - {"method:rzf-equal"}:
            assert upload(admin, *package(model_id)).status_code == 201
        tokens = {agent: register(admin, agent) for agent in AGENTS}
        assert admin.post("/deployments", json={"site": "urban-nlos", "model_id": incumbent}).status_code == 201
    return {agent: as_agent(registry.url, token) for agent, token in tokens.items()}


def drive(clients: dict, rng: np.random.Generator, rounds: int = 1, noise: float = 0.02,
          inferences: int = 200) -> None:
    """Each agent serves what it is assigned and reports one window per round, as an agent does."""
    for _ in range(rounds):
        for agent, client in clients.items():
            model = client.get(f"/agents/{agent}/assignment").json()["model_id"]
            sum_rate, energy = PROFILES[model]
            window = window_now(agent, model, inferences=inferences,
                                energy_uj=energy * (1 + noise * rng.standard_normal()),
                                p95_ms=1.0 * (1 + noise * rng.standard_normal()),
                                sum_rate=sum_rate * (1 + noise * rng.standard_normal()))
            assert send(client, "/telemetry", window).status_code == 202


def rollout(registry, rollout_id: int) -> dict:
    with registry.admin() as admin:
        return admin.get(f"/rollouts/{rollout_id}").json()


def drive_until(registry, clients, rollout_id: int, done, rng, rounds: int = 60) -> dict:
    """Report round after round until ``done(rollout)``; the registry evaluates every 0.2 s on its own."""
    for _ in range(rounds):
        drive(clients, rng)
        state = wait_for(lambda: rollout(registry, rollout_id), what="the rollout")
        if done(state):
            return state
    raise AssertionError(f"rollout {rollout_id} did not get there: {rollout(registry, rollout_id)}")


def assignments(clients) -> dict[str, str]:
    return {agent: client.get(f"/agents/{agent}/assignment").json()["model_id"] for agent, client in clients.items()}


def start(registry, candidate: str, **options) -> dict:
    with registry.admin() as admin:
        response = admin.post("/rollouts", json={"candidate": candidate, "site": "urban-nlos", **FAST, **options})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_better_candidate_is_promoted_through_every_stage_and_one_step_rolls_it_back(registry):
    clients = fleet(registry)
    started = start(registry, "better", started_by="ops-alice")
    assert started["incumbent"] == "incumbent" and len(started["canaries"]) == 1
    assert sorted(started["agent_order"]) == list(AGENTS)
    assert assignments(clients)[started["canaries"][0]] == "better"
    done = drive_until(registry, clients, started["id"], lambda r: r["state"] != "running", np.random.default_rng(1))
    assert done["state"] == "promoted", done["reason"]
    kinds = [e["kind"] for e in done["events"]]
    assert kinds == ["started", "stage", "passed", "stage", "passed", "stage", "promoted"]
    gate = done["events"][2]["readings"]
    quality, energy = gate["readings"]
    assert quality["criterion"] == "quality>=0.99" and quality["low"] > 0.99 and quality["verdict"] == "pass"
    assert energy["high"] <= 1.0 and 0.75 < energy["ratio"] < 0.85 and gate["energy_basis"] == "measured"
    assert gate["canary"]["windows"] >= 5 and gate["canary"]["inferences"] >= 500
    assert set(assignments(clients).values()) == {"better"}
    with registry.admin() as admin:
        history = admin.get("/sites/urban-nlos/history").json()
        assert [(p["target"], p["until"] is None) for p in history["served"]] == [("better", True), ("incumbent", False)]
        assert history["rollouts"][0]["started_by"] == "ops-alice"
        back = admin.post("/sites/urban-nlos/rollback", json={"reason": "regressed in the field"})
        assert back.status_code == 200 and back.json()["state"] == "reverted"
        assert set(assignments(clients).values()) == {"incumbent"}
        again = admin.post("/sites/urban-nlos/rollback", json={})
        assert again.status_code == 409 and "ended reverted" in again.json()["detail"]
        served = admin.get("/sites/urban-nlos/history").json()["served"]
        assert [p["target"] for p in served] == ["incumbent", "better", "incumbent"]


def test_a_lower_quality_candidate_is_rolled_back_at_the_first_stage(registry):
    clients = fleet(registry, candidates=("worse",))
    started = start(registry, "worse")
    done = drive_until(registry, clients, started["id"], lambda r: r["state"] != "running", np.random.default_rng(2))
    assert done["state"] == "rolled_back" and done["stage"] == 0, done
    failed = next(e for e in done["events"] if e["kind"] == "failed")
    quality = failed["readings"]["readings"][0]
    assert quality["verdict"] == "fail" and quality["high"] < 0.99 and abs(quality["ratio"] - 9.5 / 11) < 0.02
    assert "outside the policy: quality>=0.99" in done["reason"]
    assert set(assignments(clients).values()) == {"incumbent"}


def test_a_candidate_that_fails_to_load_is_rolled_back_at_once(registry):
    clients = fleet(registry)
    started = start(registry, "better")
    canary = started["canaries"][0]
    event = {"agent_id": canary, "model_id": "better", "outcome": "load_failed", "detail": "bad tflite"}
    assert clients[canary].post(f"/agents/{canary}/events", json=event).status_code == 202
    done = wait_for(lambda: (r := rollout(registry, started["id"]))["state"] != "running" and r, timeout=10,
                    what="the rollback")
    assert done["state"] == "rolled_back" and f"{canary}: load_failed (bad tflite)" in done["reason"]
    assert set(assignments(clients).values()) == {"incumbent"}


def test_too_few_inferences_keep_the_gate_waiting_and_pause_stops_the_clock(registry):
    clients = fleet(registry)
    started = start(registry, "better", min_inferences=100_000)
    drive(clients, np.random.default_rng(3), rounds=8)
    state = wait_for(lambda: (r := rollout(registry, started["id"]))["readings"] and r, what="a reading")
    state = rollout(registry, started["id"])
    assert state["state"] == "running" and state["readings"]["verdict"] == "wait"
    assert state["readings"]["reason"].startswith("too few to decide") and "100000 inferences" in state["readings"]["reason"]
    assert [e["kind"] for e in state["events"]] == ["started", "stage"]
    with registry.admin() as admin:
        paused = admin.post(f"/rollouts/{started['id']}/pause", json={"reason": "maintenance"}).json()
        assert paused["state"] == "paused"
        assert admin.post(f"/rollouts/{started['id']}/pause", json={}).status_code == 409
        resumed = admin.post(f"/rollouts/{started['id']}/resume", json={}).json()
        assert resumed["state"] == "running" and resumed["deadline"] > started["deadline"]
        aborted = admin.post(f"/rollouts/{started['id']}/abort", json={"reason": "enough"}).json()
        assert aborted["state"] == "aborted" and aborted["reason"] == "enough"
    assert set(assignments(clients).values()) == {"incumbent"}


def test_an_undecided_stage_does_what_the_rollout_says_at_its_timeout(registry):
    clients = fleet(registry, candidates=("better", "twin"))
    undecided = dict(min_inferences=100_000, timeout_s=1)
    first = start(registry, "twin", **undecided)  # on_timeout: rollback, the default
    done = wait_for(lambda: (r := rollout(registry, first["id"]))["state"] != "running" and r, what="the timeout")
    assert done["state"] == "rolled_back" and "stage 1 timed out: undecided after 1 s (too few" in done["reason"]
    assert [e["kind"] for e in done["events"]][-2:] == ["timed_out", "rolled_back"]
    second = start(registry, "better", on_timeout="promote", **undecided)
    done = wait_for(lambda: (r := rollout(registry, second["id"]))["state"] != "running" and r, what="the timeouts")
    assert done["state"] == "promoted" and [e["kind"] for e in done["events"]].count("timed_out") == 2
    assert set(assignments(clients).values()) == {"better"}


def test_a_second_rollout_on_a_site_is_refused_naming_the_running_one_and_bad_input_is_4xx(registry):
    fleet(registry, candidates=("better", "twin"))
    with registry.admin() as admin:
        cases = {"gate": ({"gate": "quality>0.99"}, 422, "quality>=0.99,energy<=1.0"),
                 "stages": ({"stages": [0.5, 0.2]}, 422, "increasing"),
                 "confidence": ({"confidence": 1.5}, 422, "confidence"),
                 "candidate": ({"candidate": "nope"}, 404, "unknown model 'nope'"),
                 "method": ({"candidate": "method:"}, 422, "method:NAME")}
        for name, (change, status, said) in cases.items():
            response = admin.post("/rollouts", json={"candidate": "twin", "site": "urban-nlos", **change})
            assert response.status_code == status and said in response.text, (name, response.text)
        assert admin.get("/rollouts/999").status_code == 404
        assert admin.post("/rollouts/999/abort", json={}).status_code == 404
        assert admin.post("/rollouts", json={"candidate": "twin", "site": "campus-los"}).status_code == 409
        assert admin.post("/rollouts", json={"candidate": "incumbent", "site": "urban-nlos"}).status_code == 409
    started = start(registry, "better")
    with registry.admin() as admin:
        second = admin.post("/rollouts", json={"candidate": "twin", "site": "urban-nlos"})
        assert second.status_code == 409 and f"rollout {started['id']} running" in second.json()["detail"]
        assert admin.get("/rollouts", params={"site": "urban-nlos"}).json()[0]["id"] == started["id"]
        admin.post(f"/rollouts/{started['id']}/abort", json={}).raise_for_status()
        newer = admin.post("/rollouts", json={"candidate": "twin", "site": "urban-nlos"}).json()
        first = admin.get("/rollouts", params={"limit": 1})  # pages, newest first, like the other lists
        assert [r["id"] for r in first.json()] == [newer["id"]]
        following = admin.get(first.links["next"]["url"])
        assert [r["id"] for r in following.json()] == [started["id"]] and "next" not in following.links
        assert admin.get("/rollouts", params={"cursor": "bm9wZQ"}).status_code == 400


def test_a_registry_restart_in_the_middle_of_a_stage_continues_it(tmp_path, database_url, monkeypatch):
    monkeypatch.setenv("EDGEJOULE_REGISTRY_ROLLOUT_INTERVAL_S", "0.2")
    first = start_registry(tmp_path / "data", None, database_url)
    clients = fleet(first)
    started = start(first, "better")
    rng = np.random.default_rng(4)
    drive(clients, rng, rounds=3)  # fewer than the minimum: the first stage waits
    assert rollout(first, started["id"])["stage"] == 0
    first.stop()
    second = start_registry(tmp_path / "data", None, database_url)
    try:
        clients = {agent: as_agent(second.url, c.headers["Authorization"].split()[1]) for agent, c in clients.items()}
        before = rollout(second, started["id"])
        assert before["state"] == "running" and before["stage"] == 0
        done = drive_until(second, clients, started["id"], lambda r: r["state"] != "running", rng)
        assert done["state"] == "promoted"
        passed = next(e for e in done["events"] if e["kind"] == "passed")
        assert passed["stage"] == 0 and passed["readings"]["canary"]["windows"] >= 5  # windows from both runs count
    finally:
        second.stop()


def test_a_method_incumbent_is_replaced_by_a_better_package(registry):
    clients = fleet(registry, incumbent="method:rzf-equal")
    started = start(registry, "better")
    assert started["incumbent"] == "method:rzf-equal"
    done = drive_until(registry, clients, started["id"], lambda r: r["state"] != "running", np.random.default_rng(5))
    assert done["state"] == "promoted", done["reason"]


def simulate(rng: np.random.Generator, policy: str, *, confidence: float, evaluations: int = 40,
             min_windows: int = 5, noise: float = 0.01) -> tuple[str, int]:
    """One stage of two identical models: each evaluation adds a window per side (3 incumbent agents, 1 canary)
    and reads the gate as the registry does. Returns the decision ('wait' if none) and the canary's windows then."""
    criteria = parse_policy(policy)
    looks = last = 0
    sides = {"canary": [], "incumbent": []}
    for _ in range(evaluations):
        for side, agents in (("canary", 1), ("incumbent", 3)):
            for _ in range(agents):
                sides[side].append((int(rng.integers(150, 250)), *(v * (1 + noise * rng.standard_normal())
                                                                   for v in (11.0, 50.0, 1.0))))
        c, i = (Windows([side], [r[0] for r in rows], {"quality": [r[1] for r in rows], "energy": [r[2] for r in rows],
                                                        "latency": [r[3] for r in rows]}, {"measured"})
                for side, rows in sides.items())
        result = judge(criteria, c, i, confidence=confidence, min_windows=min_windows, min_inferences=500,
                       looks=looks, last_look_windows=last, load_failures=[])
        if result.look != looks:
            looks, last = result.look, min(result.canary.windows, result.incumbent.windows)
        if result.verdict != "wait":
            return result.verdict, result.canary.windows
    return "wait", len(sides["canary"])


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_noise_alone_decides_against_the_policy_no_more_often_than_the_confidence_allows(confidence):
    runs = 300
    decisions = {"easy": [], "boundary": []}
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        # identical models meet this policy: a rollback would be a decision against it
        decisions["easy"].append(simulate(rng, "quality>=0.99,energy<=1.05", confidence=confidence))
        # identical models sit on this policy's bound (ratio 1 <= 1 holds, by a hair): a rollback is against it
        decisions["boundary"].append(simulate(rng, "energy<=1.0", confidence=confidence))
    allowed = 1 - confidence
    for verdict, windows in decisions["easy"] + decisions["boundary"]:
        assert verdict == "wait" or windows >= 5  # never before the minimum sample
    wrong = {case: sum(v == "fail" for v, _ in runs_of) / runs for case, runs_of in decisions.items()}
    assert max(wrong.values()) <= allowed, wrong
    assert sum(v == "pass" for v, _ in decisions["easy"]) / runs > 0.9  # and the gate does decide when it can


def test_t_quantiles_and_policies():
    assert math.isclose(t_quantile(0.975, 10), 2.228138851986273, rel_tol=1e-9)
    assert math.isclose(t_quantile(0.995, 3), 5.840909309733349, rel_tol=1e-9)
    assert [str(c) for c in parse_policy(" quality >= 0.99 , latency<=1.2")] == ["quality>=0.99", "latency<=1.2"]
    for bad in ("quality>0.99", "speed<=1", "energy<=0", "quality>=0.9,quality>=0.95", ""):
        with pytest.raises(ValueError, match="write the gate as"):
            parse_policy(bad)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_rollout_commands(registry):
    from tests.conftest import run_cli

    clients = fleet(registry)
    env = {"EDGEJOULE_REGISTRY_URL": registry.url, "EDGEJOULE_ADMIN_TOKEN": registry.admin_token}
    for bad, said in ((["--gate", "quality>0.99"], "write the gate as"), (["--timeout", "1x"], "30m, 1h"),
                      (["--stages", "a,b"], "--stages 'a,b'")):
        out = run_cli("rollout", "start", "better", "--site", "urban-nlos", *bad, env=env)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and said in out.stderr, out.stderr
    out = run_cli("rollout", "start", "better", "--site", "urban-nlos", "--stages", "0.25,0.5,1", "--min-windows", "5",
                  "--min-inferences", "500", "--timeout", "10m", env=env)
    assert out.returncode == 0 and "rollout 1 at urban-nlos: better against incumbent" in out.stdout, out.stderr
    again = run_cli("rollout", "start", "better", "--site", "urban-nlos", env=env)
    assert again.returncode == 2 and "409" in again.stderr and "rollout 1 running" in again.stderr
    drive_until(registry, clients, 1, lambda r: r["stage"] == 1, np.random.default_rng(6))
    shown = run_cli("rollout", "status", "--site", "urban-nlos", env=env).stdout
    assert "stage 2/3 (50%" in shown and "passed: within the policy: quality>=0.99 (ratio" in shown
    status = json.loads(run_cli("rollout", "status", "1", "--json", env=env).stdout)
    assert status["timeout_s"] == 600 and status["readings"]["verdict"] in ("wait", "pass")
    assert run_cli("rollout", "abort", "1", "--reason", "demo over", env=env).returncode == 0
    told = run_cli("rollout", "history", "--site", "urban-nlos", env=env).stdout
    assert "rollout 1: better against incumbent" in told and "aborted - demo over" in told


def test_agents_learn_each_stage_over_mqtt_and_report_over_it(tmp_path, mosquitto, monkeypatch):
    """The agents here are MQTT clients: each serves what its assignment topic last announced and publishes its
    windows on its telemetry topic; the worse candidate goes to a canary and is taken back, both announced."""
    monkeypatch.setenv("EDGEJOULE_REGISTRY_ROLLOUT_INTERVAL_S", "0.2")
    registry = start_registry(tmp_path / "data", mosquitto.url)
    connections = []
    try:
        fleet(registry, candidates=("worse",))
        wait_for(lambda: httpx.get(registry.url + "/healthz").json()["mqtt"], what="the registry's subscription")
        serving, told = {agent: "incumbent" for agent in AGENTS}, []
        for agent in AGENTS:
            connection = agent_client(mosquitto.url, agent)
            connection.on_message = lambda c, u, m: told.append(Assignment.model_validate_json(m.payload))
            granted = threading.Event()  # announcements are not retained: one sent before the SUBACK is missed
            connection.on_subscribe = lambda *args, granted=granted: granted.set()
            connection.subscribe(topics.assignment(agent), qos=1)
            connections.append(connection)
            assert granted.wait(10), f"{agent}'s subscription"
        started = start(registry, "worse")
        canary, rng = started["canaries"][0], np.random.default_rng(7)
        wait_for(lambda: any(a.agent_id == canary and a.model_id == "worse" for a in told), what="the announcement")
        for _ in range(60):
            serving |= {a.agent_id: a.model_id for a in told}
            for agent, connection in zip(AGENTS, connections):
                sum_rate, energy = PROFILES[serving[agent]]
                window = window_now(agent, serving[agent], sum_rate=sum_rate * (1 + 0.02 * rng.standard_normal()),
                                    energy_uj=energy * (1 + 0.02 * rng.standard_normal()), inferences=200)
                publish_all(connection, topics.telemetry(agent), [window.model_dump_json(by_alias=True)])
            time.sleep(0.1)
            if (state := rollout(registry, started["id"]))["state"] != "running":
                break
        assert state["state"] == "rolled_back" and state["stage"] == 0, state
        wait_for(lambda: [a.model_id for a in told if a.agent_id == canary][-1] == "incumbent", what="the rollback")
    finally:
        for connection in connections:
            connection.loop_stop()
            connection.disconnect()
        registry.stop()


def test_migration_0009_goes_down_and_up_again(database_url):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from edgejoule.registry.migrate import alembic_config, upgrade

    def tables() -> set[str]:
        engine = create_engine(database_url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    upgrade(database_url)
    assert {"rollouts", "rollout_events"} <= tables()
    command.downgrade(alembic_config(database_url), "0008")
    assert not {"rollouts", "rollout_events"} & tables()
    command.upgrade(alembic_config(database_url), "head")
    assert {"rollouts", "rollout_events"} <= tables()
