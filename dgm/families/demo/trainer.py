"""The demo's config and trainer: a Gaussian fitted to samples of a 2D data set by Adam or SGD."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import dgm.core.data
from dgm.core.config import knob
from dgm.core.metrics import EVAL_SAMPLES
from dgm.core.train import Trainer
from dgm.families.demo.model import GaussianFit


@dataclass
class DemoConfig:
    data: str = knob("bimodal", "the 2D data set to fit", choices=(*dgm.core.data.names("sampled"), "custom"),
                     group="Data")
    optimizer: str = knob("adam", "optimiser", choices=("adam", "sgd"), group="Training")
    lr: float = knob(0.05, "learning rate", lo=1e-4, hi=100.0, log=True, group="Training")
    batch: int = knob(256, "samples per step", lo=8, hi=4096, step=8, group="Training")


class DemoTrainer(Trainer):
    eval_every = 100

    def build(self):
        c = self.config
        self.data = dgm.core.data.get(c.data)
        self.model = GaussianFit().to(self.device)
        opt = torch.optim.Adam if c.optimizer == "adam" else torch.optim.SGD
        self.opt = opt(self.model.parameters(), lr=c.lr)
        self.heldout = self.data.sample(EVAL_SAMPLES, self.eval_generator(), device=self.device)  # (N, 2)

    def train_step(self):
        x = self.data.sample(self.config.batch, self.gen)  # (B, 2)
        loss = -self.model.dist().log_prob(x).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"nll": loss}

    def evaluate(self):
        return {"heldout_nll": float(-self.model.dist().log_prob(self.heldout).mean())}
