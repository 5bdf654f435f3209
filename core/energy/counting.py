r"""Counting the operations an implementation performs: one price list, fed by the code as it runs.

Two countings exist for every method, and every energy names its counting:

- ``implemented`` (the default): the operations the project's own code performs, read from the code while it
  runs. numpy implementations run on :class:`Counted` arrays, whose ``__array_ufunc__`` prices every ufunc (``@``
  included) from its operands' shapes and dtypes with one table, :func:`price`; a function the table does not know
  raises, so nothing is left out silently. ``np.linalg.solve`` (LAPACK's LU, which the detectors run) is priced by
  running, on the counted arrays, the same elimination written with ufuncs. The classical precoders, detectors (ZF,
  LMMSE, exhaustive ML) and the LS+LMMSE OFDM receiver are counted this way. A DNN family is eqs. 7-11 on its weight
  layers (their MACs at their bit widths) plus the weightless operations it performs per inference: those of
  its torch graph (input scaling, softmax, the structured family's STRUCT layer with its Gauss-Jordan
  divisions and square roots, the output power renormalization, the unfolded detectors' projections, the
  receiver's residual additions), counted by running that graph once on a batch of one under a torch dispatch
  mode that maps each aten op onto :func:`price` (``edgejoule.plugins.energy.op_counter``; ops inside the
  weight layers are eqs. 7-11's and are skipped, so nothing is counted twice), and those of its numpy input
  features (the receiver's LS estimate, interpolation and equalization features) on :class:`Counted` arrays,
  all priced at 16 bits by :func:`operations_energy`.
- ``paper``: the operation counts printed in the precoder-compression paper (eqs. 12-14 for the baselines,
  eqs. 7-11 on the layers a DNN family describes, the structured family's STRUCT layer by its formula), kept
  to reproduce its Table I; for the detectors and the receiver, the formulas in their modules' docstrings.

Categories (per inference):

- **multiplications**: real multiplications; a complex product costs 4, a real times a complex 2, a matrix
  product :math:`m \times k \times n` costs :math:`mkn` times that. Additions, subtractions, comparisons and
  data movement are not priced (the paper's convention for eqs. 12-13).
- **divisions**, priced :data:`DIVISION_PRICE` = 5 multiplications: a reciprocal by Newton-Raphson
  (:math:`r \leftarrow r (2 - d r)`, 2 multiplications per step) from a 4-bit table seed needs 2 steps for
  16 bits, then one multiplication by the numerator. A complex division :math:`a/b = a \bar b / |b|^2`
  is 6 multiplications and 2 divisions.
- **roots**: square roots, reciprocal square roots, exponentials and logarithms, priced :data:`ROOT_PRICE`
  = 7 multiplications: :math:`y \leftarrow y (3 - x y^2)/2` is 3 multiplications per Newton step, 2 steps
  from a table seed, and one more for :math:`\sqrt{x} = x / \sqrt{x}`; an exponential or logarithm by range
  reduction and a degree-5 polynomial (Horner) is 6-7, priced the same. :math:`\tanh v = 1 - 2/(e^{2v} + 1)`
  is one exponential and one division (the doubling and the sums are free).
- **memory**: accesses to results held between operations: every arithmetic result (an addition's too) is
  written once and read once, 2 accesses per real word (a complex number is 2 words).

Energy (:func:`operations_energy`), on the accelerator of :mod:`edgejoule.energy.accelerator` at 16 bits:
eq. 14 on the priced count :math:`N = N_{mul} + 5 N_{div} + 7 N_{root}` (:math:`E_{MAC} N + E_L N/\sqrt p`),
plus :math:`E_M` per memory access, as eq. 11 prices a DNN's activation traffic.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgejoule.energy.accelerator import (
    DEFAULT_CONSTANTS,
    PJ_PER_UJ,
    AcceleratorConstants,
    EnergyBreakdown,
    LayerEnergy,
    LayerSpec,
    baseline_energy,
    dnn_energy,
    e_mac_pj,
)

Counting = Literal["implemented", "paper"]
COUNTINGS: tuple[Counting, ...] = ("implemented", "paper")
DIVISION_PRICE = 5
ROOT_PRICE = 7


class OperationCount(BaseModel):
    """Operations of one inference, by category."""

    model_config = ConfigDict(frozen=True)

    multiplications: float = 0.0
    divisions: float = 0.0
    roots: float = 0.0
    memory: float = 0.0

    def __add__(self, other: OperationCount) -> OperationCount:
        return OperationCount(**{k: getattr(self, k) + getattr(other, k) for k in type(self).model_fields})

    def __mul__(self, times: float) -> OperationCount:
        return OperationCount(**{k: getattr(self, k) * times for k in type(self).model_fields})

    def as_row(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in type(self).model_fields], dtype=float)

    @classmethod
    def mean_of(cls, rows: np.ndarray) -> OperationCount:
        """The mean count of per-sample rows [batch, 4] (:meth:`as_row`)."""
        return cls(**dict(zip(cls.model_fields, np.mean(np.atleast_2d(rows), 0).tolist())))

    @property
    def priced_multiplications(self) -> float:
        """Multiplications with divisions and roots at their Newton-iteration prices."""
        return self.multiplications + DIVISION_PRICE * self.divisions + ROOT_PRICE * self.roots


def check_counting(counting: str) -> Counting:
    from edgejoule.errors import EdgejouleError

    if counting not in COUNTINGS:
        raise EdgejouleError(f"unknown counting '{counting}'; known: {', '.join(COUNTINGS)}")
    return counting  # type: ignore[return-value]


def operations_energy(ops: OperationCount, bits: int = 16,
                      constants: AcceleratorConstants = DEFAULT_CONSTANTS) -> EnergyBreakdown:
    """Energy of ``ops``: eq. 14 on the priced multiplications, plus E_M = 2 E_MAC per memory access."""
    base = baseline_energy(ops.priced_multiplications, bits, constants)
    memory_uj = 2 * e_mac_pj(bits, constants) * ops.memory / PJ_PER_UJ
    return EnergyBreakdown(compute_uj=base.compute_uj, weights_uj=0.0, activations_uj=base.activations_uj + memory_uj)


def operations_layer(name: str, ops: OperationCount, bits: int = 16,
                     constants: AcceleratorConstants = DEFAULT_CONSTANTS) -> LayerEnergy:
    """``ops`` as one weightless layer of a DNN's breakdown (same prices as :func:`operations_energy`)."""
    e = operations_energy(ops, bits, constants)
    return LayerEnergy(name=name, bits=bits, activation_bits=bits, compute_pj=e.compute_uj * PJ_PER_UJ,
                       weights_pj=0.0, activations_pj=e.activations_uj * PJ_PER_UJ)


