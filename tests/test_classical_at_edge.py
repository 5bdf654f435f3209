"""Classical methods deployed to agents like packages (``method:rzf``): served through the agent's inputs, measured
by its meter, reported with its telemetry, shown by the fleet beside the DNN. No torch: the agent stays torch-free."""

from __future__ import annotations

import io
import json
import threading

import httpx
import numpy as np
import pytest

from edgejoule.baselines import method_energy_uj, run_precoding_baseline
from edgejoule.edge_agent.agent import Agent
from edgejoule.edge_agent.config import AgentSettings
from edgejoule.edge_agent.sources import open_source
from edgejoule.schemas.targets import parse_target
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.precoding import sum_rate
from tests.brokers import free_port
from tests.conftest import run_cli, wait_for
from tests.fleet import start_registry

SITE = "urban-nlos"


@pytest.fixture
def registry(tmp_path, mosquitto):
    server = start_registry(tmp_path / "registry", mosquitto.url)
    yield server
    server.stop()


def register(server, agent_id: str) -> str:
    with server.admin() as admin:
        response = admin.post("/agents", json={"agent_id": agent_id, "site": SITE})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def agent_settings(server, tmp_path, agent_id: str, token: str, **extra) -> AgentSettings:
    return AgentSettings(agent_id=agent_id, site=SITE, registry_url=server.url, token=token, data_dir=tmp_path / agent_id,
                         idle_seconds=0.05, window_inferences=100, warmup_inferences=0, meter="cpu_time", **extra)


def cli_env(server) -> dict[str, str]:
    return {"EDGEJOULE_REGISTRY_URL": server.url, "EDGEJOULE_ADMIN_TOKEN": server.admin_token}


def test_target_ids_are_canonical_and_refuse_what_is_not_a_method():
    assert parse_target("m1") is None
    assert parse_target("method:rzf-equal").id == "method:rzf-equal"
    assert parse_target("method:wmmse(tol=1e-2)").id == parse_target("method:wmmse(tol=0.01)").id == "method:wmmse(tol=0.01)"
    assert parse_target("method:wmmse(tol=0.01,init=zf)").id == "method:wmmse(init=zf,tol=0.01)"
    for bad in ("method:", "method:rzf()", "method:rzf(tol)", "method:a b", "method:wmmse(tol=0.01;rm -rf)"):
        with pytest.raises(ValueError, match="method:NAME"):
            parse_target(bad)


def test_an_agent_serves_rzf_over_mqtt_with_the_sum_rate_of_baseline_run(registry, tmp_path, mosquitto):
    """Deployed by the CLI, announced and served, measured by the agent's meter; the sum rate it reports is the one
    ``baseline run`` finds on the same channels (the replay source serves the test split in order)."""
    token = register(registry, "bs-c")
    deployed = run_cli("deploy", "--method", "rzf", "--site", SITE, "--json", env=cli_env(registry))
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["model_id"] == "method:rzf" and json.loads(deployed.stdout)["agents"] == ["bs-c"]
    agent = Agent(agent_settings(registry, tmp_path, "bs-c", token, broker_url=mosquitto.url))
    try:
        sent = agent.once(200)
    finally:
        agent.close()
    assert [(m.model_id, m.fallback, m.inferences) for m in sent] == [("method:rzf", None, 100)] * 2
    dataset = load_dataset(get_site(SITE))
    reference = run_precoding_baseline(dataset, "rzf", limit=200)
    achieved = np.mean([m.quality["sum_rate"] for m in sent])
    assert achieved == pytest.approx(reference.sum_rate_mean, rel=1e-6)
    # the estimate is the implemented counting on the agent's check channels, the counting baseline run reports
    estimate = method_energy_uj(parse_target("method:rzf"), dataset.H("test", 128), dataset.noise_power, dataset.p_max)
    assert sent[0].estimated_energy_uj == pytest.approx(estimate) == pytest.approx(reference.energy_uj("implemented"))
    with registry.admin() as admin:
        rows = wait_for(lambda: [r for r in admin.get("/fleet", params={"group_by": "model"}).json()
                                 if r["model_id"] == "method:rzf" and r["inferences"] == 200])
        assert rows[0]["quality"]["sum_rate"] == pytest.approx(reference.sum_rate_mean, rel=1e-6)
        assert admin.get("/agents").json()[0]["current_model_id"] == "method:rzf"
    fleet = run_cli("fleet", "--group-by", "model", env=cli_env(registry) | {"COLUMNS": "200"})
    assert fleet.returncode == 0 and "method:rzf" in fleet.stdout, fleet.stderr
    compared = json.loads(run_cli("compare", "--site", SITE, "--json", env=cli_env(registry)).stdout)
    assert [(s["name"], s["classical"], s["inferences"]) for s in compared["served"]] == [("method:rzf", True, 200)]
    assert compared["sentence"].endswith("nothing to compare")  # no DNN served here


