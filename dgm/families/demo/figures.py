"""The demo's figures: the fitted Gaussian's 1- and 2-sd ellipses over p, and the NLL curves."""

from __future__ import annotations

import functools

import torch

import dgm.core.data
from dgm.core import viz
from dgm.core.metrics import Grid
from dgm.families.demo.trainer import DemoTrainer


@functools.lru_cache(maxsize=32)
def _density_image(name: str) -> tuple[Grid, torch.Tensor]:
    """p on a 150 x 150 grid: fixed for a data set, so computed once, not every frame."""
    p = dgm.core.data.get(name)
    grid = Grid.over(p.box, 150)
    return grid, p.log_prob(grid.points).exp()


@torch.no_grad()
def snapshot(trainer: DemoTrainer) -> dict:
    return {"mean": trainer.model.mean.detach().cpu(), "cov": trainer.model.cov().detach().cpu(),
            "data": trainer.heldout[:1000].cpu()}


def figures(trainer: DemoTrainer) -> viz.Figures:
    s = snapshot(trainer)
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
