"""The agent's side of the HTTP contract in ``edgejoule.schemas.api``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from pydantic import ValidationError

from edgejoule.errors import EdgejouleError, first_problem
from edgejoule.schemas.api import API_PREFIX, SHA256_HEADER, Assignment, BrokerLogin, LoadEvent
from edgejoule.schemas.http import CONTENT_DIGEST_HEADER, digest_sha256, problem_detail
from edgejoule.schemas.manifest import ModelManifest
from edgejoule.schemas.messages import Heartbeat


class RegistryUnavailable(EdgejouleError):
    """The registry could not be reached or answered with a server error; the agent carries on."""


class RegistryRefused(EdgejouleError):
    """The registry answered and said no (4xx): ``status`` says why (401/403 credentials, 409 identity, ...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RegistryClient:
    def __init__(self, base_url: str, agent_id: str, token: str, timeout: float = 10.0) -> None:
        self.agent_id = agent_id
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url.rstrip("/") + API_PREFIX, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        # the last assignment read and its ETag: a poll that finds it unchanged gets a 304 and no body
        self._assignment: Assignment | None = None
        self._etag: str | None = None

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # only a real connection failure is "unreachable"
            raise RegistryUnavailable(f"registry unreachable at {self.base_url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 500:
            raise RegistryUnavailable(f"registry at {self.base_url} answered {response.status_code} on {path}")
        if response.status_code >= 400:
            detail = problem_detail(response.headers.get("content-type", ""), response.content)[:300]
            raise RegistryRefused(f"registry at {self.base_url} refused {method} {path}: {response.status_code} {detail}",
                                  response.status_code)
        return response

    def heartbeat(self, beat: Heartbeat) -> None:
        self._request("POST", f"/agents/{self.agent_id}/heartbeat", content=beat.model_dump_json(by_alias=True))

    def assignment(self) -> Assignment | None:
        """The current assignment, None without one. Each poll sends the ETag of the last one read
        (If-None-Match); the registry answers 304 while it is unchanged, and that one is returned again."""
        response = self._request("GET", f"/agents/{self.agent_id}/assignment",
                                 headers={"If-None-Match": self._etag} if self._etag else None)
        if response.status_code == 304:
            return self._assignment
        self._assignment = None if response.status_code == 204 else Assignment.model_validate(response.json())
        self._etag = response.headers.get("ETag") if self._assignment is not None else None
        return self._assignment

    def broker_login(self) -> BrokerLogin:
        return BrokerLogin.model_validate(self._request("GET", f"/agents/{self.agent_id}/broker-login").json())

    def manifest(self, assignment: Assignment) -> ModelManifest:
        """The assigned package's manifest. One this agent cannot read (a newer schema, a field it does not
        know) is an error the agent reports as a failed load, so the registry rolls it back."""
        data = self._request("GET", assignment.manifest_url.removeprefix(API_PREFIX)).json()
        try:
            return ModelManifest.model_validate(data)
        except ValidationError as exc:
            raise EdgejouleError(f"the manifest of {assignment.model_id} is not readable by this agent "
                                 f"({first_problem(exc)}); a newer agent may be needed") from None

    def download(self, assignment: Assignment, dest: Path, max_bytes: int) -> str:
        """Stream the package file to ``dest``; returns its sha256. Stops at ``max_bytes``."""
        digest, size = hashlib.sha256(), 0
        try:
            with self.http.stream("GET", assignment.package_url.removeprefix(API_PREFIX)) as response:
                if response.status_code >= 400:
                    raise EdgejouleError(f"package download refused: {response.status_code}")
                with dest.open("wb") as f:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise EdgejouleError(f"package larger than the {max_bytes}-byte limit")
                        digest.update(chunk)
                        f.write(chunk)
                # RFC 9530's Content-Digest, and the X-Content-SHA256 of registries before it
                announced = {header: value for header, value in (
                    (CONTENT_DIGEST_HEADER, digest_sha256(response.headers.get(CONTENT_DIGEST_HEADER, ""))),
                    (SHA256_HEADER, response.headers.get(SHA256_HEADER))) if value}
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"download interrupted: {exc}") from None
        for header, value in announced.items():
            if value != digest.hexdigest():
                raise EdgejouleError(f"downloaded bytes do not match the registry's {header} header")
        return digest.hexdigest()

    def event(self, event: LoadEvent) -> None:
        self._request("POST", f"/agents/{self.agent_id}/events", content=event.model_dump_json())

    def telemetry(self, body: str) -> None:
        """Post one telemetry window, as JSON (the spool keeps them serialized)."""
        self._request("POST", "/telemetry", content=body)
