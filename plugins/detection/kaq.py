r"""KAQ: kernel-based adaptive quantization of deep-unfolded detectors (arXiv 2505.12736), quantizer ``kaq``.

Quantization-aware training of an unfolded detector (:mod:`edgejoule.plugins.detection.unfolded`) whose layer activations
:math:`v_k` are fake-quantized to b bits with LSQ (Esser et al. 2020; :mod:`edgejoule.plugins.quantization.lsq`), starting from the
full-precision (FP) network, with two additions:

1. **Distribution alignment.** The loss adds, per layer, the squared maximum mean discrepancy between the FP
   network's activations and the quantized network's on the same batch, with a Gaussian kernel whose
   bandwidth :math:`h_k` is a kernel-density (KDE) bandwidth, learned:

   .. math::

      \mathcal{L} = \tfrac{1}{B}\|\hat x - x\|^2
        + w_t \sum_k \mathrm{MMD}^2_{h_k}\big(v_k^{FP}, Q(v_k)\big)
        + \sum_k \Big(-\tfrac{1}{N}\sum_i \log \hat p_{h_k,-i}(v^{FP}_{k,i})\Big)

   :math:`\mathrm{MMD}^2_h(a, b) = \overline{k_h(a,a')} + \overline{k_h(b,b')} - 2\,\overline{k_h(a,b)}`,
   :math:`k_h(u,v) = e^{-(u-v)^2/2h^2}` (the biased estimator: zero for identical samples). This is the
   paper's form, on every layer's activations; where the default applies it: "What is compared" below.
   The paper does not say how the bandwidth is learned; **our design**: :math:`h_k` maximizes the
   leave-one-out likelihood :math:`\hat p_{h,-i}` of the FP activations (the third term, its only gradient;
   it enters the MMD detached, since minimizing the MMD over h would inflate h until the MMD vanished).
   The MMD weight (paper: unverified) is :math:`w_t = w\,(1 - t/T)` over the T QAT steps, w = 1 by default
   (``mmd_schedule="constant"`` keeps w): the MMD rewards keeping the FP distribution's tails, the detection
   MSE clipping them; matching distributions may guide the start of QAT, the task alone sets its end.
   **What is compared, and where** (``mmd_target=``, one of ``MMD_TARGETS``; our design, the paper compares
   every layer's activations): the MMD term is :math:`w_t \sum_{k \in S} \mathrm{MMD}^2_{h_k}(\phi_k(v_k^{FP}),
   \phi_k(Q(v_k)))` (the KDE term on :math:`\phi_k(v_k^{FP})`):

   - ``output`` (default): :math:`S = \{K\}`, :math:`\phi_K = \psi_K^{FP}`, the FP teacher's soft projection
     of the last layer: the distribution of the soft symbol estimate, the quantity the MSE is computed on. The
     intermediate layers are left to the task loss.
   - ``decisions``: every layer, :math:`\phi_k = \psi_k^{FP}` (for PGD-Net the iterate :math:`x_{k+1}` the layer
     hands on): tails the slicer saturates, where clipping costs the task nothing, no longer count.
   - ``activations``: every layer, :math:`\phi_k(v) = v` (the paper's reading; the default until the
     measurements in docs/DETECTION.md).

   **Which net is the teacher** (``mmd_teacher=``, one of ``MMD_TEACHERS``): ``frozen`` (default) a copy of
   the FP net as QAT starts; ``along`` the quantized net's own weights run in FP arithmetic (quantizers
   bypassed), synced every step, so the MMD measures only what quantization does to the current net and never
   pulls its weights back toward the FP net's (the teacher trains along).

   Why ``output``: the MMD on every layer's :math:`v_k` rewards keeping the FP tails in layers whose
   BER-optimal quantizer clips them. On Rayleigh PGD-Net at 4 bits the output form is closer to FP than the
   activation form on each of four seeds (mean gap 0.51 against 0.69 dB), but it does not beat the step policy
   alone (0.45) (docs/DETECTION.md, "Where the MMD acts").

2. **Channel-adaptive step size.** The step used on a batch (one SNR: a frame) is each layer's learned step
   times a factor from the batch's channel condition, the ZF error std
   :math:`\sqrt{\bar e}`, :math:`\bar e = \mathrm{mean}_{batch}\,\frac{\sigma^2}{2}\,\overline{\mathrm{diag}}(H^T H)^{-1}`
   (noise level and conditioning of H), computed by a pluggable **step-size policy** (``policy=`` one of
   ``POLICY_NAMES``). The paper gives no formula; this project's policies, each normalized so that the
   factor's geometric mean over calibration batches spanning the training SNRs is 1 (the learned step is the
   LSQ step of the typical training batch):

   - ``learned`` (default): :math:`s_k = s_{k,learned}\,(\sqrt{\bar e}/\sqrt{\bar e_{ref}})^{g_k}` with a
     learned exponent :math:`g_k` per layer, 0 at the start (plain LSQ); the task loss sets how far and in
     which direction each layer's step follows the channel.
   - ``noise-enhancement``: the step follows a range model :math:`r_k = a_k + c_k\sqrt{\bar e}`,
     :math:`a_k, c_k \ge 0` fitted to the 99th percentile of the FP net's :math:`|v_k|` on the calibration
     batches (a layer whose range does not move with the noise gets factor 1).
   - ``noise-level``: ``learned``'s power law in the frame's noise std :math:`\sqrt{\sigma^2/2}` alone,
     without reading the channel: a mean and a root per frame instead of an inverse per detection.
   - ``static`` (factor 1): the MMD term alone, for ablation.

   What reading the channel costs: per detection a Gram matrix and an m x m inverse (the frame's mean of every
   detection's noise enhancement), more than a ZF detection; counted in the ``implemented`` energy of a KAQ net
   (:func:`edgejoule.plugins.detection.kaq_core.policy_operations`), it makes a KAQ net cost 4.4x the LSQ net
   of its bits (docs/DETECTION.md, "What KAQ's channel-adaptive step costs").

   Why not a fixed range model: the first default scaled every layer by
   :math:`((L-1)a + 3\sqrt{\bar e})/((L-1)a + 3\sqrt{\bar e_{cal}})` (a ZF symbol estimate's range). It moved
   the step by 2.2x over 0-20 dB where PGD-Net's early activations move by < 10 %, and a trained 4-bit net's
   BER is lowest with a *smaller* step at low SNR, not a larger one; KAQ lost 3.7-4.6 dB to FP at 4 bits
   (docs/DETECTION.md, "Why KAQ lost to LSQ"). A new policy is a class with ``name``,
   ``calibrate(conds, acts)`` and ``factor(cond)`` (:class:`edgejoule.plugins.detection.kaq_core.StepPolicy`).

torch is imported only when the quantizer is used, so this entry point loads on an edge device.
"""

