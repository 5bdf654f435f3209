r"""Self-supervised training of precoder networks (precoder-compression paper, section III-C).

The network maps a channel to a precoder and is trained to maximize the sum rate itself, with no labels:

.. math::

    \mathcal{L}(\theta) = -\frac{1}{B} \sum_{b} R\big(W_\theta(H_b)\big)        \qquad (6)

with :math:`R` the sum rate of eq. 3 (``edgejoule.tasks.precoding.sum_rate`` on torch tensors, the very formula
used for evaluation). Adam at a fixed learning rate of 1e-3 and batches of 1000 as in the paper; early
stopping on the validation split's sum rate keeps the best weights. Channels are normalized to unit noise
(:math:`H/\sigma`, which leaves every SINR unchanged), and the network sees them scaled by a per-site
constant (the inverse RMS of the training channels) stored in the model, so that inputs are O(1).

Training samples are fresh each epoch (:class:`Combinations`). A site is a set of user positions and a sample
is N_U distinct positions of it (``edgejoule.sites.dataset``); the splits share positions and differ in the
combination, as in the paper's 252-position dataset. A fixed training set of a few thousand combinations is
memorized: a 16x512 network reached 10.6 bit/s/Hz on its training samples and 6.3 on the validation split of
urban-nlos. Drawing new combinations of the training positions every epoch removes that gap (train and
validation within 2 %) and lifts the validation sum rate above ZF (``docs/COMPRESSION.md``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from edgejoule.sites.dataset import ChannelDataset, Split
from edgejoule.tasks.precoding import sum_rate

Progress = Callable[[int], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 1000
    lr: float = 1e-3
    patience: int = 8
    max_steps: int | None = None  # a hard cap on optimizer steps (budgets for QAT fine-tuning)
    seed: int = 0
    # validate after each epoch and keep the best weights (early stopping); False: no validation pass, the
    # last weights stay (a fine-tuning of a fixed number of steps inside one epoch has nothing to select)
    select_best: bool = True


@dataclass
class TrainResult:
    best_val_sum_rate: float
    epochs_run: int
    steps: int
    history: list[float] = field(default_factory=list)


def unit_noise_channels(ds: ChannelDataset, split: Split, limit: int | None = None) -> torch.Tensor:
    """H / sigma as a complex64 tensor: noise power 1, every SINR unchanged."""
    return torch.from_numpy(ds.H(split, limit) / np.float32(math.sqrt(ds.noise_power)))


@dataclass(frozen=True)
class Combinations:
    """A training set that is drawn anew each epoch: ``size`` samples of ``n_users`` distinct positions out of
    ``channels`` (unit-noise, ``[P, N_T]``), the positions the training split uses."""

    channels: torch.Tensor
    n_users: int
    size: int

    def __post_init__(self) -> None:
        if len(self.channels) < self.n_users:
            raise ValueError(f"{len(self.channels)} positions cannot give {self.n_users} distinct users per sample")

    def epoch(self, generator: torch.Generator) -> torch.Tensor:
        """``[size, N_U, N_T]``: each row N_U distinct positions, uniformly. Rows with a repeated position are
        drawn again (rejection keeps the draw uniform; with thousands of positions few rows repeat), which is
        ~100x cheaper than sampling without replacement over all positions and runs once per QAT candidate."""
        users = torch.randint(len(self.channels), (self.size, self.n_users), generator=generator)
        while True:
            ordered = users.sort(1).values
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1).nonzero().flatten()
            if not len(repeated):
                return self.channels[users]
            users[repeated] = torch.randint(len(self.channels), (len(repeated), self.n_users), generator=generator)


def training_combinations(ds: ChannelDataset, size: int | None = None) -> Combinations:
    """Fresh combinations of the training split's positions, as many per epoch as the split has samples."""
    users = ds.users[ds.splits["train"]]
    channels = ds.channels[np.unique(users)] / np.float32(math.sqrt(ds.noise_power))
    return Combinations(torch.from_numpy(channels), users.shape[1], size or len(users))


def input_scale(H_train: torch.Tensor | Combinations) -> float:
    """The inverse RMS of the training channels' entries: the network's inputs are then O(1)."""
    H = H_train.channels if isinstance(H_train, Combinations) else H_train
    return float(1.0 / torch.sqrt(torch.mean(torch.abs(H) ** 2)))


@torch.no_grad()
def evaluate(model: torch.nn.Module, H: torch.Tensor, p_max: float, batch: int = 2000) -> np.ndarray:
    """Sum rate per sample (bit/s/Hz) of ``model`` on unit-noise channels ``H``."""
    model.eval()
    rates = [sum_rate(h, model(h, p_max), 1.0, xp=torch) for h in torch.split(H, batch)]
    return torch.cat(rates).double().numpy()


def train(
    model: torch.nn.Module,
    H_train: torch.Tensor | Combinations,
    H_val: torch.Tensor,
    p_max: float,
    config: TrainConfig = TrainConfig(),
    params: list[torch.nn.Parameter] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Maximize the sum rate (eq. 6); leaves ``model`` with its best validation weights (its last ones, with no
    validation, unless ``config.select_best``). ``H_train`` is a fixed set of samples or :class:`Combinations`
    drawn anew each epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    # fused: one kernel for all of Adam's element-wise updates; the per-tensor loop costs ~85 ms per step on
    # the 10M weights of the largest template (C_out 64, D_FCL 1024), the fused one ~10 ms (docs/BENCHMARKS.md)
    optimizer = torch.optim.Adam(params if params is not None else model.parameters(), lr=config.lr, fused=True)
    best, best_state, stale, steps = -math.inf, None, 0, 0
    history: list[float] = []
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        samples = H_train.epoch(generator) if isinstance(H_train, Combinations) else H_train
        for idx in torch.randperm(len(samples), generator=generator).split(config.batch_size):
            H = samples[idx]
            loss = -sum_rate(H, model(H, p_max), 1.0, xp=torch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if config.max_steps is not None and steps >= config.max_steps:
                break
        reached = config.max_steps is not None and steps >= config.max_steps
        if config.select_best:
            val = float(evaluate(model, H_val, p_max).mean())
            history.append(val)
            if val > best:
                best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        if progress:
            progress(1)
        if reached or stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(best_val_sum_rate=best, epochs_run=epoch, steps=steps, history=history)
