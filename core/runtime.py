"""Running a precoder model package with the LiteRT interpreter, in numpy (no torch).

Used by the exporter's parity check and by the edge agent, so both run the very same code. The manifest's
``normalization`` says how a channel becomes the model's input and how its output becomes a precoder
(see ``plugins/export/tflite.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.errors import EdgejouleError


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
    """H ``[B, N_U, N_T]`` complex -> W ``[B, N_T, N_U]``, one ``invoke`` per channel (batch-1 models).

    ``serve`` is the serving path: the agent spends a few microseconds of numpy around each ``invoke``
    there (normalization into a buffer kept for the runtime's life, the power scaling of eq. 5 fused into
    one multiply into the caller's array), so the same code must stay lean.
    """

    def __init__(self, path: Path, normalization: Mapping[str, Any], threads: int = 1) -> None:
        self.interpreter = load_interpreter(path, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.noise_power = float(normalization["noise_power_w"])
        self.input_scale = float(normalization["input_scale"])
        self.p_max = float(normalization["p_max_w"])
        self._factor = np.float32(self.input_scale / np.sqrt(self.noise_power))
        # set_tensor copies from a buffer we own: a tensor() view of the input would have to be fetched anew
        # before every invoke (LiteRT refuses to run while one is alive), which costs more than the copy
        self._x = np.empty(self.input["shape"], dtype=np.float32)
        self._x_re, self._x_im = self._x[0, 0], self._x[0, 1]
        self._in, self._out = self.input["index"], self.output["index"]

    def features(self, H: np.ndarray) -> np.ndarray:
        """``stack(re, im)(H / sigma) * input_scale`` as float32 ``[B, 2, N_U, N_T]``."""
        H = np.asarray(H, dtype=np.complex64)
        x = np.empty((len(H), 2, *H.shape[1:]), dtype=np.float32)
        np.multiply(H.real, self._factor, out=x[:, 0])
        np.multiply(H.imag, self._factor, out=x[:, 1])
        return x

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One inference on one prepared input ``[1, 2, N_U, N_T]``; the raw output ``[1, 2, N_T, N_U]``."""
        self.interpreter.set_tensor(self._in, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def raw(self, H: np.ndarray) -> np.ndarray:
        x = self.features(H)
        return np.concatenate([self.invoke(x[i : i + 1]) for i in range(len(x))])

    def serve(self, h: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The serving path: one channel ``h`` [N_U, N_T] complex -> its precoder written into ``out``
        float32 ``[2, N_T, N_U]`` (real and imaginary planes, the model's own output layout).

        Features, ``invoke``, and ``scale_to_power`` fused into one multiply by a scale from one float32 dot
        product; nothing is allocated but LiteRT's output copy. Returning the planes rather than a complex
        array saves two strided copies per inference; callers interleave a batch at once (``complex_of``).
        """
        np.multiply(h.real, self._factor, out=self._x_re)
        np.multiply(h.imag, self._factor, out=self._x_im)
        self.interpreter.set_tensor(self._in, self._x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out)
        flat = y.reshape(-1)
        power = float(np.dot(flat, flat))
        np.multiply(y[0], math.sqrt(self.p_max / power) if power > 0 else 0.0, out=out)  # all-zero stays zero
        return out

    def precode(self, H: np.ndarray) -> np.ndarray:
        """``serve`` over a batch: the exporter's parity check runs the agent's serving path."""
        H = np.asarray(H, dtype=np.complex64)
        planes = np.empty((len(H), 2, H.shape[2], H.shape[1]), dtype=np.float32)
        for h, out in zip(H, planes):
            self.serve(h, out)
        return complex_of(planes)


def complex_of(planes: np.ndarray) -> np.ndarray:
    """``[..., 2, N_T, N_U]`` real and imaginary planes -> complex64 ``[..., N_T, N_U]``."""
    W = np.empty(planes.shape[:-3] + planes.shape[-2:], dtype=np.complex64)
    W.real = planes[..., 0, :, :]
    W.imag = planes[..., 1, :, :]
    return W
