"""LiteRT latency of the default precoder (C_out=64, D_FCL=1024, 64x4) stored as float, int8, int4 and mixed,
at batch 1 and batched (the same weights converted with a batch-BATCH input), against torch eager on the
same inputs; the edge agent's overhead over a bare ``interpreter.invoke`` (its whole serving window: copying
the channel in, latency and energy bookkeeping, sum rate; and, for packages exported before the graph did
them, the input normalization and power scaling in numpy); the agent process's memory.

Packages found in ``--work`` are reused whatever code exported them: a directory of packages exported by an
older checkout (no ``in_graph`` in their manifests) is measured on the runtime's numpy path, which is how the
edge section of ``docs/BENCHMARKS.md`` compares the two in one script.

With ``--instructions``, the same two paths are also counted in instructions under callgrind, which no other
load on the machine changes (``edge_serving.py`` says how); ``--work DIR`` keeps the packages (reused by the
next run) and the callgrind profiles (``DIR/PACKAGE-callgrind/cg.3`` bare, ``cg.4`` serve alone, ``cg.5`` agent) for
``callgrind_annotate``.

Usage: .venv/bin/python benchmarks/bench_edge.py [--inferences 500] [--packages int4,int8] [--overhead-only]
       [--instructions [--cache-sim] [--top 12]] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgejoule.plugins.export.tflite import ExportError, convert, export_precoder, precoder_graph, quantize_file
from edgejoule.plugins.precoding.precoder_cnn import PrecoderCNNFamily
from edgejoule.runtime import PrecoderRuntime, load_interpreter
from edgejoule.schemas.manifest import ModelManifest, PrecoderNormalization
from edgejoule.sites import get_site, load_dataset

from edge_serving import Loops, serving_agent

ARCH = {"c_out": 64, "d_fcl": 1024, "n_t": 64, "n_u": 4}
BATCH = 64
CONFIGS = {"float": [16, 16, 16, 16], "int8": [8, 8, 8, 8], "int4": [4, 4, 4, 4], "mixed": [16, 8, 4, 2]}


def chosen(directory: Path, bits: list[int]) -> Path:
    from edgejoule.plugins.quantization.lsq import attach, freeze

    torch.manual_seed(0)
    model = PrecoderCNNFamily().build(ARCH)
    attach(model, bits)
    model.eval()
    model(torch.randn(2, 4, 64, dtype=torch.complex64))  # initializes the LSQ steps
    frozen, _ = freeze(model)
    torch.save(frozen.state_dict(), directory / "w.pt")
    (directory / "chosen.json").write_text(json.dumps({
        "site": "urban-nlos", "family": "precoder_cnn", "arch": ARCH, "bits": bits, "metrics": {"sum_rate": 0.0},
        "energy": {"energy_uj": 0.0, "compute_uj": 0.0, "weights_uj": 0.0, "activations_uj": 0.0}, "weights": "w.pt"}))
    return directory / "chosen.json"


def per_call_ms(fn, inputs, repeats: int, rounds: int = 3) -> float:
    """Best of ``rounds`` timed loops: the machine is shared, so the fastest loop is the least disturbed."""
    for x in inputs[:10]:
        fn(x)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(repeats):
            fn(inputs[i % len(inputs)])
        best = min(best, (time.perf_counter() - t0) / repeats * 1e3)
    return best


def batched_invoke_ms(chosen_json: Path, bits: list[int], compute: str, normalization: PrecoderNormalization,
                      H: np.ndarray, repeats: int) -> float:
    """Per-channel time of one invoke on a batch-``len(H)`` conversion of the same weights and storage, the
    normalization and power scaling in the graph (as packages are exported now)."""
    model = PrecoderCNNFamily().build(ARCH)
    model.load_state_dict(torch.load(chosen_json.parent / "w.pt", weights_only=True))
    work = chosen_json.parent
    x = np.stack([H.real, H.imag], 1).astype(np.float32)
    convert(precoder_graph(model, normalization), (torch.zeros(*x.shape),), work / "batch-float.tflite")
    quantize_file(work / "batch-float.tflite", bits, compute, work / "batch.tflite")  # type: ignore[arg-type]
    interpreter = load_interpreter(work / "batch.tflite")
    index_in, index_out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def call(batch: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(index_in, batch)
        interpreter.invoke()
        return interpreter.get_tensor(index_out)

    return per_call_ms(call, [x], repeats) / len(x)


def bare_and_agent_ms(package: Path, H: np.ndarray, work: Path, n: int, rounds: int = 9) -> tuple[float, float, float, float]:
    """Per-inference CPU time of a bare invoke and of the agent's serving window, in the same process.

    The two loops of ``edge_serving.Loops`` on the same channels and the same interpreter, in alternating
    rounds so both see the same machine (CPU time of this thread, where LiteRT with one thread runs, so other
    processes' jobs count only through caches and the shared core): the best round of each, and the overhead
    as the median over rounds of agent / bare - 1 (each round paired with the bare one before it). Last, the
    agent's own Python and numpy per inference: the difference of the two loops with ``invoke`` stubbed out."""
    loops = Loops(serving_agent(package, work, n), H)
    loops.served(1, 20)  # measures idle power once, warms up

    def alternating() -> tuple[np.ndarray, np.ndarray]:
        bare, served = [], []
        for _ in range(rounds):
            t0 = time.thread_time()
            loops.bare(n)
            bare.append((time.thread_time() - t0) / n * 1e3)
            t0 = time.thread_time()
            loops.served(1, n)
            served.append((time.thread_time() - t0) / n * 1e3)
        return np.array(bare), np.array(served)

    bare, served = alternating()
    loops.interpreter.invoke = lambda: None  # the same loops without the model: the agent's own Python and numpy
    bare_py, served_py = alternating()
    return bare.min(), served.min(), float(np.median(served / bare)) - 1, served_py.min() - bare_py.min()


def callgrind_profile(path: Path) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """One callgrind dump: the totals per event, and each function's self cost per event.

    The file format (valgrind's callgrind format spec): ``fn=(id) name`` opens a function (``fn=(id)`` later
    refers back to it; ``cfn=`` names the callee of the next call from the same table), a line of numbers is a
    position and its costs, and the cost line right after a ``calls=`` line is the inclusive cost of that
    call, which belongs to the callee, not to ``fn``."""
    events: list[str] = []
    names: dict[str, str] = {}
    self_cost: dict[str, dict[str, int]] = {}
    function, after_call = "", False
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("fn=", "cfn=")):  # both name functions, from one table of ids
            key, _, rest = line.partition("=")
            ref, _, name = rest.partition(" ")
            names.setdefault(ref, name or ref)
            if key == "fn":
                function = names[ref]
        elif line.startswith("calls="):
            after_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            if not after_call:
                costs = self_cost.setdefault(function, dict.fromkeys(events, 0))
                for event, value in zip(events, line.split()[1:]):
                    costs[event] += int(value)
            after_call = False
    totals = {event: sum(c[event] for c in self_cost.values()) for event in events}
    return totals, self_cost


