"""The registry's HTTP conventions as a generic client meets them: every error is RFC 9457 problem details, the
lists come in pages linked by RFC 8288 ``Link: rel="next"`` (which the CLI follows), an unchanged assignment is a
304 to a poll that sends its ETag, and a package download carries its RFC 9530 ``Content-Digest``."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from edgejoule.registry.db import AgentRow, DeadLetterRow
from edgejoule.schemas.http import PROBLEM_JSON
from tests.conftest import run_cli
from tests.fleet import start_registry
from tests.registry_parts import as_agent, package, register, send, upload, window


@pytest.fixture
def registry(tmp_path):
    server = start_registry(tmp_path / "data", None, max_upload_bytes=4096)
    yield server
    server.stop()


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "about:blank" and body["status"] == status and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_every_error_is_a_problem_and_the_openapi_says_so(registry):
    with registry.admin() as admin:
        upload(admin, *package("m1"))
        token = register(admin, "bs-1")
        # the gate's refusals, before the app
        assert "Bearer" in _problem(httpx.get(registry.url + "/api/v1/models"), 401)["detail"]
        manifest, data = package("m2")
        assert "limit" in _problem(upload(admin, manifest, data + b"\0" * 5000), 413)["detail"]
        # a request that does not match the schema: detail is one line, errors lists each place
        invalid = _problem(admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m1", "fraction": 0}), 422)
        assert invalid["detail"].startswith("body.fraction: ") and invalid["errors"][0]["loc"] == ["body", "fraction"]
        # the service's errors, the routes' own and the router's
        assert "nope" in _problem(admin.get("/models/nope/manifest"), 404)["detail"]
        assert "already" in _problem(upload(admin, *package("m1")), 409)["detail"]
        _problem(admin.get("/no-such-resource"), 404)
        _problem(admin.get("/agents", params={"cursor": "not-a-cursor"}), 400)
    _problem(as_agent(registry.url, token).get("/models"), 403)
    document = httpx.get(registry.url + "/openapi.json").json()
    answers = [(status, answer) for path in document["paths"].values() for operation in path.values()
               for status, answer in operation["responses"].items() if status[0] in "45"]
    assert answers and all(list(answer["content"]) == [PROBLEM_JSON] for _, answer in answers)


def test_an_unhandled_error_is_a_problem_too(tmp_path):
    from fastapi.testclient import TestClient

    from edgejoule.registry.app import create_app
    from edgejoule.registry.settings import RegistrySettings

    app = create_app(RegistrySettings(data_dir=tmp_path, admin_token="admin-" + "x" * 20))

    def broken() -> None:
        raise RuntimeError("a secret the caller must not read")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        body = _problem(client.get("/broken"), 500)
    assert "secret" not in json.dumps(body)


def test_lists_come_in_linked_pages_and_the_cli_reads_them_all(registry):
    with Session(create_engine(f"sqlite:///{registry.data_dir / 'registry.db'}")) as session:
        session.add_all([AgentRow(id=f"bs-{i:03d}", site="urban-nlos", token_hash="0" * 64) for i in range(105)])
        session.add_all([DeadLetterRow(topic="t", reason=f"r{i}", payload="{}") for i in range(7)])
        session.commit()
    with registry.admin() as admin:
        for i in range(5):
            upload(admin, *package(f"m{i}", site=("urban-nlos", "campus-los")[i % 2]))
        for path, key, expected in (
                ("/agents", "agent_id", [f"bs-{i:03d}" for i in range(105)]),
                ("/models", "id", ["m1", "m3", "m0", "m2", "m4"]),  # by site, then version
                ("/dead-letters", "reason", [f"r{i}" for i in reversed(range(7))])):  # newest first
            seen, response = [], admin.get(path, params={"limit": 2})
            while True:
                assert len(response.json()) <= 2
                seen += [row[key] for row in response.json()]
                if "next" not in response.links:
                    break
                response = admin.get(response.links["next"]["url"])
            assert seen == expected, path
        # the filter travels in the link
        first = admin.get("/models", params={"site": "campus-los", "limit": 1})
        assert [m["id"] for m in admin.get(first.links["next"]["url"]).json()] == ["m3"]
        default = admin.get("/agents")  # 100 a page unless asked
        assert len(default.json()) == 100 and "next" in default.links
        for i in range(5):  # the fleet's groups page too, in the order (site, model, agent)
            send(admin, "/telemetry", window(f"bs-{i:03d}", None, i)).raise_for_status()
        seen, response = [], admin.get("/fleet", params={"group_by": "agent", "limit": 2})
        while "next" in response.links:
            seen += [row["agent_id"] for row in response.json()]
            response = admin.get(response.links["next"]["url"])
        assert seen + [row["agent_id"] for row in response.json()] == [f"bs-{i:03d}" for i in range(5)]
    env = {"EDGEJOULE_REGISTRY_URL": registry.url, "EDGEJOULE_ADMIN_TOKEN": registry.admin_token}
    listed = run_cli("agents", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 105  # past the first page of 100


def test_an_unchanged_assignment_is_a_304_to_a_poll_with_its_etag(registry):
    from edgejoule.edge_agent.registry_client import RegistryClient

    with registry.admin() as admin:
        for model_id in ("m1", "m2"):
            upload(admin, *package(model_id))
        token = register(admin, "bs-1")
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m1"}).raise_for_status()
        agent = as_agent(registry.url, token)
        first = agent.get("/agents/bs-1/assignment")
        etag = first.headers["ETag"]
        again = agent.get("/agents/bs-1/assignment", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
        assert agent.get("/agents/bs-1/assignment", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        client = RegistryClient(registry.url, "bs-1", token)
        statuses: list[int] = []
        client.http.event_hooks["response"].append(lambda response: statuses.append(response.status_code))
        held = client.assignment()
        assert held.model_id == "m1" and client.assignment() == held and statuses == [200, 304]
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m2"}).raise_for_status()
        changed = agent.get("/agents/bs-1/assignment", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.json()["model_id"] == "m2" and changed.headers["ETag"] != etag
        assert client.assignment().model_id == "m2" and statuses == [200, 304, 200]


def test_a_package_carries_its_content_digest_which_the_agent_checks(registry, tmp_path):
    from edgejoule.edge_agent.registry_client import RegistryClient
    from edgejoule.errors import EdgejouleError

    manifest, data = package("m1")
    with registry.admin() as admin:
        upload(admin, manifest, data)
        token = register(admin, "bs-1")
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "m1"}).raise_for_status()
        served = admin.get("/models/m1/package")
    digest = hashlib.sha256(data).digest()
    assert served.headers["Content-Digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert served.headers["X-Content-SHA256"] == digest.hex()  # for agents that predate Content-Digest
    client = RegistryClient(registry.url, "bs-1", token)
    assignment = client.assignment()
    assert client.download(assignment, tmp_path / "ok.tflite", 10_000) == digest.hex()

    def forged(request: httpx.Request) -> httpx.Response:  # the right bytes under another digest
        wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        return httpx.Response(200, content=data, headers={"Content-Digest": f"sha-512=:AAAA:, sha-256=:{wrong}:"})

    client.http = httpx.Client(base_url=client.http.base_url, transport=httpx.MockTransport(forged))
    with pytest.raises(EdgejouleError, match="do not match the registry's Content-Digest header"):
        client.download(assignment, tmp_path / "bad.tflite", 10_000)
