"""The demonstration trainer: a full-covariance Gaussian fitted by maximum likelihood to samples.

It is small on purpose: it exercises the trainer contract, the live loop and the CLI end to end,
and its answer is known in closed form (the sample mean and covariance of the data).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

import dgm.data
from dgm import viz
from dgm.config import knob
from dgm.experiments import Experiment
from dgm.metrics import EVAL_SAMPLES, Grid
from dgm.train import Trainer


@dataclass
class DemoConfig:
    data: str = knob("bimodal", "the 2D data set to fit", choices=(*dgm.data.names("sampled"), "custom"),
                     group="Data")
    optimizer: str = knob("adam", "optimiser", choices=("adam", "sgd"), group="Training")
    lr: float = knob(0.05, "learning rate", lo=1e-4, hi=100.0, log=True, group="Training")
    batch: int = knob(256, "samples per step", lo=8, hi=4096, step=8, group="Training")


class GaussianFit(nn.Module):
    """q(x) = N(mean, L L^T), with L lower triangular and a positive (exp) diagonal."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(2))
        self.log_diag = nn.Parameter(torch.zeros(2))
        self.off = nn.Parameter(torch.zeros(1))

    def scale_tril(self) -> torch.Tensor:
        d = self.log_diag.exp()
        zero = torch.zeros_like(self.off)
        return torch.stack([torch.cat([d[:1], zero]), torch.cat([self.off, d[1:]])])  # (2, 2)

    def dist(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril(), validate_args=False)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, 2, generator=generator, device=self.mean.device)  # (n, 2)
        return self.mean + eps @ self.scale_tril().T

    def cov(self) -> torch.Tensor:
        L = self.scale_tril()
        return L @ L.T


class DemoTrainer(Trainer):
    eval_every = 100

    def build(self):
        c = self.config
        self.data = dgm.data.get(c.data)
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

    @torch.no_grad()
    def snapshot(self):
        return {"mean": self.model.mean.detach().cpu(), "cov": self.model.cov().detach().cpu(),
                "data": self.heldout[:1000].cpu()}


@functools.lru_cache(maxsize=32)
def _density_image(name: str) -> tuple[Grid, torch.Tensor]:
    """p on a 150 x 150 grid: fixed for a data set, so computed once, not every frame."""
    p = dgm.data.get(name)
    grid = Grid.over(p.box, 150)
    return grid, p.log_prob(grid.points).exp()


def figures(trainer: DemoTrainer) -> viz.Figures:
    s = trainer.snapshot()
    rows = trainer.history.merged()

    def fit():
        fig = viz.plane(trainer.data.box, title=f"q fitted to {trainer.data.name}")
        if trainer.data.has_density:
            grid, density = _density_image(trainer.data.name)
            viz.add_heatmap(fig, grid, density)
        viz.add_points(fig, s["data"], name="data", color=viz.DATA_COLOR, size=2, opacity=0.4)
        viz.add_ellipses(fig, s["mean"], s["cov"], color=viz.PALETTE[0], name="q (1 and 2 sd)")
        return fig

    return viz.Figures({"fit": fit, "loss": lambda: viz.curves(rows, ["nll", "heldout_nll"], title="NLL (nats)")})


EXPERIMENT = Experiment(
    name="demo",
    help="fit a Gaussian to 2D data by maximum likelihood (the live-loop demonstration)",
    config=DemoConfig,
    trainer=DemoTrainer,
    figures=figures,
    samples=lambda t, n: t.model.sample(n, t.eval_generator()).detach().cpu().numpy(),
)