def implemented_dnn_energy(weight_layers: Sequence[LayerSpec], bits: Sequence[int],
                           activation_bits: int | Sequence[int], weightless: OperationCount) -> EnergyBreakdown:
    """A DNN under the ``implemented`` counting: eqs. 7-11 on its weight layers at their bit widths, plus its
    counted weightless operations as one more 16-bit layer, ``weightless``."""
    layers = [*dnn_energy(weight_layers, bits, activation_bits).layers, operations_layer("weightless", weightless)]
    return EnergyBreakdown(compute_uj=sum(e.compute_pj for e in layers) / PJ_PER_UJ,
                           weights_uj=sum(e.weights_pj for e in layers) / PJ_PER_UJ,
                           activations_uj=sum(e.activations_pj for e in layers) / PJ_PER_UJ, layers=layers)


# --- the price list: (name, complex flags of the operands, operands' shapes, output size) -> count ---------

FREE = frozenset({"add", "subtract", "negative", "positive", "conjugate", "maximum", "minimum", "fmax", "fmin"})
CONTROL = frozenset({"greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_and",
                     "logical_or", "logical_not", "isfinite", "isnan", "isinf", "sign"})
ROOTS = frozenset({"sqrt", "rsqrt", "exp", "log", "log2", "log1p", "expm1", "exp2"})


