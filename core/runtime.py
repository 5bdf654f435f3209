"""Running a precoder model package with the LiteRT interpreter, in numpy (no torch).

Used by the exporter's parity check and by the edge agent, so both run the very same code. The manifest's
``normalization`` says how a channel becomes the model's input and how its output becomes a precoder
(see ``plugins/export/tflite.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.errors import EdgejouleError
from core.tasks.precoding import scale_to_power


def load_interpreter(path: Path, threads: int = 1) -> Any:
    """A LiteRT interpreter for ``path``; ``tflite_runtime`` is accepted on boards without ai-edge-litert."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise EdgejouleError("no TFLite runtime: pip install 'edgejoule[edge]' (ai-edge-litert)") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EdgejouleError(f"{path} is not a loadable TFLite model: {exc}") from None
    return interpreter


class PrecoderRuntime:
    """H ``[B, N_U, N_T]`` complex -> W ``[B, N_T, N_U]``, one ``invoke`` per channel (batch-1 models)."""

    def __init__(self, path: Path, normalization: Mapping[str, Any], threads: int = 1) -> None:
        self.interpreter = load_interpreter(path, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.noise_power = float(normalization["noise_power_w"])
        self.input_scale = float(normalization["input_scale"])
        self.p_max = float(normalization["p_max_w"])
        self._factor = np.float32(self.input_scale / np.sqrt(self.noise_power))

    def features(self, H: np.ndarray) -> np.ndarray:
        """``stack(re, im)(H / sigma) * input_scale`` as float32, written in place (this is on the hot path)."""
        H = np.asarray(H, dtype=np.complex64)
        x = np.empty((len(H), 2, *H.shape[1:]), dtype=np.float32)
        np.multiply(H.real, self._factor, out=x[:, 0])
        np.multiply(H.imag, self._factor, out=x[:, 1])
        return x

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One inference on one prepared input ``[1, 2, N_U, N_T]``."""
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def raw(self, H: np.ndarray) -> np.ndarray:
        x = self.features(H)
        if len(x) == 1:
            return self.invoke(x)
        return np.concatenate([self.invoke(x[i : i + 1]) for i in range(len(x))])

    def precode(self, H: np.ndarray) -> np.ndarray:
        out = self.raw(H)
        return scale_to_power(out[:, 0] + 1j * out[:, 1], self.p_max)
