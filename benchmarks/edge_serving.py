"""The edge agent's serving path beside a bare ``interpreter.invoke``, on one installed package, without torch.

``bench_edge.py`` times the two loops here (alternating rounds); ``bench_edge.py --instructions`` runs this
file as a torch-free process under ``valgrind --tool=callgrind --dump-before=getppid``, which writes the
instructions executed since the previous ``os.getppid()`` call (the phase markers: nothing else in these
loops calls it) into one profile file per phase. The phases, in order:

    start-up and warm-up | an empty phase (the marker's own cost) | bare N | serve N | agent N | exit

so the process start-up, the imports, the package load and the warm-up are in a file of their own and never
enter the comparison, and the instructions per inference are the bare and agent phases' counts over N. "serve"
is ``PrecoderRuntime.serve`` alone in a loop (the channel copied into the input buffer; for packages exported
before the graph normalized, also the normalization and the power scaling in numpy around the invoke), so
agent - serve is the window's own bookkeeping. N is ``windows`` telemetry windows of ``inferences`` each, so
the agent's per-window costs (meter reads, percentiles, the Telemetry message) are counted at the share a real
window gives them.

Usage (what ``bench_edge.py --instructions`` runs):
    valgrind --tool=callgrind --dump-before=getppid --callgrind-out-file=OUT/cg \\
        .venv/bin/python benchmarks/edge_serving.py PACKAGE_DIR WORK_DIR CHANNELS.npz [--inferences 500] [--windows 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np


def serving_agent(package: Path, work: Path, inferences: int):
    """An agent with ``package`` installed, the cpu_time meter and windows of ``inferences``, as a site runs it
    (idle power measured once here, never refreshed during the benchmark)."""
    from edgejoule.edge_agent.agent import Agent
    from edgejoule.edge_agent.config import AgentSettings
    from edgejoule.edge_agent.packages import PackageStore
    from edgejoule.schemas.manifest import ModelManifest

    settings = AgentSettings(agent_id="bench", site="urban-nlos", registry_url="http://127.0.0.1:9", meter="cpu_time",
                             data_dir=work, idle_seconds=0.2, idle_refresh_windows=10**6, window_inferences=inferences)
    PackageStore(settings.packages_dir).install(ModelManifest.model_validate_json((package / "manifest.json").read_text()),
                                                package / "model.tflite")
    return Agent(settings)


def replay(H: np.ndarray) -> Iterator[tuple[np.ndarray, None]]:
    """The channels over and over, as the agent's replay source yields them."""
    while True:
        for h in H:
            yield h, None


class Loops:
    """The two loops compared, on the same interpreter and the same channels.

    Bare: ``set_tensor`` of an input prepared beforehand, ``invoke``, ``get_tensor``: the least any caller does
    per channel. Agent: ``Agent.window`` on a replay source, the real serving path (``serve``, latency
    and energy bookkeeping, the sum rate, the telemetry message; not the publish).
    """

    def __init__(self, agent, H: np.ndarray) -> None:
        self.agent = agent
        runtime = agent.package.runtime
        self.interpreter = runtime.interpreter
        self.index_in, self.index_out = runtime.input["index"], runtime.output["index"]
        self.xs = [runtime.features(H[i : i + 1]) for i in range(len(H))]
        self.H = H
        self.stream = replay(H)

    def bare(self, count: int) -> None:
        interpreter, index_in, index_out, xs = self.interpreter, self.index_in, self.index_out, self.xs
        for i in range(count):
            interpreter.set_tensor(index_in, xs[i % len(xs)])
            interpreter.invoke()
            interpreter.get_tensor(index_out)

    def serve(self, count: int) -> None:
        serve, H = self.agent.package.runtime.serve, self.H
        for i in range(count):
            serve(H[i % len(H)])

    def served(self, windows: int, inferences: int) -> None:
        for _ in range(windows):
            self.agent.window(self.stream, inferences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("channels", type=Path, help=".npz with H [B, N_U, N_T] complex64")
    parser.add_argument("--inferences", type=int, default=500, help="inferences per telemetry window")
    parser.add_argument("--windows", type=int, default=1, help="windows in N")
    args = parser.parse_args()
    sys.modules["torch"] = None  # the edge device has no torch: importing it here would be a bug
    loops = Loops(serving_agent(args.package, args.work, args.inferences), np.load(args.channels)["H"])
    loops.served(1, 20)  # the agent's first window measures idle power; both paths warm up
    loops.bare(20)
    loops.serve(20)
    os.getppid()
    os.getppid()
    loops.bare(args.windows * args.inferences)
    os.getppid()
    loops.serve(args.windows * args.inferences)
    os.getppid()
    loops.served(args.windows, args.inferences)
    os.getppid()


if __name__ == "__main__":
    main()