def _mul_factor(complex_a: bool, complex_b: bool) -> int:
    return 4 if complex_a and complex_b else 2 if complex_a or complex_b else 1


def price(name: str, complex_in: tuple[bool, ...], shapes: tuple[tuple[int, ...], ...], out_size: int,
          exponent: float | None = None) -> OperationCount:
    """Operations of one call of ``name`` (a numpy ufunc name, or an aten op mapped onto one) producing
    ``out_size`` elements. Raises ``TypeError`` for an operation without a price."""
    out_complex = any(complex_in)
    words = out_size * (2 if out_complex else 1)
    memory = 2.0 * words
    if name in CONTROL:
        return OperationCount()
    if name in FREE or name == "reduce_add":
        return OperationCount(memory=memory)
    if name == "multiply":
        return OperationCount(multiplications=out_size * _mul_factor(*complex_in[:2]), memory=memory)
    if name == "matmul":
        k = shapes[0][-1]
        return OperationCount(multiplications=out_size * k * _mul_factor(*complex_in[:2]), memory=memory)
    if name in ("divide", "true_divide"):
        num_complex, den_complex = complex_in[:2]
        if den_complex:
            return OperationCount(multiplications=6 * out_size, divisions=2 * out_size, memory=memory)
        return OperationCount(divisions=(2 if num_complex else 1) * out_size, memory=memory)
    if name == "reciprocal":
        if out_complex:
            return OperationCount(multiplications=2 * out_size, divisions=2 * out_size, memory=memory)
        return OperationCount(divisions=out_size, memory=memory)
    if name == "square" or (name == "power" and exponent == 2):
        return OperationCount(multiplications=(4 if out_complex else 1) * out_size, memory=memory)
    if name == "power" and exponent in (0.5, -0.5):
        return OperationCount(roots=out_size, memory=memory)
    if name == "absolute":
        if out_complex:  # |z| = sqrt(re^2 + im^2); the result is real
            return OperationCount(multiplications=2 * out_size, roots=out_size, memory=2.0 * out_size)
        return OperationCount(memory=memory)
    if name in ROOTS and not out_complex:
        return OperationCount(roots=out_size, memory=memory)
    if name == "tanh" and not out_complex:
        return OperationCount(roots=out_size, divisions=out_size, memory=memory)
    if name == "softmax":  # exp of each logit, one reciprocal of the sum, a product per logit
        rows = out_size // shapes[0][-1]
        return OperationCount(roots=out_size, divisions=rows, multiplications=out_size, memory=memory)
    raise TypeError(f"no price for the operation '{name}' (complex operands: {complex_in}); add one to "
                    "edgejoule.energy.counting.price rather than leave it uncounted")


# --- the numpy counting backend --------------------------------------------------------------------------

class _Tally:
    def __init__(self) -> None:
        self.count = OperationCount()


_ACTIVE: list[_Tally] = []

# structural functions: they move or select data and compute nothing (np.sum reduces through add.reduce,
# which is counted like any ufunc; argmin selects by comparisons, which are not priced)
_STRUCTURAL = {np.swapaxes, np.concatenate, np.stack, np.broadcast_to, np.where, np.diagonal, np.sum,
               np.zeros_like, np.ones_like, np.expand_dims, np.moveaxis, np.transpose, np.reshape, np.copy,
               np.any, np.all, np.real, np.imag, np.take_along_axis, np.full_like, np.empty_like, np.copyto,
               np.argmin}


