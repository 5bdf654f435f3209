r"""Coded block error rate: an LDPC code over each block's bits, decoded by belief propagation from the
receiver's or detector's bit LLRs.

**Code**: a regular Gallager LDPC code (Gallager, IRE Trans. IT 1962, Sec. II) of length n with column weight
:math:`d_v = 3` and row weight :math:`d_c` (rate :math:`1 - d_v/d_c`: 1/2 with :math:`d_c = 6`, 3/4 with 12).
Its parity-check matrix stacks :math:`d_v` bands of n/d_c rows: the first band has ones at columns
:math:`[i d_c, (i+1) d_c)` of row i, the others are seeded random column permutations of it. The generator is
the null space of H over GF(2) in reduced row echelon form, so the codeword on the pivot columns is the info
word (systematic encoding; :math:`k \ge n/2` when H has dependent rows). n is the largest multiple of
:math:`d_c` that fits in the block's bits; the rest carry uncoded filler.

**Decoder**: normalized min-sum belief propagation (Chen and Fossorier, IEEE Trans. Commun. 2002; scaling
0.75, at most 50 iterations) of the ``ldpc`` package (Roffe et al., v2). Min-sum is invariant to a common
scale of the LLRs, so a receiver whose logits are LLRs up to a factor decodes as well as a calibrated one.

**Mapping** (one codeword per block, e.g. per slot's data REs): a seeded random interleaver :math:`\pi` places
codeword bit :math:`\pi(j)` on the block's bit j. The tasks' simulators send uniform random bits b; they are
read as the scrambled interleaved codeword :math:`b = c_\pi \oplus s` with the scrambling sequence
:math:`s = b \oplus c_\pi` known to the receiver (5G NR scrambles every codeword with a known Gold sequence, TS
38.211 Sec. 6.3.1.1), so the receiver descrambles its LLRs :math:`\ell_c = (1 - 2s)\,\ell_b`. With b uniform
and independent of c, s is too, and this is exactly a scrambled coded transmission through the unchanged
simulators. Sign convention of :mod:`edgejoule.tasks.ofdm`: a positive LLR means bit 1.

The ``ldpc`` package is imported when a block is decoded; it comes with the ``research`` extra.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgejoule.errors import EdgejouleError

ROW_WEIGHTS = {"ldpc-r1/2": 6, "ldpc-r3/4": 12}
COLUMN_WEIGHT = 3
MAX_ITER = 50
MS_SCALING = 0.75
MAX_LLR = 30.0  # |LLR| clip: BP takes bit-flip probabilities, and exp(-30) is still a positive one


class LdpcCode(BaseModel):
    """A code of the module docstring on a block of ``block_bits`` bits."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    block_bits: int
    H: np.ndarray  # uint8 [m, n] parity checks
    G: np.ndarray  # uint8 [k, n] generator in reduced row echelon form
    info_cols: np.ndarray  # [k] pivot columns of G: the codeword there is the info word
    perm: np.ndarray  # [n] interleaver: block bit j carries codeword bit perm[j]

    @property
    def n(self) -> int:
        return self.H.shape[1]

    @property
    def k(self) -> int:
        return self.G.shape[0]

    def encode(self, u: np.ndarray) -> np.ndarray:
        """uint8 [B, n] codewords of info words ``u`` [B, k]."""
        return ((np.asarray(u, np.int64) @ self.G) % 2).astype(np.uint8)

    def decode(self, llr: np.ndarray) -> np.ndarray:
        """uint8 [B, k] info words from codeword-bit LLRs [B, n] (positive means 1)."""
        decoder = _decoder(self.H)
        llr = np.clip(np.asarray(llr, np.float64), -MAX_LLR, MAX_LLR)
        flip = 1.0 / (1.0 + np.exp(np.abs(llr)))
        hard = (llr > 0).astype(np.uint8)
        out = np.empty((len(llr), self.k), np.uint8)
        for b in range(len(llr)):
            decoder.update_channel_probs(flip[b])
            out[b] = decoder.decode(hard[b])[self.info_cols]
        return out


