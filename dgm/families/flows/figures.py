"""Figures for the normalizing-flows page: densities, samples, the flow layer by layer, curves.

``snapshot``, ``trajectories`` and ``layer_log_det`` take what the figures need from a trainer (without
changing it); the builders are pure (data in, plotly figure out); ``figures(trainer)`` gathers the
page's main ones for the CLI's --png and the screenshot tests.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.core.metrics import Grid
from dgm.families.flows.trainer import FlowTrainer

DENSITY_SCALE = "Viridis"
LOG_RANGE = 10.0  # log-density heatmaps show [max - LOG_RANGE, max]
MAX_PANELS = 9


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def density(grid: Grid, log_density: torch.Tensor, box, title: str, *, log: bool = True,
            height: int = 340) -> go.Figure:
    """A log density (or, with ``log=False``, the density) as a heatmap over ``box``."""
    fig = viz.plane(box, title=title, height=height)
    ld = torch.nan_to_num(log_density.double(), nan=-math.inf)
    top = float(ld[torch.isfinite(ld)].max()) if torch.isfinite(ld).any() else 0.0
    if log:
        vals = ld.clamp(min=top - LOG_RANGE)
        viz.add_heatmap(fig, grid, vals, colorscale=DENSITY_SCALE, zmin=top - LOG_RANGE, zmax=top,
                        showscale=True, colorbar_title="log")
    else:
        viz.add_heatmap(fig, grid, (ld - top).exp(), colorscale=DENSITY_SCALE, zmin=0, zmax=1)
    return fig


def data_points(points, box, title: str, height: int = 340) -> go.Figure:
    """The target when only samples of it are known."""
    fig = viz.plane(box, title=title, height=height)
    viz.add_points(fig, points, name="samples of p", color=viz.DATA_COLOR, size=3, opacity=0.5)
    return fig


def samples(x, box, title: str, *, grid: Grid | None = None, log_p=None, height: int = 340) -> go.Figure:
    """Samples of q, over contours of the target's log density where it is known."""
    fig = viz.plane(box, title=title, height=height)
    if grid is not None and log_p is not None:
        lp = torch.nan_to_num(log_p.double(), nan=-math.inf, neginf=-1e3)
        top = float(lp.max())
        viz.add_contours(fig, grid, lp.clamp(min=top - 8), color="#9ecae1", n=6, name="log p")
    viz.add_points(fig, x, name="x ~ q", color=viz.PALETTE[0], size=3, opacity=0.5)
    return viz.follow(fig, box, x)


def _bounds(pts: np.ndarray, square: bool = False) -> tuple[float, float, float, float]:
    """A view around the bulk of the points (robust to a few outliers); each axis fitted on its own
    unless ``square``: intermediate layers often stretch one axis far more than the other."""
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        return (-3.0, 3.0, -3.0, 3.0)
    lo, hi = np.quantile(pts, 0.02, axis=0), np.quantile(pts, 0.98, axis=0)
    c = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2 * 1.3, 0.25)
    if square:
        half[:] = half.max()
    return (c[0] - half[0], c[0] + half[0], c[1] - half[1], c[1] + half[1])


