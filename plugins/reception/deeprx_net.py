"""The torch module of the ``deeprx`` family (equations and layer count in :mod:`edgejoule.plugins.reception.deeprx`)."""

from __future__ import annotations

import torch
from torch import nn

from edgejoule.plugins.reception.deeprx_arch import IN_CHANNELS, DeepRxArch, features
from edgejoule.tasks.ofdm import OfdmConfig, OfdmSlot


class SeparableConv(nn.Module):
    """Depthwise 3x3 (dilated, 'same' padding) then pointwise 1x1."""

    def __init__(self, c: int, dilation: tuple[int, int]) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class PreActBlock(nn.Module):
    def __init__(self, c: int, dilation: tuple[int, int]) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c), SeparableConv(c, dilation)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), SeparableConv(c, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(h)))


class DeepRx(nn.Module):
    """[B, 9, n_sym, n_sc] (``features``) -> bit logits [B, n_sym, n_sc, bits_per_symbol]."""

    def __init__(self, arch: DeepRxArch) -> None:
        super().__init__()
        self.arch = arch
        self.input = nn.Conv2d(IN_CHANNELS, arch.width, 3, padding=1)
        self.blocks = nn.Sequential(*(PreActBlock(arch.width, arch.dilation(b)) for b in range(arch.blocks)))
        self.out_bn = nn.BatchNorm2d(arch.width)
        self.out = nn.Conv2d(arch.width, arch.bits_per_symbol, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.input(x))
        return self.out(torch.relu(self.out_bn(h))).permute(0, 2, 3, 1)


def inputs(cfg: OfdmConfig, slot: OfdmSlot) -> torch.Tensor:
    """float32 [B, 9, n_sym, n_sc]: the input planes of :func:`edgejoule.plugins.reception.deeprx_arch.features`."""
    return torch.from_numpy(features(cfg, slot))