def _lu_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(a, b)`` priced for :class:`Counted` arrays, ``a`` [..., m, m] and ``b`` [..., m, k]:
    Gaussian elimination on [a | b] without pivoting (m reciprocal pivots, :math:`(m^3 - m)/3` multiplications
    on a, :math:`m(m-1)/2` per right-hand side), then back substitution (:math:`m(m+1)/2` per right-hand side).
    That is the arithmetic of LAPACK's ``getrf`` + ``getrs`` that numpy runs (LU, then the two triangular
    solves), less the row exchanges of partial pivoting, which are comparisons and moves and are not priced.
    Written with ufuncs, so the tally reads it from this code; it computes the solution too, to float precision
    (for matrices with nonzero leading principal minors, such as the Gram matrices the project solves)."""
    a, b = np.asarray(a).view(Counted), np.asarray(b).view(Counted)
    if b.ndim != a.ndim:
        raise TypeError("count np.linalg.solve(a, b) with b of shape [..., m, k]: a vector b is ambiguous in "
                        "numpy >= 2")
    m = a.shape[-1]
    U = np.concatenate([a, b], -1)
    reciprocals = []
    for k in range(m):
        reciprocals.append(1 / U[..., k, k])
        factors = U[..., k + 1 :, k] * reciprocals[k][..., None]
        # column k below the pivot becomes zero and is never read again, so it is not updated
        U[..., k + 1 :, k + 1 :] -= factors[..., :, None] * U[..., None, k, k + 1 :]
    x = np.zeros_like(U[..., m:])
    for k in reversed(range(m)):
        rest = np.sum(U[..., k, k + 1 : m, None] * x[..., k + 1 :, :], -2)
        x[..., k, :] = (U[..., k, m:] - rest) * reciprocals[k][..., None]
    return x


# functions that compute but are not ufuncs: priced by running an equivalent written with ufuncs
_COUNTED_AS: dict[Callable, Callable] = {np.linalg.solve: _lu_solve}


class Counted(np.ndarray):
    """An ndarray whose arithmetic is priced into the active :func:`count_operations` tally."""

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raw = tuple(x.view(np.ndarray) if isinstance(x, Counted) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(x.view(np.ndarray) if isinstance(x, Counted) else x for x in kwargs["out"])
        result = getattr(ufunc, method)(*raw, **kwargs)
        if _ACTIVE:
            name = ufunc.__name__ if method == "__call__" else f"{method}_{ufunc.__name__}"
            if method == "reduce" and ufunc.__name__ in ("maximum", "minimum", "logical_and", "logical_or"):
                name = "reduce_add"
            arrays = [np.asarray(x) for x in raw]
            exponent = float(np.asarray(raw[1]).flat[0]) if ufunc.__name__ == "power" and np.size(raw[1]) == 1 else None
            _ACTIVE[-1].count += price(name, tuple(np.iscomplexobj(a) for a in arrays),
                                       tuple(a.shape for a in arrays), int(np.size(result)), exponent)
        return result.view(Counted) if isinstance(result, np.ndarray) else result

    def __array_function__(self, func: Callable, types: Any, args: Any, kwargs: Any) -> Any:
        if func in _COUNTED_AS:
            return _COUNTED_AS[func](*args, **kwargs)
        if func not in _STRUCTURAL:
            raise TypeError(f"{func.__module__}.{func.__name__} cannot be counted: write it with ufuncs "
                            "(edgejoule.energy.counting) so that its operations are priced")
        result = super().__array_function__(func, types, args, kwargs)
        return result.view(Counted) if isinstance(result, np.ndarray) and not isinstance(result, Counted) else result


@contextmanager
def count_operations() -> Iterator[_Tally]:
    """Price every operation on :class:`Counted` arrays inside the block; ``tally.count`` is the total."""
    tally = _Tally()
    _ACTIVE.append(tally)
    try:
        yield tally
    finally:
        _ACTIVE.pop()


def counted(*arrays: np.ndarray) -> tuple[Counted, ...]:
    return tuple(np.asarray(a).view(Counted) for a in arrays)


def count_call(function: Callable[..., Any], *arrays: np.ndarray, **options: Any) -> OperationCount:
    """Operations of one call of ``function`` on one sample: ``arrays`` (the sample's data) hold a batch of
    one; ``options`` are the site's constants (noise power, budget), given, so arithmetic on them alone is
    not counted."""
    if any(len(a) != 1 for a in arrays):
        raise ValueError("count one sample: pass arrays with a leading batch of 1")
    with count_operations() as tally:
        function(*counted(*arrays), **options)
    return tally.count