def _line_xy(lines: np.ndarray, n_lines: int, pts: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid lines (n_lines * pts, 2) -> x, y arrays with NaN breaks between the lines."""
    v = lines.reshape(n_lines, pts, 2)
    v = np.concatenate([v, np.full((n_lines, 1, 2), np.nan)], 1).reshape(-1, 2)
    return v[:, 0], v[:, 1]


def _angle_colors(z0: np.ndarray) -> np.ndarray:
    return np.arctan2(z0[:, 1], z0[:, 0])


def panel_indices(n_layers: int, max_panels: int = MAX_PANELS, picked: int | None = None) -> list[int]:
    """Which stages (0 = base, k = after layer k) get a panel: all, or evenly spaced incl. both ends, the
    ``picked`` layer (the one inspected below the row) always among them, in place of the nearest inner one."""
    if n_layers + 1 <= max_panels:
        return list(range(n_layers + 1))
    idx = sorted({round(v) for v in np.linspace(0, n_layers, max_panels)})
    if picked is not None and 0 < picked < n_layers and picked not in idx:
        nearest = min((i for i in idx if 0 < i < n_layers), key=lambda i: (abs(i - picked), i))
        idx = sorted(set(idx) - {nearest} | {picked})
    return idx


def layers_row(traj, lines, n_lines: int, line_pts: int, *, height: int | None = None,
               picked: int | None = None) -> go.Figure:
    """The base Gaussian and the distribution after each layer, as a row of small panels.
    Points are coloured by their angle in the base space, so one can follow where each region goes;
    the grey lines are a square grid in the base space pushed through the same layers.
    (The layout is written as one dict: plotly's per-subplot updates are slow for a live page.)"""
    k = len(traj) - 1
    idx = panel_indices(k, picked=picked)
    n = len(idx)
    height = height or int(min(max(1250 / n + 36, 170), 300))  # square panels across a wide page
    gap = 0.012
    width = (1 - gap * (n - 1)) / n
    col = _angle_colors(_np(traj[0]))
    data, layout = [], {}
    annotations = []
    for j, i in enumerate(idx):
        ax = "" if j == 0 else str(j + 1)
        pts, ln = _np(traj[i]), _np(lines[i])
        lx, ly = _line_xy(ln, n_lines, line_pts)
        data.append(go.Scatter(x=lx, y=ly, mode="lines", line={"color": "#b0b0b0", "width": 0.8}, hoverinfo="skip",
                               showlegend=False, xaxis=f"x{ax}", yaxis=f"y{ax}"))
        data.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                               xaxis=f"x{ax}", yaxis=f"y{ax}",
                               marker={"size": 2.5, "color": col, "colorscale": "Phase", "cmin": -math.pi, "cmax": math.pi,
                                           "line": {"width": 0}}))
        xmin, xmax, ymin, ymax = _bounds(pts)
        edge, lw = ("#d62728", 2) if picked == i else ("#888", 1)
        x0 = j * (width + gap)
        common = {"showticklabels": False, "showgrid": False, "zeroline": False, "mirror": True, "showline": True,
                      "linecolor": edge, "linewidth": lw}
        layout[f"xaxis{ax}"] = dict(domain=[x0, x0 + width], range=[xmin, xmax], anchor=f"y{ax}",
                                    constrain="domain", **common)
        layout[f"yaxis{ax}"] = dict(domain=[0, 1], range=[ymin, ymax], anchor=f"x{ax}", **common)
        title = "base z₀" if i == 0 else (f"after layer {i}" if i < k else f"x (layer {i})")
        annotations.append({"text": title, "x": x0 + width / 2, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center",
                                "yanchor": "bottom", "showarrow": False, "font": {"size": 11,
                                                                             "color": edge if picked == i else "#333"}})
    layout.update(height=height, margin={"l": 5, "r": 5, "t": 28, "b": 5}, template={}, paper_bgcolor="white", plot_bgcolor="white", font=viz.FONT,
                  annotations=annotations, showlegend=False)
    return go.Figure(data=data, layout=layout)


def stage(points, lines, n_lines: int, line_pts: int, title: str, *, color0=None, height: int = 330,
          box=None) -> go.Figure:
    """One stage of the flow, larger: points (coloured by base angle) and the pushed grid lines."""
    pts = _np(points)
    box = box or _bounds(pts)
    fig = viz.plane(box, title=title, height=height)
    fig.update_yaxes(scaleanchor=None)  # each axis fitted to the points (see _bounds)
    lx, ly = _line_xy(_np(lines), n_lines, line_pts)
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line={"color": "#999", "width": 0.8}, hoverinfo="skip",
                             showlegend=False))
    fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                             marker={"size": 3, "color": _angle_colors(_np(color0)) if color0 is not None else "#333",
                                         "colorscale": "Phase", "cmin": -math.pi, "cmax": math.pi, "line": {"width": 0}}))
    return fig


