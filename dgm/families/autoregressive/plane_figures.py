"""Figures of the autoregressive page on 2D data: the learned density p(x_a) p(x_b | x_a) beside the target,
samples, and the conditionals p(x_b | x_a) as slices at a few values of x_a, beside the target's.

``plane`` and ``slices`` take what the figures need from a trainer without changing it; the builders are
pure (data in, plotly figure out).
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.core.metrics import Grid
from dgm.families.autoregressive.trainer import ARTrainer

LOG_RANGE = 10.0  # log-density heatmaps show [max - LOG_RANGE, max]
SLICE_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)  # slices at these quantiles of the test data's x_a
SLICE_COLORS = [viz.PALETTE[i] for i in (0, 4, 2, 3, 1)]
NAMES = ("x₁", "x₂")


def _cpu_grid(g: Grid) -> Grid:
    return Grid(g.box, g.resolution, g.points.cpu(), g.xs.cpu(), g.ys.cpu(), g.cell_area)


@torch.no_grad()
def plane(trainer: ARTrainer, resolution: int = 120, n: int = 1000) -> dict[str, Any]:
    """The model's log density on a grid over the data's box, the target's where it is exact, samples."""
    m, dist = trainer.model, trainer.dist
    grid = Grid.over(dist.box, resolution, device=trainer.device)
    log_q = m.grid_log_prob(grid.xs, grid.ys).reshape(-1)
    log_p = dist.log_prob(grid.points) if dist.has_density else None
    return {"grid": _cpu_grid(grid), "log_q": log_q.cpu(), "log_p": None if log_p is None else log_p.cpu(),
            "samples": m.sample(n, trainer.eval_generator(7)).cpu().numpy(), "data": trainer.test_x[:n].cpu().numpy(),
            "a": m.a, "box": dist.box, "name": dist.name, "slices": slice_values(trainer).numpy()}


def slice_values(trainer: ARTrainer) -> torch.Tensor:
    """Where the slices are: the SLICE_QUANTILES of the test data's first coordinate (CPU)."""
    xa = trainer.test_x[:, trainer.model.a].double().cpu()
    return torch.quantile(xa, torch.tensor(SLICE_QUANTILES, dtype=torch.float64)).float()


@torch.no_grad()
def slices(trainer: ARTrainer, resolution: int = 300) -> dict[str, Any]:
    """p(x_a), and p(x_b | x_a = v) at the SLICE_QUANTILES of the test data's x_a: the model's (exact) and,
    where the target's density is known, the target's (normalised by quadrature along x_b)."""
    m, dist = trainer.model, trainer.dist
    a, b = m.a, m.b
    box = dist.box
    lo_a, hi_a, lo_b, hi_b = box[2 * a], box[2 * a + 1], box[2 * b], box[2 * b + 1]
    va = slice_values(trainer)
    ua = torch.linspace(lo_a, hi_a, resolution)
    vb = torch.linspace(lo_b, hi_b, resolution)
    dev = trainer.device
    q_cond = m.log_prob_cond(vb.repeat(len(va)).to(dev), va.repeat_interleave(resolution).to(dev)).exp()
    out = {"a": a, "va": va.numpy(), "ua": ua.numpy(), "vb": vb.numpy(), "name": dist.name,
           "q_first": m.log_prob_first(ua.to(dev)).exp().cpu().numpy(),
           "q_cond": q_cond.view(len(va), resolution).cpu().numpy(), "p_first": None, "p_cond": None}
    if dist.has_density:
        def joint(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:  # p at (x_a, x_b) pairs, (N,) each
            pts = torch.stack([xa, xb], 1) if a == 0 else torch.stack([xb, xa], 1)
            return dist.log_prob(pts.to(dev)).double().exp().cpu()

        db = float(vb[1] - vb[0])
        pc = joint(va.repeat_interleave(resolution), vb.repeat(len(va))).view(len(va), resolution)
        out["p_cond"] = (pc / (pc.sum(1, keepdim=True) * db).clamp(min=1e-300)).numpy()
        out["p_first"] = (joint(ua.repeat_interleave(resolution), vb.repeat(resolution))
                          .view(resolution, resolution).sum(1) * db).numpy()
    return out


def density(grid: Grid, log_density: torch.Tensor, box, title: str, lines: dict | None = None,
            height: int = 360) -> go.Figure:
    """A log density as a heatmap over ``box``; ``lines``: {"a": axis, "v": values} marks the slices."""
    fig = viz.plane(box, title=title, height=height)
    ld = torch.nan_to_num(log_density.double(), nan=-math.inf)
    top = float(ld[torch.isfinite(ld)].max()) if torch.isfinite(ld).any() else 0.0
    viz.add_heatmap(fig, grid, ld.clamp(min=top - LOG_RANGE), colorscale="Viridis", zmin=top - LOG_RANGE, zmax=top,
                    showscale=True, colorbar_title="log")
    if lines is not None:
        xmin, xmax, ymin, ymax = box
        for v, color in zip(lines["v"], SLICE_COLORS):
            xs, ys = ([v, v], [ymin, ymax]) if lines["a"] == 0 else ([xmin, xmax], [v, v])
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1.5, dash="dash"),
                                     showlegend=False, hoverinfo="skip"))
    return fig


