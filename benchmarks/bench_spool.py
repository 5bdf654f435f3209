"""The agent's telemetry path under load (issue 18 items 4 and 5): the spool's write latency as it fills, and a
base station's request latency with the broker running vs frozen (SIGSTOP).

1. Spool: ``Spool.put`` of one window with 0, 20,000 and 100,000 windows waiting (prefilled through SQLite
   directly), ``synchronous=NORMAL`` (the default) and ``FULL`` (an fsync per window); median, p99 and mean of
   ``--puts`` puts each.
2. Serving: ``Agent.run`` on a TCP socket source (docs/EDGE.md's frames) with ZF (or ``--package``), windows of
   50, reporting to a real mosquitto with a subscriber standing in for the registry; one base station sends
   ``--requests`` frames back to back per phase and times each round trip: broker running, then frozen.

Usage: .venv/bin/python benchmarks/bench_spool.py [--puts 1000] [--requests 4000] [--package DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgejoule.edge_agent.telemetry import SPOOL_FILE, Spool  # noqa: E402
from edgejoule.schemas.messages import Telemetry  # noqa: E402


def window() -> Telemetry:
    return Telemetry(agent_id="bench", site="urban-nlos", window_start="2026-01-01T00:00:00Z",
                     window_end="2026-01-01T00:00:01Z", inferences=500, meter="cpu_time", meter_kind="estimated",
                     energy_total_uj=174.0, energy_dynamic_uj=150.0, idle_power_w=0.0, latency_ms_p50=0.3,
                     latency_ms_p95=0.4, latency_ms_p99=0.5, quality={"sum_rate": 2.7})


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) * 1e3


def spool_latency(queued: int, sync: str, puts: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        Spool(Path(tmp), sync=sync).close()  # creates the table
        body = window().model_dump_json(by_alias=True)
        with sqlite3.connect(Path(tmp) / SPOOL_FILE) as db:
            db.executemany("INSERT INTO messages (body) VALUES (?)", ((body,) for _ in range(queued)))
        spool = Spool(Path(tmp), max_messages=queued + puts, sync=sync)
        messages = [window() for _ in range(puts)]
        costs = []
        for message in messages:
            t0 = time.perf_counter()
            spool.put(message)
            costs.append(time.perf_counter() - t0)
        spool.close()
    return (f"  {queued:>7,} queued, synchronous={sync.upper():6}: median {percentile_ms(costs, 50):.3f} ms, "
            f"p99 {percentile_ms(costs, 99):.3f} ms, mean {statistics.fmean(costs) * 1e3:.3f} ms per window")


def round_trips(port: int, H: np.ndarray, n: int) -> list[float]:
    """``n`` frames sent back to back on one connection; each round trip's seconds."""
    header = json.dumps({"shape": list(H.shape[1:])}).encode()
    frames = [struct.pack(">I", len(header)) + header + h.astype("<c8").tobytes() for h in H]
    costs = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        stream = conn.makefile("rb")
        for i in range(n):
            t0 = time.perf_counter()
            conn.sendall(frames[i % len(frames)])
            reply = json.loads(stream.read(struct.unpack(">I", stream.read(4))[0]))
            stream.read(int(np.prod(reply["shape"])) * 8)
            costs.append(time.perf_counter() - t0)
    return costs


def serving_latency(requests: int, package: Path | None) -> list[str]:
    import paho.mqtt.client as mqtt

    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageStore
    from edgejoule.schemas import topics
    from edgejoule.schemas.manifest import ModelManifest
    from edgejoule.sites import get_site, load_dataset
    from tests.brokers import Mosquitto, free_port

    broker = Mosquitto().start()
    registry = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="registry-stand-in", protocol=mqtt.MQTTv5)
    registry.reconnect_delay_set(1, 2)
    registry.connect("127.0.0.1", broker.port)
    registry.subscribe(topics.telemetry("bench"), qos=1)
    registry.loop_start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        settings = AgentSettings(agent_id="bench", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                                 broker_url=broker.url, data_dir=Path(tmp), idle_seconds=0.05, idle_refresh_windows=10**6,
                                 window_inferences=50, source=f"tcp:127.0.0.1:{port}", shutdown_seconds=1)
        if package is not None:
            PackageStore(settings.packages_dir).install(
                ModelManifest.model_validate_json((package / "manifest.json").read_text()), package / "model.tflite")
        agent = Agent(settings)
        serving = threading.Thread(target=agent.run, daemon=True)
        serving.start()
        H = load_dataset(get_site("urban-nlos")).H("test", 200)
        while not agent.mqtt.connected.is_set():
            time.sleep(0.05)
        round_trips(port, H, 500)  # the agent's warm-up, and ours
        rows = []
        for phase in ("running", "frozen (SIGSTOP)", "running again"):
            if phase.startswith("frozen"):
                os.kill(broker.process.pid, signal.SIGSTOP)
            costs = round_trips(port, H, requests)
            if phase.startswith("frozen"):
                waiting = len(agent.outbox.spool)
                os.kill(broker.process.pid, signal.SIGCONT)
            rows.append(f"  broker {phase:17}: p50 {percentile_ms(costs, 50):.3f} ms, p99 {percentile_ms(costs, 99):.3f} ms,"
                        f" max {max(costs) * 1e3:.1f} ms over {requests} requests"
                        + (f" ({waiting} windows spooled meanwhile)" if phase.startswith("frozen") else ""))
        agent.stop.set()
        serving.join(10)
        agent.close()
    registry.loop_stop()
    broker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--puts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--package", type=Path, help="an exported package to serve (default: ZF)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"spool write latency ({args.puts} windows of {len(window().model_dump_json())} bytes each):")
    for sync in ("normal", "full"):
        for queued in (0, 20_000, 100_000):
            print(spool_latency(queued, sync, args.puts), flush=True)
    print(f"base station round trip, TCP frames, {'package ' + args.package.name if args.package else 'ZF'}, "
          "windows of 50 reported over MQTT:")
    print("\n".join(serving_latency(args.requests, args.package)))
    print(f"load average (1 min) before/after: {load:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