def test_a_method_is_served_on_the_base_stations_endpoint_and_survives_a_restart(registry, tmp_path):
    """The http input path answers with the method's precoder; the method is installed like a package, so an agent
    restarted while the registry is away still serves it, and a new assignment keeps it as the previous one."""
    token = register(registry, "bs-e")
    with registry.admin() as admin:
        assert admin.post("/deployments", json={"site": SITE, "model_id": "method:wmmse(tol=1e-2)"}).json()[
            "model_id"] == "method:wmmse(tol=0.01)"
    settings = agent_settings(registry, tmp_path, "bs-e", token, source=f"http:127.0.0.1:{free_port()}")
    agent = Agent(settings)
    agent.start()
    assert agent.model_id == "method:wmmse(tol=0.01)"
    source = open_source(settings.source, SITE)
    messages = []
    server = threading.Thread(target=lambda: messages.append(agent.window(source, 3)))
    server.start()
    H = load_dataset(get_site(SITE)).H("test", 3)
    answers = []
    with httpx.Client(timeout=30) as client:
        for h in H:
            body = io.BytesIO()
            np.savez(body, H=h)
            response = client.post(f"http://{settings.source[5:]}/precode", content=body.getvalue())
            assert response.status_code == 200, response.text
            answers.append(np.load(io.BytesIO(response.content))["W"])
    server.join(30)
    site = get_site(SITE)
    expected = run_precoding_baseline(load_dataset(site), "wmmse", limit=3, tol=0.01)
    assert messages[0].model_id == "method:wmmse(tol=0.01)"
    assert messages[0].quality["sum_rate"] == pytest.approx(expected.sum_rate_mean, rel=1e-5)
    W = np.stack(answers)
    np.testing.assert_allclose(sum_rate(H, W, site.noise_power_w).mean(), expected.sum_rate_mean, rtol=1e-5)
    agent.close()

    restarted = Agent(settings.model_copy(update={"registry_url": "http://127.0.0.1:9"}))  # the registry is away
    restarted.start()
    assert restarted.model_id == "method:wmmse(tol=0.01)"
    with registry.admin() as admin:
        admin.post("/deployments", json={"site": SITE, "model_id": "method:rzf-equal"}).raise_for_status()
    agent = Agent(settings)
    agent.start()
    assert (agent.model_id, agent.store.installed_id("previous")) == ("method:rzf-equal", "method:wmmse(tol=0.01)")
    agent.close()


@pytest.mark.parametrize("target, says", [
    ("method:nope", "unknown baseline 'nope'"),
    ("method:sphere-detector", "serves detection, not precoding"),
    ("method:wmmse(tol=x)", "the method fails with these options"),
    ("method:wmmse(foo=1)", "takes no option 'foo'"),
    ("method:rzf(", "is not a method target"),
])
def test_a_method_that_cannot_be_served_is_refused_when_deployed(registry, target, says):
    register(registry, "bs-x")
    with registry.admin() as admin:
        response = admin.post("/deployments", json={"site": SITE, "model_id": target})
        assert response.status_code == 422 and says in response.json()["detail"], response.text
        assert admin.get("/agents/bs-x/assignment").status_code == 204  # nothing was assigned


def test_deploy_cli_takes_a_package_or_a_method_in_one_line(registry):
    env = cli_env(registry)
    for args, says in [(["m1", "--method", "rzf"], "name a package or give --method, not both"),
                       ([], "name a package or give --method, not both"),
                       (["--method", "wmmse", "--option", "tol"], "--option takes KEY=VALUE"),
                       (["m1", "--option", "tol=1"], "--option goes with --method"),
                       (["--method", "nope"], "unknown baseline 'nope'")]:
        result = run_cli("deploy", *args, "--site", SITE, env=env)
        assert result.returncode != 0 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
            (args, result.stderr)


def group(model_id: str | None, sum_rate: float, estimated: float | None, measured: float = 5.0) -> dict:
    return {"site": SITE, "model_id": model_id, "windows": 2, "inferences": 200, "energy_total_uj": measured,
            "energy_dynamic_uj": measured / 2, "estimated_energy_uj": estimated, "latency_ms_p50": 0.1,
            "latency_ms_p95": 0.2, "quality": {"sum_rate": sum_rate}, "meters": ["cpu_time (estimated)"]}


@pytest.mark.parametrize("rows, says", [
    ([group("dnn", 11.8, 0.38, 20.0), group("method:rzf-equal", 11.6, 0.009, 40.0), group("method:wmmse(tol=0.01)", 11.9, 3.0)],
     "urban-nlos: the DNN reaches 99.2 % of WMMSE at 0.38 uJ (implemented counting); method:rzf-equal reaches "
     "97.5 % of WMMSE at 0.009 uJ: the DNN buys +1.7 % sum rate for 42.2x the energy. Metered on the agents "
     "(estimated by a meter without a sensor): 20 uJ per inference for the DNN, 40 uJ for method:rzf-equal: the "
     "other order than the counting's"),
    ([group("dnn", 2.5, 0.4), group("method:rzf-equal", 11.6, 0.009), group(None, 10.0, 0.008)],
     "method:rzf-equal reaches 11.600 bit/s/Hz at 0.009 uJ: it dominates the DNN (more sum rate for less energy), so "
     "the DNN should not be deployed here"),
    ([group("dnn", 11.0, 0.4), group("method:wmmse", 11.5, 3.0)],
     "method:wmmse reaches 100.0 % of WMMSE at 3 uJ: the DNN saves 7.5x the energy for 4.3 % less sum rate"),
    ([group("method:rzf", 11.0, 0.01)], "nothing to compare"),
])
def test_the_verdict_names_who_wins_under_the_implemented_counting(rows, says):
    from edgejoule.registry.verdict import verdict

    found = verdict(SITE, rows)
    assert says in found.sentence, found.sentence
    assert [s.sum_rate for s in found.served] == sorted((r["quality"]["sum_rate"] for r in rows), reverse=True)
