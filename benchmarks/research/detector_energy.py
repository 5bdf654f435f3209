"""Energy per detection under the ``implemented`` counting of the unfolded nets (FP, LSQ and KAQ at 4, 3 and 2
bits; KAQ with its step policy's own work, kaq_core.policy_operations) beside ZF and LMMSE, on the two channels
of issue 21 (Rayleigh 8x4, urban-nlos 16x4): the table of docs/DETECTION.md, "What KAQ's channel-adaptive step
costs". The same figures are in every ``edgejoule detect`` table; this needs no training.
Run: .venv/bin/python benchmarks/research/detector_energy.py [--policy learned]
"""

from __future__ import annotations

import argparse

from edgejoule import plugin_manager
from edgejoule.energy.counting import operations_energy
from edgejoule.plugins.detection.detect_experiment import net_energy
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch

CHANNELS = {"Rayleigh 8x4": 8, "urban-nlos 16x4": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="learned", help="the KAQ step policy (kaq_core.POLICIES)")
    args = parser.parse_args()
    family = plugin_manager.get("models", "unfolded")
    print("| net | FP (16 bits) | 4 bits LSQ / KAQ | 3 bits LSQ / KAQ | 2 bits LSQ / KAQ | ZF / LMMSE |")
    print("|---|---|---|---|---|---|")
    for channel, n_r in CHANNELS.items():
        linear = [operations_energy(plugin_manager.get("baselines", name).operations(n=2 * n_r, m=8)).total_uj
                  for name in ("zf-detector", "lmmse-detector")]
        for kind, label in (("pgd", "PGD-Net"), ("admm", "ADMM-Net")):
            arch = UnfoldedArch(kind=kind, n_r=n_r, n_u=4)
            cells = [f"{net_energy(family, arch, 16)['implemented'] * 1e3:.2f}"]
            cells += [f"{net_energy(family, arch, b)['implemented'] * 1e3:.2f} / "
                      f"{net_energy(family, arch, b, args.policy)['implemented'] * 1e3:.2f}" for b in (4, 3, 2)]
            cells.append(" / ".join(f"{e * 1e3:.2f}" for e in linear))
            print(f"| {label}, {channel} | " + " | ".join(cells) + " |")
    print("\n(nJ per detection, implemented counting)")


if __name__ == "__main__":
    main()
