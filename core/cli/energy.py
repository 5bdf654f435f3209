"""``edgejoule energy``: energy per inference of baselines (eqs. 12-14) and DNNs (eqs. 7-11), under a counting
(:mod:`edgejoule.energy.counting`)."""

from __future__ import annotations

import typer
from rich.table import Table

from edgejoule import plugin_manager
from edgejoule.cli.output import console, print_json
from edgejoule.energy.counting import OperationCount, check_counting, operations_energy
from edgejoule.errors import EdgejouleError

app = typer.Typer(help="Energy per inference from the accelerator model.", no_args_is_help=True)

ALLOWED_BITS = (2, 4, 8, 16)


def parse_bits(text: str, n_layers: int) -> list[int]:
    """'16,8,8,4' -> [16, 8, 8, 4], with a readable error for anything else."""
    try:
        bits = [int(b) for b in text.split(",")]
    except ValueError:
        raise EdgejouleError(f"--bits must be comma-separated integers such as 16,8,8,4, got '{text}'") from None
    if len(bits) != n_layers:
        raise EdgejouleError(f"--bits needs {n_layers} values (one per layer), got {len(bits)}: '{text}'")
    bad = [b for b in bits if b not in ALLOWED_BITS]
    if bad:
        raise EdgejouleError(f"--bits values must be in {{2,4,8,16}}, got {bad[0]}")
    return bits


