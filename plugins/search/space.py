"""The search space, the budgets and the candidates of an MPQ + architecture search."""

from __future__ import annotations

import hashlib
import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ALLOWED_BITS = (2, 4, 8, 16)
# the family that reaches WMMSE's sum rate (docs/COMPRESSION.md); precoder_cnn, the paper's Fig. 1 template,
# stays selectable to reproduce its tables
DEFAULT_FAMILY = "precoder_structured"
# what every search was before --family existed: a request.json without the field holds one of these
FAMILY_BEFORE_FAMILIES = "precoder_cnn"


class SearchSpace(BaseModel):
    """Paper defaults: C_out in {8,16,32,64}, D_FCL in {512,1024}, bits {2,4,8,16}^4 -> 8 x 256 = 2048."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    c_out: tuple[int, ...] = (8, 16, 32, 64)
    d_fcl: tuple[int, ...] = (512, 1024)
    bits: tuple[int, ...] = ALLOWED_BITS

    @field_validator("c_out", "d_fcl", "bits")
    @classmethod
    def _not_empty(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("the search space is empty: give at least one value")
        if any(x <= 0 for x in v):
            raise ValueError(f"values must be positive, got {v}")
        return tuple(sorted(set(v)))

    @field_validator("bits")
    @classmethod
    def _allowed_bits(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [b for b in v if b not in ALLOWED_BITS]
        if bad:
            raise ValueError(f"bit widths must be in {{2,4,8,16}}, got {bad[0]}")
        return v

    def archs(self) -> list[tuple[int, int]]:
        return list(itertools.product(self.c_out, self.d_fcl))

    def bit_configs(self) -> list[tuple[int, int, int, int]]:
        return list(itertools.product(self.bits, repeat=4))

    def size(self) -> int:
        return len(self.archs()) * len(self.bit_configs())


class Budget(BaseModel):
    """How much training each step gets. FP pre-training is shared per architecture and seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    n_samples: int = Field(6000, description="samples of the site's dataset (split 80/10/10)")
    fp_epochs: int = Field(60, ge=1)
    fp_patience: int = Field(10, ge=1)
    fp_batch: int = Field(250, ge=1)
    qat_steps: int = Field(8, ge=0, description="LSQ fine-tuning steps per candidate")
    qat_batch: int = Field(250, ge=1)
    eval_samples: int | None = Field(None, description="test samples for evaluation (None: all)")


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in [
        Budget(name="smoke", n_samples=1200, fp_epochs=3, fp_patience=3, qat_steps=2, eval_samples=200),
        Budget(name="default"),
        Budget(name="long", n_samples=20000, fp_epochs=200, fp_patience=20, qat_steps=40),
    ]
}

Executor = Literal["local", "dask"]


class Candidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    c_out: int
    d_fcl: int
    bits: tuple[int, int, int, int]
    seed: int

    @property
    def key(self) -> str:
        return f"c{self.c_out}-d{self.d_fcl}-b{'.'.join(map(str, self.bits))}-s{self.seed}"

    @property
    def arch_key(self) -> str:
        return f"c{self.c_out}-d{self.d_fcl}-s{self.seed}"

    def torch_seed(self) -> int:
        """A seed derived from the whole candidate: the same candidate trains identically anywhere."""
        return int.from_bytes(hashlib.sha256(self.key.encode()).digest()[:4], "little")


def candidates(space: SearchSpace, seeds: tuple[int, ...]) -> list[Candidate]:
    return [
        Candidate(c_out=c, d_fcl=d, bits=bits, seed=s)
        for s in seeds
        for (c, d) in space.archs()
        for bits in space.bit_configs()
    ]
