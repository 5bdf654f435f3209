"""A site: a named deployment environment from which a channel dataset is generated.

Defaults follow the precoder-compression paper: an 8x8 uniform planar array with half-wavelength spacing
at 2 GHz, 20 m high, 20 W, 10 dB system loss, N_U = 4 single-antenna users per sample drawn from
positions on circles of 50..350 m at 10-degree steps (7 x 36 = 252 anchor points). Each anchor is jittered
into several distinct positions so datasets hold thousands of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BOLTZMANN_NOISE_DBM_PER_HZ = -174.0
SPEED_OF_LIGHT = 299_792_458.0


class ArrayConfig(BaseModel):
    """Uniform planar array in the BS's y-z plane (boresight along x), isotropic elements."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(8, ge=1)
    cols: int = Field(8, ge=1)
    spacing_wavelengths: float = Field(0.5, gt=0)

    @property
    def n_antennas(self) -> int:
        return self.rows * self.cols


class GeometricParams(BaseModel):
    """Parameters of the built-in geometric multipath model (see plugins/sites/geometric.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_clusters: int = Field(8, ge=0, description="scattering clusters (buildings, walls) fixed per site")
    rays_per_cluster: int = Field(12, ge=1)
    cluster_spread_m: float = Field(8.0, ge=0)
    reflection_loss_db: float = Field(6.0, ge=0, description="mean loss of one bounce")
    pathloss_exponent: float = Field(2.0, ge=1.5, le=5.0)
    los_blocked_fraction: float = Field(0.0, ge=0, le=1, description="share of anchors whose LOS is blocked")
    blockage_loss_db: float = Field(30.0, ge=0, description="attenuation of a blocked LOS path")


class SiteConfig(BaseModel):
    """Everything that defines a site's channel dataset; its hash keys the dataset cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    generator: str = Field("geometric", description="channel generator plugin")
    propagation: Literal["los", "nlos", "mixed"] = "nlos"
    scene: str | None = Field(None, description="ray-tracing scene name (generator 'raytrace')")
    carrier_hz: float = Field(2e9, gt=0)
    bs_position_m: tuple[float, float, float] = (0.0, 0.0, 20.0)
    array: ArrayConfig = ArrayConfig()
    tx_power_w: float = Field(20.0, gt=0)
    system_loss_db: float = Field(10.0, ge=0)
    excess_loss_db: float = Field(0.0, ge=0, description="extra loss on every path: building penetration, foliage, body, cables")
    noise_figure_db: float = Field(9.0, ge=0, description="UE noise figure (3GPP TR 38.901 uses 9 dB)")
    bandwidth_hz: float = Field(20e6, gt=0)
    n_users: int = Field(4, ge=1)
    radii_m: tuple[float, ...] = (50, 100, 150, 200, 250, 300, 350)
    angle_step_deg: float = Field(10.0, gt=0, le=360)
    user_height_m: float = Field(1.5, ge=0)
    positions_per_anchor: int = Field(8, ge=1, description="jittered positions around each anchor point")
    jitter_m: float = Field(4.0, ge=0)
    n_samples: int = Field(6000, ge=10, description="samples, each N_U distinct positions")
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    geometric: GeometricParams = GeometricParams()

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x <= 0 for x in v) or not math.isclose(sum(v), 1.0, abs_tol=1e-9):
            raise ValueError(f"split must be three positive fractions summing to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _enough_positions(self) -> "SiteConfig":
        if self.n_anchor_points * self.positions_per_anchor < self.n_users:
            raise ValueError("fewer positions than users per sample: add radii, angles or positions_per_anchor")
        return self

    # -- derived quantities ----------------------------------------------------------------------------
    @property
    def wavelength_m(self) -> float:
        return SPEED_OF_LIGHT / self.carrier_hz

    @property
    def n_antennas(self) -> int:
        return self.array.n_antennas

    @property
    def n_anchor_points(self) -> int:
        return len(self.radii_m) * len(self.angles_deg())

    @property
    def noise_power_w(self) -> float:
        """Thermal noise k T B times the noise figure, watts."""
        dbm = BOLTZMANN_NOISE_DBM_PER_HZ + 10 * math.log10(self.bandwidth_hz) + self.noise_figure_db
        return 10 ** ((dbm - 30) / 10)

    def angles_deg(self) -> np.ndarray:
        return np.arange(0.0, 360.0, self.angle_step_deg)

    def anchor_points(self) -> np.ndarray:
        """User anchor positions [7*36, 3] on the circles around the BS, at user height."""
        radii = np.asarray(self.radii_m, dtype=float)
        ang = np.deg2rad(self.angles_deg())
        r, a = np.meshgrid(radii, ang, indexing="ij")
        x = self.bs_position_m[0] + r * np.cos(a)
        y = self.bs_position_m[1] + r * np.sin(a)
        z = np.full_like(x, self.user_height_m)
        return np.stack([x, y, z], -1).reshape(-1, 3)

    def cache_key(self) -> str:
        """Content hash of the config: the same config (and seed) always maps to the same dataset."""
        payload = json.dumps(self.model_dump(mode="json", exclude={"description"}), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> "SiteConfig":
        return SiteConfig.model_validate({**self.model_dump(), **changes})
