"""Per-layer storage of a mixed-precision model in TFLite (DESIGN.md, "Model package").

Layers trained at 16 bits stay float32; 8-bit layers are stored as int8 and 4- and 2-bit layers as INT4,
both symmetric per output channel with the integers and steps the training left in the weights
(ai-edge-quantizer's ``dequantized_weight_recovery``, which refuses weights that are not on a grid). Recipes
match each op's scope: its output tensor's name, which litert-torch derives from the torch module path,
e.g. ``Linear_fc1``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from edgejoule.schemas.manifest import StoredType

Compute = Literal["integer", "float"]


def stored_type(bits: int) -> StoredType:
    if bits >= 16:
        return "float32"
    if bits == 8:
        return "int8"
    return "int4"


def layer_recipe(scope_regex: str, bits: int, compute: Compute) -> dict[str, Any] | None:
    """One recipe entry, or None for a layer kept in float."""
    kind = stored_type(bits)
    if kind == "float32":
        return None
    return {
        "regex": scope_regex,
        "operation": "*",
        # the weights already sit on their trained grid (LSQ), which batch-norm folding scales per output
        # channel: recover that grid exactly instead of fitting a new one to each channel's min/max
        "algorithm_key": "dequantized_weight_recovery",
        "op_config": {
            "weight_tensor_config": {"num_bits": 8 if kind == "int8" else 4, "symmetric": True,
                                     "granularity": "CHANNELWISE", "dtype": "INT"},
            # integer: dynamic-range kernels (activations quantized on the fly); float: weight-only
            "compute_precision": "INTEGER" if compute == "integer" else "FLOAT",
            "explicit_dequantize": compute == "float",
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }


def mixed_recipe(scopes: Sequence[str], bits: Sequence[int], compute: Compute) -> list[dict[str, Any]]:
    entries = [layer_recipe(scope, b, compute) for scope, b in zip(scopes, bits)]
    return [e for e in entries if e is not None]
