"""schemathesis against the registry's own OpenAPI, with the admin token and with an agent's token, on a
live server with data in it, on SQLite and on PostgreSQL: a bounded number of generated requests per operation;
none may get a 5xx, and every answer must match the response schema the OpenAPI documents for it."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import FailureGroup, response_schema_conformance

from tests.fleet import start_registry
from tests.postgres import fresh_database, postgres_server  # noqa: F401 (fixture)
from tests.registry_parts import package, register, send, upload, window

EXAMPLES_PER_OPERATION = int(os.environ.get("EDGEJOULE_FUZZ_EXAMPLES", "12"))  # CI: bounded


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    database = fresh_database(request.getfixturevalue("postgres_server")) if request.param == "postgresql" else None
    server = start_registry(tmp_path_factory.mktemp("fuzz") / "data", None, database, max_upload_bytes=4096)
    with server.admin() as admin:
        upload(admin, *package("m1"))
        server.agent_token = register(admin, "bs-1")
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m1"}).raise_for_status()
        send(admin, "/telemetry", window("bs-1", "m1", 0)).raise_for_status()
    yield server
    server.stop()


@pytest.mark.parametrize("who", ["admin", "agent"])
def test_no_server_errors(live, who):
    # schemathesis' own pytest loader does not run on this pytest; drive its strategies with hypothesis directly
    token = live.admin_token if who == "admin" else live.agent_token
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures, calls = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        def check(case):
            nonlocal calls
            calls += 1
            response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {token}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
                return
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except FailureGroup as exc:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{'; '.join(failure.title for failure in exc.exceptions)}: {response.text[:200]}")

        check()
    assert calls >= 10 * len(list(schema.get_all_operations()))
    assert not failures, "\n".join(failures)