@app.command()
def baseline(
    method: str = typer.Option(..., help="a registered precoding baseline: zf, rzf, rzf-equal, mrt, wmmse, ..."),
    counting: str = typer.Option("implemented", help="implemented (the operations our code performs) or paper "
                                 "(eqs. 12-14 as printed)"),
    nt: int = typer.Option(64, min=1, help="BS antennas N_T"),
    nu: int = typer.Option(4, min=1, help="users N_U"),
    iterations: float = typer.Option(None, help="iterations (iterative baselines such as WMMSE), >= 1"),
    bisection_steps: float = typer.Option(None, "--bisection-steps", help="bisection steps per iteration (WMMSE, "
                                          "implemented counting), >= 1; default: those that narrow mu to its tolerance"),
    bits: int = typer.Option(16, help="arithmetic bit width"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Energy of one run of a classical baseline under a counting (edgejoule.energy.counting)."""
    chosen = check_counting(counting)
    for name, value in (("--iterations", iterations), ("--bisection-steps", bisection_steps)):
        if value is not None and value < 1:
            raise EdgejouleError(f"{name} must be at least 1, got {value:g}")
    impl = plugin_manager.get("baselines", method, task="precoding")
    try:
        if chosen == "paper":
            ops = OperationCount(multiplications=impl.op_count(n_t=nt, n_u=nu, iterations=iterations))
            energy = plugin_manager.get("energy_estimators", "accelerator").estimate_ops(ops.multiplications, bits)
        else:
            if not hasattr(impl, "operations"):
                raise EdgejouleError(f"baseline '{method}' ({plugin_manager.get_manager().provider('baselines', method)}"
                                     ") gives no operations() of its implementation; pass --counting paper")
            ops = impl.operations(n_t=nt, n_u=nu, iterations=iterations, bisection_steps=bisection_steps)
            energy = operations_energy(ops, bits)
    except ValueError as exc:
        raise EdgejouleError(f"{exc}: pass --iterations") from None
    result = {"method": method, "counting": chosen, "n_t": nt, "n_u": nu, "iterations": iterations,
              "bisection_steps": bisection_steps, "macs": ops.priced_multiplications, "bits": bits,
              "operations": ops.model_dump(), "energy_uj": energy.total_uj,
              "breakdown_uj": {"compute": energy.compute_uj, "local_buffer": energy.activations_uj}}
    if as_json:
        print_json(result)
    else:
        console.print(f"{method}: {energy.total_uj:.6g} uJ per inference ({chosen} counting: "
                      f"{ops.multiplications:.6g} multiplications, {ops.divisions:.6g} divisions, {ops.roots:.6g} "
                      f"roots, {ops.memory:.6g} memory accesses at {bits} bits)")


@app.command()
def dnn(
    cout: int = typer.Option(64, min=1, help="C_out of the convolution"),
    dfcl: int = typer.Option(1024, min=1, help="width D_FCL of the hidden layers"),
    bits: str = typer.Option("16,16,16,16", help="weight bits of [CONV,FCL1,FCL2,FCL3], each in {2,4,8,16}"),
    nt: int = typer.Option(64, min=1),
    nu: int = typer.Option(4, min=1),
    activation_bits: int = typer.Option(16, help="activation bits (16: weights-only quantization, as the paper)"),
    model: str = typer.Option("precoder_cnn", help="model family"),
    counting: str = typer.Option("implemented", help="implemented (eqs. 7-11 on the weight layers plus the "
                                 "weightless ops of the exported graph, counted as it runs) or paper (eqs. 7-11 on "
                                 "the layers the family describes)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Energy of one inference of a precoder DNN, with E_C, E_W, E_A per layer (eqs. 7-11) under a counting."""
    chosen = check_counting(counting)
    family = plugin_manager.get("models", model)
    if family.task != "precoding":
        raise EdgejouleError(f"'{model}' is a {family.task} model; --model takes a precoder family: "
                             f"{', '.join(plugin_manager.names('models', task='precoding'))}")
    arch = {"c_out": cout, "d_fcl": dfcl, "n_t": nt, "n_u": nu}
    weight_bits = parse_bits(bits, len(family.layer_names))
    if activation_bits not in ALLOWED_BITS:
        raise EdgejouleError(f"--activation-bits must be in {{2,4,8,16}}, got {activation_bits}")
    # implemented: the weight layers (the family's first layers), then the weightless ops as one last entry
    layers = family.describe(arch)[: None if chosen == "paper" else len(family.layer_names)]
    energy = family.energy(arch, weight_bits, activation_bits, counting=chosen)
    weightless = None
    if chosen == "implemented":
        weightless = {"operations": family.weightless_operations(arch).model_dump(),
                      "energy": energy.layers[-1].model_dump()}
    if as_json:
        # energy.layers lists the layers of "layers"; the weightless ops are their own entry, in the totals
        print_json({"model": model, "counting": chosen, "arch": arch,
                    "layers": [layer.model_dump() for layer in layers],
                    "energy": energy.model_dump() | {"layers": [e.model_dump() for e in energy.layers[: len(layers)]]},
                    "weightless": weightless})
        return
    table = Table(title=f"{model} C_out={cout} D_FCL={dfcl} bits={bits} ({chosen} counting): {energy.total_uj:.4g} uJ")
    for col in ("layer", "bits", "MACs", "E_C (uJ)", "E_W (uJ)", "E_A (uJ)"):
        table.add_column(col, justify="right")
    for name, macs, e in zip([layer.name for layer in layers] + ["weightless ops"],
                             [f"{layer.macs:,}" for layer in layers] + ["(counted)"], energy.layers):
        table.add_row(name, str(e.bits), macs, f"{e.compute_pj / 1e6:.4g}", f"{e.weights_pj / 1e6:.4g}",
                      f"{e.activations_pj / 1e6:.4g}")
    table.add_row("total", "", "", f"{energy.compute_uj:.4g}", f"{energy.weights_uj:.4g}", f"{energy.activations_uj:.4g}")
    console.print(table)
    if weightless:
        ops = weightless["operations"]
        console.print(f"weightless ops of the exported graph: {ops['multiplications']:,.0f} multiplications, "
                      f"{ops['divisions']:,.0f} divisions, {ops['roots']:,.0f} roots, {ops['memory']:,.0f} memory "
                      "accesses at 16 bits")