from __future__ import annotations

from typing import Any, Sequence

from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.detection.kaq_options import MMD_TARGETS, MMD_TEACHERS


class KaqQuantizer:
    name = "kaq"

    def quantize(self, model: Any, bits: Sequence[int], **options: Any) -> Any:
        """QAT of an FP unfolded ``model`` with activations at ``bits[0]`` bits (one width for all layers).

        options: ``source`` (a :class:`edgejoule.tasks.detection.ChannelSource`, required), ``cfg``
        (:class:`edgejoule.plugins.detection.unfolded_net.TrainConfig`), ``policy``, ``mmd_weight``, ``mmd_schedule``, ``mmd_target``,
        ``mmd_teacher``, ``progress``."""
        from edgejoule.plugins.detection.kaq_core import quantize_activations
        from edgejoule.plugins.detection.unfolded_net import TrainConfig

        if len(set(bits)) != 1:
            raise ValueError("kaq uses one activation bit width for all layers; give a single width")
        return quantize_activations(
            model,
            "kaq",
            int(bits[0]),
            options["source"],
            options.get("cfg", TrainConfig()),
            policy=options.get("policy", "learned"),
            mmd_weight=options.get("mmd_weight", 1.0),
            mmd_schedule=options.get("mmd_schedule", "linear"),
            mmd_target=options.get("mmd_target", MMD_TARGETS[0]),
            mmd_teacher=options.get("mmd_teacher", MMD_TEACHERS[0]),
            progress=options.get("progress"),
        )


@hookimpl
def register_quantizers(register) -> None:
    register("kaq", KaqQuantizer())
