r"""Counting a torch graph's weightless operations from the computation itself: the torch half of the
``implemented`` counting (:mod:`edgejoule.energy.counting`), shared by every task's DNN families.

A graph runs once on a batch of one under a ``torch.utils._python_dispatch.TorchDispatchMode`` that sees every
aten op torch executes and prices it with the one price list of the ``implemented`` counting,
:func:`edgejoule.energy.counting.price`. The model may be built on the ``meta`` device: shapes are all a count
needs, so no weights are allocated or multiplied.

The rule that keeps anything from being counted twice: an op executed inside a module given as ``skip`` (the
weight layers: convolutions and fully connected layers with their batch norm, ReLU and dropout) belongs to
eqs. 7-11, which price it by its MACs at its bit width (batch norm folded into the layer, ReLU a comparison,
dropout the identity at inference); it is skipped. Every other op of the graph is counted. Data movement
(views, slices, concatenation, ``expand``) computes nothing and is free, as for the numpy counting backend;
an op that is neither known as free nor priced raises, so nothing is left out silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edgejoule.energy.counting import OperationCount, count_operations, counted, price

# aten op -> the numpy ufunc name it is priced as (edgejoule.energy.counting.price)
PRICED = {"mul": "multiply", "div": "divide", "add": "add", "sub": "subtract", "rsub": "subtract", "neg": "negative",
          "bmm": "matmul", "mm": "matmul", "sqrt": "sqrt", "rsqrt": "rsqrt", "exp": "exp", "log": "log",
          "tanh": "tanh", "_softmax": "softmax", "sum": "reduce_add", "clamp_min": "maximum", "maximum": "maximum",
          "minimum": "minimum"}
# aten ops that only move, view or create data
FREE = frozenset({"view", "_unsafe_view", "reshape", "expand", "slice", "select", "unsqueeze", "squeeze",
                  "transpose", "t", "permute", "cat", "stack", "zeros", "zeros_like", "empty_like", "detach", "alias",
                  "clone", "lift_fresh", "_to_copy", "copy_", "eye", "diagonal"})
# comparisons (not priced, the convention of edgejoule.energy.counting) and reading a scalar back
COMPARISONS = frozenset({"isnan", "eq", "ne", "lt", "le", "gt", "ge", "_local_scalar_dense", "_linalg_check_errors"})
# a ReLU follows a batch norm wherever a family calls it as a function (deeprx): a comparison folded into the
# weight layer before it, as eqs. 7-11 fold the ReLUs inside the precoders' weight-layer modules
FOLDED = frozenset({"relu"})


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else ()


def _is_complex(x: Any) -> bool:
    return x.is_complex() if isinstance(x, torch.Tensor) else isinstance(x, complex)


def aten_price(name: str, args: tuple[Any, ...], out: Any) -> OperationCount:
    """Operations of one aten op ``name`` (its overload packet's name) on ``args`` with result ``out``."""
    if name in FREE or name in FOLDED or name in COMPARISONS:
        return OperationCount()
    if name == "linalg_inv_ex":  # A^-1 = A^-1 I: LAPACK's LU solve with the identity as right-hand sides
        return _solve_price(tuple(args[0].shape), tuple(args[0].shape))
    if name == "mean":  # the sum, then one product by 1/N per result
        total = aten_price("sum", args, out)
        return total + OperationCount(multiplications=out.numel(), memory=2.0 * out.numel())
    if name not in PRICED:
        raise TypeError(f"no price for the aten op '{name}'; map it in edgejoule.plugins.energy.op_counter "
                        "rather than leave it uncounted")
    operands = [a for a in args if isinstance(a, (torch.Tensor, int, float, complex)) and not isinstance(a, bool)]
    shapes = tuple(_shape(a) for a in operands)
    if name == "_softmax":  # price() reads the softmax's length from the last axis: move the softmax axis there
        shape = list(shapes[0])
        length = shape.pop(args[1])
        shapes = ((*shape, length),)
        operands = operands[:1]
    return price(PRICED[name], tuple(_is_complex(a) for a in operands), shapes, out.numel())


def _solve_price(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> OperationCount:
    """A linear solve, priced as the numpy backend prices ``np.linalg.solve`` (the elimination LAPACK performs,
    read from its ufunc form in :mod:`edgejoule.energy.counting`): one price for the solve in both backends. The
    values do not change the count; the identity keeps the pivots nonzero."""
    a = np.broadcast_to(np.eye(a_shape[-1]), a_shape).copy()
    with count_operations() as tally:
        np.linalg.solve(*counted(a, np.zeros(b_shape)))
    return tally.count


class OperationCounter(TorchDispatchMode):
    """Prices every aten op run while active, except while a module in ``skip`` is running."""

    def __init__(self, skip: list[torch.nn.Module]) -> None:
        super().__init__()
        self.count = OperationCount()
        self._inside = 0
        self._handles = [h for m in skip for h in (
            m.register_forward_pre_hook(lambda *_: self._enter()), m.register_forward_hook(lambda *_: self._leave()))]

    def _enter(self) -> None:
        self._inside += 1

    def _leave(self) -> None:
        self._inside -= 1

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self._inside:
            self.count += aten_price(func.overloadpacket.__name__, args, out)
        return out

    def __exit__(self, *exc: Any) -> Any:
        for handle in self._handles:
            handle.remove()
        return super().__exit__(*exc)