def instructions(package: Path, H: np.ndarray, work: Path, n: int, cache_sim: bool, top: int) -> tuple[dict, list[str]]:
    """Per-inference event counts (instructions ``Ir``; with ``cache_sim`` also simulated I1, D1 and LL misses, the
    LL sized as this CPU's L2, 512 kB 8-way per core) of the bare loop, of ``PrecoderRuntime.serve`` alone and
    of the agent's serving window, counted by callgrind in a torch-free process (``edge_serving.py``: one
    profile per phase, start-up excluded), and the ``top`` functions by the agent's extra instructions per
    inference."""
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "H.npz", H=H)
    cmd = ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={work / 'cg'}"]
    if cache_sim:
        cmd += ["--cache-sim=yes", "--LL=524288,8,64"]
    cmd += [sys.executable, str(Path(__file__).with_name("edge_serving.py")), str(package), str(work / "agent"),
            str(work / "H.npz"), "--inferences", str(n), "--windows", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"callgrind run failed ({' '.join(cmd)}): {done.stderr.strip().splitlines()[-1:]}")
    # dump k holds the phase before the k-th marker: 1 start-up and warm-up, 2 the empty phase, 3 bare, 4 serve, 5 agent
    (marker, _), *phases = (callgrind_profile(work / f"cg.{k}") for k in (2, 3, 4, 5))
    names = ("bare", "serve", "agent")
    per = {name: {e: (v - marker[e]) / n for e, v in totals.items()} for name, (totals, _) in zip(names, phases)}
    bare_fns, agent_fns = phases[0][1], phases[2][1]
    extra = {f: (agent_fns.get(f, {}).get("Ir", 0) - bare_fns.get(f, {}).get("Ir", 0)) / n for f in {*bare_fns, *agent_fns}}
    return per, [f"    {v:+9.0f}  {f}" for f, v in sorted(extra.items(), key=lambda kv: -abs(kv[1]))[:top]]


