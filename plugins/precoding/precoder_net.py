"""The torch module of the precoder CNN (see :mod:`edgejoule.plugins.precoding.precoder_cnn` for the template and its reference)."""

from __future__ import annotations

import torch
from torch import nn

from edgejoule.plugins.precoding.precoder_arch import KERNEL, PrecoderArch
from edgejoule.tasks.precoding import scale_to_power


class PrecoderCNN(nn.Module):
    """H (normalized to unit noise) -> W with total power P_max. Input ``[B, N_U, N_T]`` complex.

    The real-valued core :meth:`forward_real` is what gets trained and quantized; scaling the input by
    ``input_scale`` and the output to the power budget happen around it (:meth:`forward`; the exported graph
    wraps the core with both in :meth:`served`, which ``plugins/export/tflite.py`` converts and
    :mod:`edgejoule.plugins.energy.op_counter` counts).
    """

    def __init__(self, arch: PrecoderArch, outputs: int, input_scale: float = 1.0) -> None:
        """``outputs``: FCL3's width, from the family (:meth:`PrecoderCNNFamily.outputs`)."""
        super().__init__()
        self.arch = arch
        # set from the site's training channels (edgejoule.plugins.precoding.precoder_training.input_scale); saved with the weights
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        flat = arch.c_out * arch.n_u * arch.n_t
        self.conv = nn.Conv2d(2, arch.c_out, KERNEL, padding=KERNEL // 2)
        self.bn0 = nn.BatchNorm2d(arch.c_out)
        self.fc1 = nn.Linear(flat, arch.d_fcl)
        self.bn1 = nn.BatchNorm1d(arch.d_fcl)
        self.fc2 = nn.Linear(arch.d_fcl, arch.d_fcl)
        self.bn2 = nn.BatchNorm1d(arch.d_fcl)
        self.fc3 = nn.Linear(arch.d_fcl, outputs)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(arch.dropout)

    def calibrate(self, input_scale: float, p_max: float) -> None:
        """Set the site's constants before training: the inputs' scale (``p_max`` is for subclasses whose
        output structure needs the power budget; this one meets it by scaling, eq. 5)."""
        self.input_scale.fill_(input_scale)

    def layers(self) -> list[nn.Module]:
        """The four weight layers, in the order of the bit-width list [CONV, FCL1, FCL2, FCL3]."""
        return [self.conv, self.fc1, self.fc2, self.fc3]

    def forward_real(self, x: torch.Tensor) -> torch.Tensor:
        """Real-valued core, which the exported graph wraps: ``[B, 2, N_U, N_T]`` -> ``[B, 2, N_T, N_U]``
        (real and imaginary parts of W before power scaling)."""
        # the reshape keeps fc3's own output tensor named after fc3 in the converted graph
        return self.head(x).reshape(-1, 2, self.arch.n_t, self.arch.n_u)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The four weight layers: ``[B, 2, N_U, N_T]`` -> FCL3's output ``[B, outputs]``."""
        z = self.drop(self.act(self.bn0(self.conv(x))))
        z = self.drop(self.act(self.bn1(self.fc1(z.flatten(1)))))
        z = self.drop(self.act(self.bn2(self.fc2(z))))
        return self.fc3(z)

    def served(self, planes: torch.Tensor, factor: float, amplitude: float) -> torch.Tensor:
        r"""The exported graph's computation (``plugins/export/tflite.py``, eq. 5 met with equality): raw planes
        of H ``[B, 2, N_U, N_T]`` -> W's planes ``[B, 2, N_T, N_U]`` with
        :math:`W = a\, \mathrm{out} / \sqrt{\max(\|\mathrm{out}\|_F^2, \epsilon)}`, out the core on the planes
        times ``factor`` (:math:`s_{in}/\sigma`), ``amplitude`` :math:`a = \sqrt{P_{max}}`."""
        out = self.forward_real(planes * factor)
        power = torch.sum(out * out, dim=(1, 2, 3), keepdim=True)
        # the smallest normal float32 power: any output with a power at all is scaled exactly, and an all-zero
        # one is multiplied by a finite number (0 * inf would be NaN)
        floor = float(torch.finfo(torch.float32).tiny)
        return out * (amplitude * torch.rsqrt(torch.clamp_min(power, floor)))

    def forward(self, H: torch.Tensor, p_max: torch.Tensor | float = 1.0) -> torch.Tensor:
        x = torch.stack([H.real, H.imag], 1).float() * self.input_scale
        out = self.forward_real(x)
        W = torch.complex(out[:, 0], out[:, 1])
        return scale_to_power(W, torch.as_tensor(p_max, dtype=torch.float32), xp=torch)
