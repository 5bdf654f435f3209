"""Real parts for the fleet tests: tiny exported packages, the registry app served by uvicorn on a loopback
port, and a PostgreSQL 15 server started for the test run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.brokers import free_port

TINY_ARCH = {"c_out": 4, "d_fcl": 32, "n_t": 64, "n_u": 4}


def make_chosen(directory: Path, bits: list[int], site: str = "urban-nlos", family: str = "precoder_cnn") -> Path:
    """A compression result like ``edgejoule compress`` writes, for a tiny network with LSQ weights."""
    import torch

    from edgejoule import plugin_manager
    from edgejoule.plugins.precoding.precoder_training import TrainConfig, input_scale, train, unit_noise_channels
    from edgejoule.plugins.quantization.lsq import attach, freeze
    from edgejoule.sites import get_site, load_dataset

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(get_site(site).with_overrides(n_samples=400))
    models = plugin_manager.get("models", family)
    model = models.build(TINY_ARCH)
    H_train, H_val = unit_noise_channels(ds, "train"), unit_noise_channels(ds, "val")
    model.calibrate(input_scale(H_train), ds.p_max)
    attach(model, bits)
    train(model, H_train, H_val, ds.p_max, TrainConfig(epochs=2, batch_size=100))
    model.eval()
    frozen, _ = freeze(model)
    torch.save(frozen.state_dict(), directory / "chosen.pt")
    energy = models.energy(TINY_ARCH, bits)
    (directory / "chosen.json").write_text(json.dumps({
        "site": site, "family": family, "arch": TINY_ARCH, "bits": bits, "metrics": {"sum_rate": 1.0},
        "energy": {"energy_uj": energy.total_uj, "compute_uj": energy.compute_uj, "weights_uj": energy.weights_uj,
                   "activations_uj": energy.activations_uj},
        "weights": "chosen.pt", "training_energy_j": 12.5,
    }))
    return directory / "chosen.json"


@dataclass
class Registry:
    url: str
    admin_token: str
    data_dir: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {self.admin_token}"},
                            timeout=30)


@dataclass
class RegistryServer(Registry):
    """The registry app served by uvicorn in a thread of the test's process."""

    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_registry(data_dir: Path, broker_url: str | None, database_url: str | None = None,
                   max_upload_bytes: int = 64 * 1024 * 1024) -> RegistryServer:
    import uvicorn

    from edgejoule.registry.app import create_app
    from edgejoule.registry.settings import RegistrySettings

    settings = RegistrySettings(data_dir=data_dir, database_url=database_url, admin_token="admin-" + "x" * 20,
                                broker_url=broker_url, max_upload_bytes=max_upload_bytes)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the registry did not start")
        time.sleep(0.05)
    return RegistryServer(f"http://127.0.0.1:{port}", settings.admin_token, data_dir, server, thread)


def publish(server: RegistryServer, package: Path) -> dict:
    with server.admin() as client:
        response = client.post("/models", files={"manifest": (package / "manifest.json").read_bytes(),
                                                 "model": (package / "model.tflite").read_bytes()})
    response.raise_for_status()
    return response.json()


class Postgres:
    """A throwaway PostgreSQL 15 cluster on a loopback port (REFERENCE.md section 7)."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgejoule-pg-"))
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # the server pg_ctl starts must not hold our pipes open: its output goes to a log file
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def start(self) -> "Postgres":
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"), "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}", "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class ServedRegistry(Registry):
    """``edgejoule registry serve`` in its own process (with its embedded broker unless told otherwise)."""

    process: subprocess.Popen

    @property
    def broker_url(self) -> str:
        return (self.data_dir / "broker-url").read_text()

    def up(self) -> bool:
        """Serving, and subscribed to the broker."""
        try:
            return httpx.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: uvicorn's graceful shutdown, then the broker's
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve(data_dir: Path, *args: str, port: int | None = None, timeout: float = 60) -> ServedRegistry:
    """Start ``edgejoule registry serve`` on a loopback port and wait until it is ready."""
    import sys

    port = port or free_port()
    token = "admin-" + "s" * 20
    env = {**os.environ, "EDGEJOULE_REGISTRY_ADMIN_TOKEN": token}
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir.parent / f"serve-{port}.log").open("a") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "edgejoule"), "registry", "serve", "--port",
                                    str(port), "--data-dir", str(data_dir), *args], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    served = ServedRegistry(f"http://127.0.0.1:{port}", token, data_dir, process)
    deadline = time.monotonic() + timeout
    while not served.up():
        if process.poll() is not None or time.monotonic() > deadline:
            served.stop()
            raise RuntimeError(f"registry serve did not come up: {(data_dir.parent / f'serve-{port}.log').read_text()}")
        time.sleep(0.1)
    return served