def check_code(name: str) -> None:
    """Refuses an unknown code name, or a missing ``ldpc`` package, in one line."""
    if name not in ROW_WEIGHTS:
        raise EdgejouleError(f"unknown code '{name}'; use one of {', '.join(ROW_WEIGHTS)}")
    _decoder(np.ones((1, 2), np.uint8))


def _decoder(H: np.ndarray):
    try:
        from ldpc import BpDecoder
    except ImportError:
        raise EdgejouleError("coded evaluation needs the ldpc package: pip install 'edgejoule[research]'") from None
    return BpDecoder(H, error_rate=0.1, max_iter=MAX_ITER, bp_method="minimum_sum", ms_scaling_factor=MS_SCALING,
                     input_vector_type="received_vector")


def gallager_pcm(n: int, row_weight: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [3 n / row_weight, n]: the regular parity-check matrix of the module docstring."""
    rows = n // row_weight
    band = np.zeros((rows, n), np.uint8)
    band[np.repeat(np.arange(rows), row_weight), np.arange(n)] = 1
    return np.vstack([band] + [band[:, rng.permutation(n)] for _ in range(COLUMN_WEIGHT - 1)])


def _systematic_generator(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G in reduced row echelon form, its pivot columns) spanning the GF(2) null space of H."""
    n = H.shape[1]
    a = H.copy()
    pivots: list[int] = []
    r = 0
    for col in range(n):  # Gauss-Jordan on H: its pivot columns are the parity bits
        hit = np.nonzero(a[r:, col])[0]
        if not len(hit):
            continue
        a[[r, r + hit[0]]] = a[[r + hit[0], r]]
        others = np.nonzero(a[:, col])[0]
        a[others[others != r]] ^= a[r]
        pivots.append(col)
        r += 1
        if r == len(a):
            break
    free = np.setdiff1d(np.arange(n), pivots)
    G = np.zeros((len(free), n), np.uint8)
    G[np.arange(len(free)), free] = 1  # free bits are the info word; each pivot bit is the parity of its row
    G[:, pivots] = a[: len(pivots)][:, free].T
    return G, free


def ldpc_code(name: str, block_bits: int, seed: int = 0) -> LdpcCode:
    """The code ``name`` (``ldpc-r1/2`` or ``ldpc-r3/4``) on blocks of ``block_bits`` bits, built from ``seed``."""
    check_code(name)
    row_weight = ROW_WEIGHTS[name]
    n = block_bits // row_weight * row_weight
    if n < 2 * row_weight:
        raise EdgejouleError(f"{name} needs blocks of at least {2 * row_weight} bits; got {block_bits}")
    rng = np.random.default_rng((seed, 3))
    H = gallager_pcm(n, row_weight, rng)
    G, info_cols = _systematic_generator(H)
    return LdpcCode(name=name, block_bits=block_bits, H=H, G=G, info_cols=info_cols, perm=rng.permutation(n))


def block_errors(code: LdpcCode, llr: np.ndarray, bits: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(block errors, blocks) of fresh info words carried on blocks whose sent bits are ``bits`` [B, block_bits]
    and whose bit LLRs are ``llr`` [B, block_bits] (module docstring: interleaving and scrambling)."""
    n = code.n
    u = rng.integers(0, 2, (len(bits), code.k)).astype(np.uint8)
    c_pi = code.encode(u)[:, code.perm]
    s = (np.asarray(bits[:, :n]) > 0).astype(np.uint8) ^ c_pi
    descrambled = np.asarray(llr[:, :n], np.float64) * (1.0 - 2.0 * s)
    llr_c = np.empty_like(descrambled)
    llr_c[:, code.perm] = descrambled
    return int(np.any(code.decode(llr_c) != u, axis=1).sum()), len(bits)
