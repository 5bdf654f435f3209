"""Running a precoder model package with the LiteRT interpreter, in numpy (no torch).

Used by the exporter's parity check and by the edge agent, so both run the very same code. The manifest's
``normalization`` (:class:`~edgejoule.schemas.manifest.PrecoderNormalization`) says how a channel becomes the
model's input and how its output becomes a precoder, and whether the graph does both itself (``in_graph``,
every package exported now) or leaves them to this runtime (packages exported before; see
``plugins/export/tflite.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from pydantic import ValidationError

from edgejoule.errors import EdgejouleError, first_problem
from edgejoule.schemas.manifest import PrecoderNormalization


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

    ``serve`` is the serving path, chosen once per package: a package whose graph does the normalization
    and the power scaling (``in_graph``) is fed the raw planes of H and returns W as it is; an older one gets
    both in numpy around the invoke. The agent's work per channel is a few numpy calls there, each costing
    more to dispatch (several thousand instructions) than its arithmetic on 512 values, so both paths are
    written in as few calls as they can be (``docs/BENCHMARKS.md``, edge section).
    """

    def __init__(self, path: Path, normalization: Mapping[str, Any] | PrecoderNormalization, threads: int = 1) -> None:
        try:
            self.normalization = PrecoderNormalization.model_validate(
                normalization if isinstance(normalization, PrecoderNormalization) else dict(normalization))
        except ValidationError as exc:
            raise EdgejouleError(f"the manifest's precoder normalization is not usable: {first_problem(exc)}") from None
        self.interpreter = load_interpreter(path, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.noise_power = self.normalization.noise_power_w
        self.p_max = self.normalization.p_max_w
        in_graph = self.normalization.in_graph
        # the factor this runtime applies to H's planes: none where the graph applies it itself
        self._factor = np.float32(1.0 if in_graph else self.normalization.input_scale / math.sqrt(self.noise_power))
        # set_tensor copies from a buffer we own: a tensor() view of the input would have to be fetched anew
        # before every invoke (LiteRT refuses to run while one is alive), which costs more than the copy
        self._x = np.empty(self.input["shape"], dtype=np.float32)
        # a channel is copied into _h, whose float32 view reads its real and imaginary parts as two planes: one
        # strided copy into _x (two copies from h.real and h.imag, or one from a view of h made per call, go
        # through numpy's general iterator or cost more calls)
        self._h = np.empty(self.input["shape"][2:], dtype=np.complex64)
        self._h_planes = self._h.view(np.float32).reshape(-1, 2).T
        self._x_planes = self._x.reshape(2, -1)
        self._in, self._out = self.input["index"], self.output["index"]
        #: ``h`` [N_U, N_T] complex -> W's real and imaginary planes, float32 ``[1, 2, N_T, N_U]``, spending
        #: ``P_max`` (eq. 5); a fresh array per call (``get_tensor`` copies), so the caller may keep it. Planes, not
        #: complex: callers interleave a batch at once (``complex_of``), two strided copies per channel fewer
        self.serve = self._serve_in_graph if in_graph else self._serve_in_numpy

    def features(self, H: np.ndarray) -> np.ndarray:
        """The model's inputs for a batch, float32 ``[B, 2, N_U, N_T]``: ``stack(re, im)(H)``, times
        ``input_scale / sigma`` unless the graph scales them itself."""
        H = np.asarray(H, dtype=np.complex64)
        x = np.empty((len(H), 2, *H.shape[1:]), dtype=np.float32)
        np.multiply(H.real, self._factor, out=x[:, 0])
        np.multiply(H.imag, self._factor, out=x[:, 1])
        return x

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One inference on one prepared input ``[1, 2, N_U, N_T]``; the graph's output ``[1, 2, N_T, N_U]``."""
        self.interpreter.set_tensor(self._in, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def raw(self, H: np.ndarray) -> np.ndarray:
        """The graph's outputs for a batch: W's planes at ``P_max`` (``in_graph``), else before power scaling."""
        x = self.features(H)
        return np.concatenate([self.invoke(x[i : i + 1]) for i in range(len(x))])

    def _serve_in_graph(self, h: np.ndarray) -> np.ndarray:
        """``h`` copied into a buffer, its planes into the input buffer; ``set_tensor``, ``invoke``,
        ``get_tensor``: the graph scales its input and its output itself."""
        self._h[...] = h
        self._x_planes[...] = self._h_planes
        self.interpreter.set_tensor(self._in, self._x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def _serve_in_numpy(self, h: np.ndarray) -> np.ndarray:
        """Packages without ``in_graph``: the input planes scaled in one contiguous multiply before the
        invoke, and ``scale_to_power`` after it as one float32 ``vdot`` and one multiply in place on
        LiteRT's output."""
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
