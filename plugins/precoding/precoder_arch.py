"""The architecture of the precoder CNN template (Fig. 1; :mod:`edgejoule.plugins.precoding.precoder_cnn`),
shared by its family description and its torch module without either importing the other."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

LAYER_NAMES = ("CONV", "FCL1", "FCL2", "FCL3")
KERNEL = 3


class PrecoderArch(BaseModel):
    """Architecture of one precoder CNN."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    c_out: int = Field(64, ge=1, description="output channels of the convolution")
    d_fcl: int = Field(1024, ge=1, description="width of the two hidden fully connected layers")
    n_t: int = Field(64, ge=1, description="BS antennas")
    n_u: int = Field(4, ge=1, description="users")
    dropout: float = Field(0.05, ge=0, lt=1)
