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
    there, where each numpy call costs more to dispatch (several thousand instructions) than its arithmetic
    on 512 values, so the path is written in as few calls as it can be (``docs/BENCHMARKS.md``, edge section).
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
        # a channel is copied into _h, whose float32 view reads its real and imaginary parts as two planes: one
        # strided copy into _x and one contiguous multiply in place (two multiplies from h.real and h.imag, or
        # one from the strided view, go through numpy's general iterator and cost more)
        self._h = np.empty(self.input["shape"][2:], dtype=np.complex64)
        self._h_planes = self._h.view(np.float32).reshape(-1, 2).T
        self._x_planes = self._x.reshape(2, -1)
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

    def serve(self, h: np.ndarray) -> np.ndarray:
        """The serving path: one channel ``h`` [N_U, N_T] complex -> its precoder as the model's output layout,
        float32 ``[1, 2, N_T, N_U]`` (real and imaginary planes), scaled to spend ``P_max`` (eq. 5).

        Features (``h`` copied into a buffer, its planes into the input buffer, one multiply), ``invoke``, and
        ``scale_to_power`` as one float32 ``vdot`` and one multiply in place on LiteRT's output, which
        ``get_tensor`` returns as a fresh copy per call, so the caller may keep it. Returning the planes
        rather than a complex array saves two strided copies per inference; callers interleave a batch at
        once (``complex_of``).
        """
        self._h[...] = h
        self._x_planes[...] = self._h_planes
        np.multiply(self._x, self._factor, out=self._x)
        self.interpreter.set_tensor(self._in, self._x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out)
        power = float(np.vdot(y, y))
        np.multiply(y, math.sqrt(self.p_max / power) if power > 0 else 0.0, out=y)  # all-zero stays zero
        return y

    def precode(self, H: np.ndarray) -> np.ndarray:
        """``serve`` over a batch: the exporter's parity check runs the agent's serving path."""
        return complex_of(np.concatenate([self.serve(h) for h in np.asarray(H, dtype=np.complex64)]))


def complex_of(planes: np.ndarray) -> np.ndarray:
    """``[..., 2, N_T, N_U]`` real and imaginary planes -> complex64 ``[..., N_T, N_U]``."""
    W = np.empty(planes.shape[:-3] + planes.shape[-2:], dtype=np.complex64)
    W.real = planes[..., 0, :, :]
    W.imag = planes[..., 1, :, :]
    return W
