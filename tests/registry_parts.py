"""Parts for the registry tests: model packages (a valid manifest around bytes with the TFLite identifier;
the registry checks a package's bytes, not its graph), telemetry windows, and a registry with agents."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import httpx

from edgejoule.schemas.manifest import EnergyEstimate, ModelManifest, TensorSpec
from edgejoule.schemas.messages import Telemetry

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def package(model_id: str, site: str = "urban-nlos", energy_uj: float = 10.0, sum_rate: float = 11.0,
            training_energy_j: float = 5.0, size: int = 256, counting: str = "implemented") -> tuple[bytes, bytes]:
    """(manifest JSON, model bytes) of a package the registry accepts (``counting``: its estimate's rule)."""
    data = b"\x1c\x00\x00\x00TFL3" + os.urandom(size - 8)
    manifest = ModelManifest(
        id=model_id, site=site, task="precoding", family="precoder_cnn", arch={"c_out": 8, "d_fcl": 512},
        inputs=[TensorSpec(name="H", shape=[-1, 2, 4, 64])], outputs=[TensorSpec(name="W", shape=[-1, 512])],
        metrics={"sum_rate": sum_rate, "n_train": 1000}, energy=EnergyEstimate(total_uj=energy_uj, counting=counting),
        training_energy_j=training_energy_j, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    return manifest.to_json().encode(), data


def upload(admin: httpx.Client, manifest: bytes, data: bytes) -> httpx.Response:
    return admin.post("/models", files={"manifest": ("manifest.json", manifest, "application/json"),
                                        "model": ("model.tflite", data, "application/octet-stream")})


def window(agent_id: str, model_id: str | None, minute: int, inferences: int = 100, energy_uj: float = 50.0,
           p95_ms: float = 1.0, sum_rate: float = 11.0, site: str = "urban-nlos", **extra) -> Telemetry:
    """One minute-long telemetry window, ``minute`` minutes after T0."""
    start = T0 + timedelta(minutes=minute)
    return Telemetry(agent_id=agent_id, site=site, model_id=model_id, window_start=start,
                     window_end=start + timedelta(minutes=1), inferences=inferences, meter="rapl", meter_kind="measured",
                     energy_total_uj=energy_uj, energy_dynamic_uj=energy_uj / 2, idle_power_w=2.0,
                     estimated_energy_uj=10.0, latency_ms_p50=p95_ms / 2, latency_ms_p95=p95_ms, latency_ms_p99=p95_ms * 2,
                     **({"quality": {"sum_rate": sum_rate}} | extra))


def as_agent(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def register(admin: httpx.Client, agent_id: str, site: str = "urban-nlos") -> str:
    response = admin.post("/agents", json={"agent_id": agent_id, "site": site})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def mqtt_password(client: httpx.Client, agent_id: str) -> str:
    """The agent's broker password, as the registry answers it (to the admin or the agent itself)."""
    response = client.get(f"/agents/{agent_id}/broker-login")
    assert response.status_code == 200, response.text
    return response.json()["mqtt_password"]


def send(client: httpx.Client, path: str, message) -> httpx.Response:
    """POST a pydantic message as the agent does (its own JSON, by alias)."""
    return client.post(path, content=message.model_dump_json(by_alias=True), headers={"Content-Type": "application/json"})


def window_now(agent_id: str, model_id: str | None, later_s: float = 0.0, **values) -> Telemetry:
    """A 10-second window ending now (or ``later_s`` seconds from now), otherwise as :func:`window`: a rollout's
    gate reads the windows that end after its stage began."""
    end = datetime.now(timezone.utc) + timedelta(seconds=later_s)
    return window(agent_id, model_id, 0, **values).model_copy(
        update={"window_start": end - timedelta(seconds=10), "window_end": end})
