"""How far the FP precoder CNN gets against WMMSE with longer training than a CPU search budget allows.

Trains one architecture of the Fig. 1 template (``edgejoule.plugins.precoding.precoder_net.PrecoderCNN``) with the loss -R(W)
(eq. 6), one random batch per step, either from the fixed training split (``--fixed``, what the search did
before) or from fresh combinations of the training positions (those of
``edgejoule.plugins.precoding.precoder_training.training_combinations``, what the search now trains on, drawn here per batch
on the device), and prints the sum rate on 2000 training samples and on the validation split along the
way. ``--features`` compares input scalings: ``global`` (the per-site constant the package uses), ``sample``
(per-sample RMS) or ``user`` (each user's row to unit RMS). Runs on CUDA when present.

    .venv/bin/python benchmarks/bench_precoder_quality.py --site urban-nlos --c-out 64 --d-fcl 1024 \\
        --steps 20000 --batch 1000 --lr 2e-3 --one-cycle
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from edgejoule.plugins.precoding.precoder_arch import PrecoderArch
from edgejoule.plugins.precoding.precoder_cnn import PrecoderCNNFamily
from edgejoule.plugins.precoding.precoder_net import PrecoderCNN
from edgejoule.plugins.precoding.precoder_training import input_scale, training_combinations, unit_noise_channels
from edgejoule.sites import get_site, load_dataset
from edgejoule.tasks.precoding import scale_to_power, sum_rate


def features(H: torch.Tensor, mode: str, scale: float) -> torch.Tensor:
    if mode == "global":
        return H * scale
    dims = (-2, -1) if mode == "sample" else (-1,)
    return H / torch.sqrt(torch.mean(torch.abs(H) ** 2, dims, keepdim=True))


class Net(PrecoderCNN):
    """The package's network with a choice of input scaling (the diagnosis of docs/COMPRESSION.md)."""

    def __init__(self, arch: PrecoderArch, mode: str, scale: float) -> None:
        super().__init__(arch, outputs=PrecoderCNNFamily().outputs(arch))
        self.mode, self.scale = mode, scale

    def forward(self, H: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
        F = features(H, self.mode, self.scale)
        out = self.forward_real(torch.stack([F.real, F.imag], 1).float())
        return scale_to_power(torch.complex(out[:, 0], out[:, 1]), torch.tensor(p_max, device=H.device), xp=torch)


@torch.no_grad()
def rate(model: torch.nn.Module, H: torch.Tensor, p_max: float) -> float:
    model.eval()
    return float(torch.cat([sum_rate(h, model(h, p_max), 1.0, xp=torch) for h in torch.split(H, 4000)]).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--site", default="urban-nlos")
    ap.add_argument("--c-out", type=int, default=16)
    ap.add_argument("--d-fcl", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--one-cycle", action="store_true", help="OneCycle lr schedule peaking at --lr")
    ap.add_argument("--fixed", action="store_true", help="batches from the fixed training split")
    ap.add_argument("--features", choices=("global", "sample", "user"), default="global")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    ds = load_dataset(get_site(args.site))
    H_train, H_val = unit_noise_channels(ds, "train").to(device), unit_noise_channels(ds, "val").to(device)
    combos = training_combinations(ds)
    pool = combos.channels.to(device)
    torch.manual_seed(args.seed)
    arch = PrecoderArch(c_out=args.c_out, d_fcl=args.d_fcl, n_t=ds.site.n_antennas, n_u=ds.site.n_users)
    model = Net(arch, args.features, input_scale(H_train)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps) if args.one_cycle else None
    started, history = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        model.train()
        if args.fixed:
            H = H_train[torch.randint(0, len(H_train), (args.batch,), device=device)]
        else:
            users = torch.argsort(torch.rand(args.batch, len(pool), device=device), 1)[:, : combos.n_users]
            H = pool[users]
        loss = -sum_rate(H, model(H, ds.p_max), 1.0, xp=torch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        if step % max(1, args.steps // 5) == 0:
            history.append((step, round(rate(model, H_train[:2000], ds.p_max), 2), round(rate(model, H_val, ds.p_max), 2)))
            print(f"step {step:6d}  train {history[-1][1]:6.2f}  val {history[-1][2]:6.2f} bit/s/Hz", flush=True)
    print(json.dumps({**vars(args), "device": device, "history": history,
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
