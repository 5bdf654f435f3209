"""LSQ with activations quantized: every weight layer's input lands on its own learned grid."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgejoule import plugin_manager  # noqa: E402
from edgejoule.plugins.precoding.precoder_cnn import PrecoderCNNFamily  # noqa: E402


def test_lsq_quantizes_layer_inputs_when_asked():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = PrecoderCNNFamily().build({"c_out": 4, "d_fcl": 32, "n_t": 8, "n_u": 2})
    plugin_manager.get("quantizers", "lsq").quantize(model, [8, 4, 4, 2], activation_bits=4)
    seen: dict[str, torch.Tensor] = {}
    for name, layer in zip(("conv", "fc1", "fc2", "fc3"), model.layers()):
        # registered after the quantizing pre-hook, so it sees what the layer sees
        layer.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].detach()))
    H = torch.randn(16, 2, 8, dtype=torch.complex64)
    W = model(H, 1.0)
    W.abs().sum().backward()
    for i, (name, layer) in enumerate(zip(("conv", "fc1", "fc2", "fc3"), model.layers())):
        levels = seen[name] / layer.input_quant.step.detach()
        assert torch.allclose(levels, levels.round(), atol=1e-4), name
        # 4 bits: signed [-8, 7] for the channel input, unsigned [0, 15] after ReLU
        assert levels.min() >= (-8 if i == 0 else 0) and levels.max() <= (7 if i == 0 else 15)
        assert layer.input_quant.step.grad is not None and layer.input_quant.step.grad.abs() > 0, name
    assert model.activation_bits == 4