def agent_rss_mb(data_dir: Path, channels: Path) -> float:
    """Peak RSS (MB) of a torch-free process running the agent's ``once`` on an installed package."""
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak (this torch process) into the child's
    # ru_maxrss across exec, which once made a 140 MB agent look like 1.4 GB
    serve = ("import sys, re; sys.modules['torch'] = None\n"
             "from edgejoule.edge_agent.cli import main\n"
             "sys.argv = ['edge-agent', 'once', '--inferences', '2000']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"  # typer exits when the command returns
             "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
             "print('rss', int(hwm) / 1024)\n")
    env = {"EDGE_AGENT_AGENT_ID": "bench", "EDGE_AGENT_SITE": "urban-nlos", "EDGE_AGENT_REGISTRY_URL": "http://127.0.0.1:9",
           "EDGE_AGENT_TOKEN": "bench", "EDGE_AGENT_SHUTDOWN_SECONDS": "0.1",
           "EDGE_AGENT_METER": "cpu_time", "EDGE_AGENT_SOURCE": f"npz:{channels}", "EDGE_AGENT_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-c", serve], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    return float(out.split("rss")[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inferences", type=int, default=500, help="inferences per timed round")
    parser.add_argument("--packages", default=",".join(CONFIGS), help="which of float,int8,int4,mixed")
    parser.add_argument("--overhead-only", action="store_true", help="skip batched, torch eager and RSS")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per inference, bare and agent, under callgrind (minutes per package)")
    parser.add_argument("--cache-sim", action="store_true", help="with --instructions: also simulate I1, D1 and L2 (as LL) misses")
    parser.add_argument("--top", type=int, default=12, help="with --instructions: functions listed by extra instructions")
    parser.add_argument("--work", type=Path, help="keep packages and profiles here (packages found there are reused)")
    args = parser.parse_args()
    if args.instructions and not shutil.which("valgrind"):
        parser.error("--instructions needs valgrind's callgrind: apt-get install valgrind")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    torch.set_num_threads(1)
    ds = load_dataset(get_site("urban-nlos"))
    H = ds.H("test", 100)
    rows = [f"{'package':8} {'size MB':>8} {'invoke ms b=1':>14} {f'invoke ms/ch b={BATCH}':>20} "
            f"{'CPU ms: invoke':>14} {'agent':>7} {'overhead (best rounds)':>9}"]
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for name in args.packages.split(","):
            bits = CONFIGS[name]
            src = Path(tmp) / f"{name}-src"
            src.mkdir()
            chosen_json = chosen(src, bits)  # seeded: the same weights as a package exported by an earlier run
            try:
                manifest = (ModelManifest.model_validate_json((args.work / name / "manifest.json").read_text())
                            if args.work and (args.work / name / "manifest.json").exists()
                            else export_precoder(chosen_json, (args.work or Path(tmp)) / name))
            except ExportError as exc:
                rows.append(f"{name:8} refused by the export parity check: {exc}")
                continue
            package = (args.work or Path(tmp)) / name
            runtime = PrecoderRuntime(package / "model.tflite", manifest.normalization)
            compute = "integer" if "integer" in manifest.runtime else "float"
            where = "normalized in the graph" if runtime.normalization.in_graph else "normalized in numpy (older package)"
            batched = (float("nan") if args.overhead_only else
                       batched_invoke_ms(chosen_json, bits, compute, runtime.normalization, H[:BATCH], 20))
            bare, agent, paired, own = bare_and_agent_ms(package, H, Path(tmp) / f"{name}-agent", args.inferences)
            wall = per_call_ms(runtime.invoke, [runtime.features(H[i : i + 1]) for i in range(len(H))], args.inferences)
            rows.append(f"{name:8} {manifest.size_bytes / 1e6:8.2f} {wall:14.3f} {batched:20.3f} {bare:14.3f} {agent:7.3f} "
                        f"{100 * (agent / bare - 1):8.1f}% (paired median {100 * paired:.1f} %, +{1e3 * (agent - bare):.1f} us, "
                        f"of which {1e3 * own:.1f} us the agent's own code without invoke), "
                        f"{compute} compute, {where}")
            if args.instructions:
                profiles = (args.work or Path(tmp)) / f"{name}-callgrind"
                shutil.rmtree(profiles, ignore_errors=True)
                per, where = instructions(package, H, profiles, args.inferences, args.cache_sim, args.top)
                ib, iserve, ia = per["bare"], per["serve"], per["agent"]
                misses = "".join(f", {e} {ib[e]:.0f} / {iserve[e]:.0f} / {ia[e]:.0f}" for e in ib if e.endswith("mr"))
                rows.append(f"{'':8} instructions per inference (callgrind, {args.inferences} of each): bare {ib['Ir']:,.0f}, "
                            f"serve {iserve['Ir']:,.0f}, agent {ia['Ir']:,.0f}: overhead {100 * (ia['Ir'] / ib['Ir'] - 1):.2f} % "
                            f"(+{ia['Ir'] - ib['Ir']:,.0f}, of which serve +{iserve['Ir'] - ib['Ir']:,.0f})"
                            f"{' (bare / serve / agent)' if misses else ''}{misses}; agent - bare per inference, "
                            f"self instructions by function:\n" + "\n".join(where))
        if args.overhead_only:
            print("\n".join(rows) + f"\nload average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
            return
        model = PrecoderCNNFamily().build(ARCH).eval()
        Ht = torch.from_numpy(H / np.float32(np.sqrt(ds.noise_power)))
        with torch.no_grad():
            eager = per_call_ms(lambda h: model(h[None], ds.p_max), list(Ht), args.inferences)
            batched = per_call_ms(lambda h: model(Ht[:BATCH], ds.p_max), [None], 20) / BATCH
        rows.append(f"torch eager (float32, 1 thread): batch 1 {eager:.3f} ms, batch {BATCH} {batched:.3f} ms per channel")
        np.savez(Path(tmp) / "H.npz", H=np.tile(H, (20, 1, 1)))  # the channels a base station would send, not a whole dataset
        rows.append(f"agent process (edge-agent once, no torch, int8 package, 2000 inferences): peak RSS "
                    f"{agent_rss_mb(Path(tmp) / 'int8-agent', Path(tmp) / 'H.npz'):.0f} MB")
    rows.append(f"load average (1 min) before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