def target(s: dict[str, Any], height: int = 360) -> go.Figure:
    if s["log_p"] is not None:
        return density(s["grid"], s["log_p"], s["box"], f"target {s['name']}: log p", height=height)
    fig = viz.plane(s["box"], title=f"target {s['name']}: samples (no exact density)", height=height)
    viz.add_points(fig, s["data"], name="test data", color=viz.DATA_COLOR, size=3, opacity=0.5)
    return fig


def learned(s: dict[str, Any], height: int = 360) -> go.Figure:
    """The model's log density, the slices of ``conditionals`` marked."""
    a, b = NAMES[s["a"]], NAMES[1 - s["a"]]
    lines = {"a": s["a"], "v": s["slices"]}
    return density(s["grid"], s["log_q"], s["box"], f"model: log p({a}) + log p({b} | {a}), exact", lines, height)


def samples(s: dict[str, Any], height: int = 360) -> go.Figure:
    """Samples (x_a first, then x_b given it) over the target's log-density contours where known."""
    fig = viz.plane(s["box"], title="samples: x_a, then x_b given x_a", height=height)
    if s["log_p"] is not None:
        lp = torch.nan_to_num(s["log_p"].double(), nan=-math.inf, neginf=-1e3)
        viz.add_contours(fig, s["grid"], lp.clamp(min=float(lp.max()) - 8), color="#9ecae1", n=6, name="log p")
    viz.add_points(fig, s["samples"], name="samples of the model", color=viz.PALETTE[0], size=3, opacity=0.5)
    return fig


def conditionals(sl: dict[str, Any], height: int = 360) -> go.Figure:
    """p(x_b | x_a = v) at the slices, model (solid) and target (dashed), and the first factor p(x_a)."""
    a, b = NAMES[sl["a"]], NAMES[1 - sl["a"]]
    fig = go.Figure()
    for i, (v, color) in enumerate(zip(sl["va"], SLICE_COLORS)):
        fig.add_trace(go.Scatter(x=sl["vb"], y=sl["q_cond"][i], mode="lines", line=dict(color=color, width=2),
                                 name=f"{a} = {v:.2f}", legendgroup=str(i)))
        if sl["p_cond"] is not None:
            fig.add_trace(go.Scatter(x=sl["vb"], y=sl["p_cond"][i], mode="lines", showlegend=False,
                                     line=dict(color=color, width=1.2, dash="dash"), legendgroup=str(i)))
    lay = viz.layout(f"Slices p({b} | {a}): model solid, target dashed", height,
                     xaxis=dict(title=b, domain=[0, 0.62]), yaxis=dict(title="density", rangemode="tozero"),
                     xaxis2=dict(title=a, domain=[0.72, 1], anchor="y2"),
                     yaxis2=dict(anchor="x2", rangemode="tozero", title=f"p({a})"))
    lay["legend"] = dict(orientation="h", y=-0.25, x=0, font=dict(size=11))
    fig.update_layout(lay)
    fig.add_trace(go.Scatter(x=sl["ua"], y=sl["q_first"], mode="lines", xaxis="x2", yaxis="y2", name=f"model p({a})",
                             line=dict(color="#333", width=2)))
    if sl["p_first"] is not None:
        fig.add_trace(go.Scatter(x=sl["ua"], y=sl["p_first"], mode="lines", xaxis="x2", yaxis="y2",
                                 name=f"target p({a})", line=dict(color="#333", width=1.2, dash="dash")))
    return fig