def log_det(info: dict, lines=None, n_lines: int = 0, line_pts: int = 0, *, height: int = 330) -> go.Figure:
    """log|det J| of one layer over its input space (red: it stretches, blue: it squeezes)."""
    grid, ld = info["grid"], info["log_det"]
    fig = viz.plane(grid.box, title=f"log|det J| of layer {info['k']} over its input", height=height)
    fig.update_yaxes(scaleanchor=None)
    ldf = torch.nan_to_num(ld.double(), nan=0.0, posinf=0.0, neginf=0.0)
    m = max(float(ldf.abs().max()), 1e-3)
    viz.add_heatmap(fig, grid, ldf, colorscale="RdBu_r", zmin=-m, zmax=m, showscale=True, colorbar_title="log|det|")
    if lines is not None:
        lx, ly = _line_xy(_np(lines), n_lines, line_pts)
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line={"color": "rgba(0,0,0,0.35)", "width": 0.7},
                                 hoverinfo="skip", showlegend=False))
    z = _np(info["z_in"])
    fig.add_trace(go.Scatter(x=z[:, 0], y=z[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                             marker={"size": 2, "color": "rgba(0,0,0,0.5)", "line": {"width": 0}}))
    return fig


def nll_curves(rows, entropy: float | None, reverse: bool = False, schedule: str | None = None) -> go.Figure:
    keys = ["train_nll", "nll"] + (["loss"] if reverse else [])
    labels = {"train_nll": "training NLL (batch, every step)", "nll": "held-out NLL", "loss": "loss: KL(q||p) − log Z"}
    hl = {f"true entropy {entropy:.3f}": entropy} if entropy is not None else None
    x_title = viz.evaluated(schedule, "held-out NLL")
    fig = viz.curves(rows, keys, title="NLL in nats (lower is better)", labels=labels, hlines=hl, x_title=x_title)
    if entropy is not None and not reverse:  # keep the floor and the recent values in view, whatever the start
        vals = [r[k] for r in rows for k in keys if k in r and r[k] is not None and math.isfinite(r[k])]
        if vals:
            recent = vals[len(vals) // 4:] or vals
            lo = min(min(recent), entropy) - 0.2
            hi = max(max(recent), entropy + 0.5)
            fig.update_yaxes(range=[lo, min(hi, lo + 6)])
    return fig


def kl_curves(rows, resolution: int, schedule: str | None = None) -> go.Figure:
    labels = {"forward_kl": "KL(p||q) (forward)", "reverse_kl": "KL(q||p) (reverse)"}
    fig = viz.curves(rows, ["forward_kl", "reverse_kl"], title=f"KL on a {resolution}×{resolution} grid (nats)",
                     labels=labels, log_y=True, colors={"forward_kl": viz.PALETTE[1], "reverse_kl": viz.PALETTE[0]},
                     x_title=viz.evaluated(schedule))
    if fig.data:  # with no curve yet, a log axis over its default range only shows a clutter of labels
        fig.update_yaxes(dtick="D2")
    return fig


# ---- from a trainer -------------------------------------------------------------------------------

@torch.no_grad()
def snapshot(trainer: FlowTrainer, n: int = 1000, res: int = 100, layers: bool = True) -> dict:
    """Samples, log q and log p on a grid and, with ``layers``, the trajectories (see ``trajectories``)."""
    m = trainer.model
    x, _ = m.sample_with_log_prob(n, trainer.eval_generator(2))
    grid = Grid.over(trainer.data.box, res, device=trainer.device)
    log_q = m.log_prob(grid.points, chunk=8192)
    log_p = trainer.target_log_prob(grid.points) if trainer.exact else None
    out = {"samples": x.cpu(), "grid": _cpu_grid(grid), "log_q": log_q.cpu(),
           "log_p": None if log_p is None else log_p.cpu(), "data": trainer.heldout[:n].cpu()}
    return (out | trajectories(trainer)) if layers else out

@torch.no_grad()
def trajectories(trainer: FlowTrainer, n_traj: int = 500, lines: int = 9) -> dict:
    """Base points and a square grid of lines in the base space, pushed through every layer."""
    m = trainer.model
    z0 = torch.randn(n_traj, 2, generator=trainer.eval_generator(3), device=trainer.device)
    lim, pts = 2.5, 60
    t = torch.linspace(-lim, lim, pts, device=trainer.device)
    levels = torch.linspace(-lim, lim, lines, device=trainer.device)
    hor = torch.stack([t.repeat(lines), levels.repeat_interleave(pts)], 1)  # (lines*pts, 2)
    ver = hor.flip(1)
    traj = m.trajectory(z0)
    line_traj = m.trajectory(torch.cat([hor, ver]))
    return {"traj": [v.cpu() for v in traj], "lines": [v.cpu() for v in line_traj], "line_pts": pts,
            "n_lines": 2 * lines}

@torch.no_grad()
def layer_log_det(trainer: FlowTrainer, k: int, res: int = 60) -> dict:
    """log|det J| of layer k (1-based, generative direction) over a box around its input points."""
    m = trainer.model
    z0 = torch.randn(2000, 2, generator=trainer.eval_generator(3), device=trainer.device)
    traj = m.trajectory(z0)
    zin = traj[k - 1]
    finite = zin[torch.isfinite(zin).all(1)]
    lo, hi = torch.quantile(finite, 0.02, dim=0), torch.quantile(finite, 0.98, dim=0)
    pad = 0.25 * (hi - lo) + 0.2
    box = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    grid = Grid.over(box, res, device=trainer.device)
    _, ld = m.layers[k - 1].inverse(grid.points)
    return {"grid": _cpu_grid(grid), "log_det": ld.cpu(), "z_in": zin[:600].cpu(), "k": k}


def _cpu_grid(g: Grid) -> Grid:
    return Grid(g.box, g.resolution, g.points.cpu(), g.xs.cpu(), g.ys.cpu(), g.cell_area)


def figures(trainer: FlowTrainer, layer: int | None = None, log: bool = True) -> viz.Figures:
    """The page's main figures for ``trainer``, each built when first used."""
    s = snapshot(trainer, layers=False)
    box, name = trainer.data.box, trainer.data.name
    k = len(trainer.model.layers)
    layer = k if layer is None else max(1, min(int(layer), k))
    t: dict = {}

    def traj() -> dict:  # the layer-by-layer trajectories, computed once if any figure needs them
        if not t:
            t.update(trajectories(trainer))
        return t

    b: dict = {}
    if s["log_p"] is not None:
        kind = "log p (unnormalised)" if name in ("U1", "U2", "U3", "U4") else "log p"
        b["target"] = lambda: density(s["grid"], s["log_p"], box, f"target {name}: {kind}", log=log)
    else:
        b["target"] = lambda: data_points(s["data"], box, f"target {name}: samples (no exact density)")
    b["density"] = lambda: density(s["grid"], s["log_q"], box, "flow: log q(x)" if log else "flow: q(x)", log=log)
    b["samples"] = lambda: samples(s["samples"], box, "samples x ~ q", grid=s["grid"], log_p=s["log_p"])
    b["layers"] = lambda: layers_row(traj()["traj"], traj()["lines"], traj()["n_lines"], traj()["line_pts"],
                                     picked=layer)
    b["logdet"] = lambda: log_det(layer_log_det(trainer, layer), traj()["lines"][layer - 1], traj()["n_lines"],
                                  traj()["line_pts"])
    b["stage"] = lambda: stage(traj()["traj"][layer], traj()["lines"][layer], traj()["n_lines"], traj()["line_pts"],
                               f"after layer {layer}", color0=traj()["traj"][0])
    rows = trainer.history.merged()
    every = trainer.eval_schedule()
    b["nll"] = lambda: nll_curves(rows, trainer.entropy, reverse=trainer.config.objective == "reverse_kl", schedule=every)
    if trainer.log_p_grid is not None:
        b["kl"] = lambda: kl_curves(rows, trainer.GRID_RES, every)
    if any("w1" in r for r in rows):
        b["w1"] = lambda: w1_curves(rows, schedule=every)
    return viz.Figures(b)


def w1_curves(rows, height: int = 300, schedule: str | None = None):
    """W1 between the flow's samples and held-out points (exact optimal transport on 1,000 + 1,000), with the
    value that true samples of p get (the floor of this estimate)."""
    last = next((r for r in reversed(rows) if "w1_floor" in r), {})
    hl = {"true samples of p": last["w1_floor"]} if last else None
    return viz.curves(rows, ["w1"], title="W1(p, q) by exact OT (1,000 points)", labels={"w1": "W1"},
                      hlines=hl, height=height, x_title=viz.evaluated(schedule))
