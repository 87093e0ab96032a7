"""Figures of the diffusion page: the learned field against the exact one at a time t, the error between
them, the forward process, reverse trajectories, samples, and curves; for the digits, image grids.

``field_snapshot`` (cheap: two network calls on grids, drawn every frame) and ``sample_snapshot`` (a sampling
run) take what the figures need from a trainer without changing it; the builders are pure; ``figures``
gathers the page's figures for the CLI's --png, exports and the screenshot tests.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

import dgm.core.data
from dgm.core import viz
from dgm.core.metrics import Grid
from dgm.families.diffusion.exact import NoisedMixture
from dgm.families.diffusion.trainer import DiffusionTrainer

ARROWS = 21  # arrows per side of the field plots
HEAT = 64  # cells per side of the density and error heatmaps
LEARNED, EXACT, SAMPLE = "#08519c", "#2ca02c", "#e6550d"
FIELDS = ("score", "velocity")


def _np(x) -> np.ndarray:
    return viz._np(x)


def as_field(kind: str, schedule, t: float, x, eps, x0):
    """What the arrows show: the score -eps / sigma, or the probability-flow velocity alpha' x0 + sigma' eps."""
    a, s = schedule.at(t)
    if kind == "score":
        return -eps / s
    tt = torch.tensor(t, dtype=torch.float64)
    return float(schedule.dalpha(tt)) * x0 + float(schedule.dsigma(tt)) * eps


@functools.lru_cache(maxsize=64)
def exact_grids(name: str, alpha: float, sigma: float) -> dict[str, Any]:
    """The noised mixture at (alpha, sigma) on the heatmap grid and the arrow grid: log p_t, E[eps | x] and
    E[x0 | x] (cached: it depends on t only, not on training)."""
    data = dgm.core.data.get(name)
    nm = NoisedMixture.of(data)
    heat, arrows = Grid.over(data.box, HEAT), Grid.over(data.box, ARROWS)
    out: dict[str, Any] = {"heat": heat, "arrows": arrows, "log_p": nm.log_prob(heat.points, alpha, sigma)}
    for key, g in (("heat", heat), ("arrows", arrows)):
        x0 = nm.posterior_mean(g.points, alpha, sigma)
        out[f"{key}_x0"] = x0
        out[f"{key}_eps"] = (g.points - alpha * x0) / sigma
    return out


@torch.no_grad()
def field_snapshot(trainer: DiffusionTrainer, t: float, kind: str = "score") -> dict[str, Any]:
    """The learned and exact fields at the training level nearest t on a grid of arrows, and the error
    sigma^2 |s_theta - grad log p_t|^2 = |eps_theta - eps*|^2 with the noised density p_t on a finer grid."""
    sch = trainer.schedule
    t = float(sch.snap(torch.tensor([max(t, 1e-3)], dtype=torch.float64))[0])
    a, s = sch.at(t)
    box = trainer.data.box
    den = trainer.denoiser()
    null = (lambda n: torch.full((n,), trainer.n_classes, dtype=torch.long, device=trainer.device)) \
        if trainer.n_classes else (lambda n: None)
    arrows = Grid.over(box, ARROWS, device=trainer.device)
    eps, x0 = den(arrows.points, t, null(ARROWS * ARROWS))
    out: dict[str, Any] = {"t": t, "alpha": a, "sigma": s, "kind": kind, "box": box, "iteration": trainer.iteration,
                           "model": trainer.config.model, "points": arrows.points.cpu(),
                           "learned": as_field(kind, sch, t, arrows.points, eps, x0).cpu()}
    if trainer.mixture is not None:
        ex = exact_grids(trainer.data.name, a, s)
        out["exact"] = as_field(kind, sch, t, ex["arrows"].points, ex["arrows_eps"], ex["arrows_x0"])
        heat = ex["heat"]
        eps_h, _ = den(heat.points.to(trainer.device), t, null(HEAT * HEAT))
        err = (eps_h.cpu() - ex["heat_eps"]).pow(2).sum(1)  # (R*R,)
        p = heat.normalize(ex["log_p"]).exp()
        out.update(heat=heat, log_p=ex["log_p"], error=err, weighted=p * err, error_at_t=heat.integral(p * err))
    return out


@torch.no_grad()
def sample_snapshot(trainer: DiffusionTrainer, n: int = 600, keep: int = 40) -> dict[str, Any]:
    """n samples with the run's sampler, the paths of the first ``keep``, and as many noised data points."""
    x, nfe, path = trainer.generate(n, keep=keep)
    out = {"samples": x.cpu(), "nfe": nfe, "path": torch.stack(path, 1).cpu() if path else None,
           "sampler": trainer.runtime.sampler, "iteration": trainer.iteration}
    if not trainer.images:
        out["data"] = trainer.heldout[:n].cpu()
    return out


# ---- builders -----------------------------------------------------------------------------------

def _segments(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(starts)
    xs, ys = np.full(3 * n, np.nan, np.float32), np.full(3 * n, np.nan, np.float32)
    xs[0::3], xs[1::3], ys[0::3], ys[1::3] = starts[:, 0], ends[:, 0], starts[:, 1], ends[:, 1]
    return xs, ys


def arrows(points, field, box, top: float, decades: float = 2.0, max_frac: float = 0.045):
    """Arrow shafts and heads (x, y arrays with gaps) for vectors ``field`` at ``points``: the length grows
    with log10 |v| over ``decades`` below ``top`` (so a field that spans orders of magnitude stays readable)."""
    p, v = _np(points).astype(float), _np(field).astype(float)
    norm = np.linalg.norm(v, axis=1)
    frac = np.clip(1 + (np.log10(np.maximum(norm, 1e-30)) - math.log10(max(top, 1e-30))) / decades, 0, 1)
    length = frac * max_frac * (box[1] - box[0])
    unit = v / np.maximum(norm, 1e-30)[:, None]
    tip = p + unit * length[:, None]
    c, s = math.cos(math.radians(150)), math.sin(math.radians(150))
    rot = lambda u, sg: np.stack([c * u[:, 0] - sg * s * u[:, 1], sg * s * u[:, 0] + c * u[:, 1]], 1)  # noqa: E731
    hl = 0.35 * length[:, None]
    keep = length > 0
    starts = np.concatenate([p[keep], tip[keep], tip[keep]])
    ends = np.concatenate([tip[keep], (tip + rot(unit, 1) * hl)[keep], (tip + rot(unit, -1) * hl)[keep]])
    return _segments(starts, ends)


def _density_background(fig: go.Figure, snap: dict[str, Any]) -> None:
    if snap.get("log_p") is None:
        return
    lp = snap["log_p"].double()
    top = float(lp.max())
    viz.add_heatmap(fig, snap["heat"], lp.clamp(min=top - 10).float(), colorscale="Greys", zmin=top - 10, zmax=top + 3,
                    name="log p_t", opacity=0.55)


def _title_t(snap: dict[str, Any]) -> str:
    return f"t = {snap['t']:.3g}, σ {snap['sigma']:.2g}"


def field(snap: dict[str, Any], which: str = "learned", height: int = 400) -> go.Figure:
    """The learned (or exact) score or velocity at t as arrows, over the exact log p_t where known."""
    name = {"score": "score", "velocity": "velocity"}[snap["kind"]]
    who = "learned" if which == "learned" else "exact"
    fig = viz.plane(snap["box"], title=f"{who.capitalize()} {name} · {_title_t(snap)}", height=height)
    _density_background(fig, snap)
    ref = snap.get("exact", snap["learned"])
    top = float(np.percentile(np.linalg.norm(_np(ref), axis=1), 95)) or 1.0
    xs, ys = arrows(snap["points"], snap[which], snap["box"], top)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{who} (length ~ log |·|)", hoverinfo="skip",
                             line={"color": LEARNED if which == "learned" else EXACT, "width": 1.2}))
    return fig


def error_map(snap: dict[str, Any], weighted: bool = True, height: int = 400) -> go.Figure:
    """log10 of the error |eps_theta - eps*|^2 (= sigma^2 |s_theta - grad log p_t|^2), weighted by p_t or not."""
    vals = (snap["weighted"] if weighted else snap["error"]).double().clamp_min(1e-30)
    lg = torch.log10(vals)
    top = float(lg.max())
    title = f"Error × p_t: ∫ = {snap['error_at_t']:.3g}" if weighted else "Error σ²|s_θ − ∇log p|², unweighted"
    fig = viz.plane(snap["box"], title=title, height=height)
    viz.add_heatmap(fig, snap["heat"], lg.clamp(min=top - 5).float(), colorscale="Inferno", zmin=top - 5, zmax=top,
                    showscale=True, colorbar_title="log₁₀")
    return fig


def forward(snap: dict[str, Any], x0, eps, height: int = 380) -> go.Figure:
    """The forward process at t: data points noised, x_t = alpha x0 + sigma eps, over the exact log p_t."""
    fig = viz.plane(snap["box"], title=f"Forward process · {_title_t(snap)}", height=height)
    _density_background(fig, snap)
    viz.add_points(fig, snap["alpha"] * _np(x0) + snap["sigma"] * _np(eps), name="x_t = α x₀ + σ ε", color=SAMPLE,
                   size=3, opacity=0.6)
    return fig


def forward_points(trainer: DiffusionTrainer, n: int = 600):
    """Data points and the noise that the forward-process figure mixes (fixed: the cloud moves smoothly with t)."""
    eps = torch.randn(n, trainer.dim, generator=trainer.eval_generator(8), device=trainer.device)
    return trainer.heldout[:n].cpu(), eps.cpu()


STOCHASTIC = ("ancestral", "langevin")


def trajectories(s: dict[str, Any], box, height: int = 380) -> go.Figure:
    """The reverse process: the first samples' paths from noise (grey) to the end (orange); a dozen for the
    stochastic samplers, whose paths zigzag."""
    fig = viz.plane(box, title=f"Reverse process: {s['sampler']}, {s['nfe']} NFE", height=height)
    if s.get("data") is not None:
        viz.add_points(fig, s["data"][:500], name="data", color=viz.DATA_COLOR, size=2, opacity=0.3)
    path = _np(s["path"])[:12 if s["sampler"] in STOCHASTIC else None]  # (keep, steps + 1, 2)
    gap = np.full((path.shape[0], 1, 2), np.nan, np.float32)
    flat = np.concatenate([path, gap], 1).reshape(-1, 2)
    fig.add_trace(go.Scatter(x=flat[:, 0], y=flat[:, 1], mode="lines", name="paths", hoverinfo="skip",
                             line={"color": "rgba(8,81,156,0.3)", "width": 0.8}))
    viz.add_points(fig, path[:, 0], name="start (noise)", color="#999999", size=3, opacity=0.7)
    viz.add_points(fig, path[:, -1], name="end", color=SAMPLE, size=4, opacity=0.9)
    return fig


def samples(s: dict[str, Any], box, height: int = 380) -> go.Figure:
    fig = viz.plane(box, title=f"Samples: {s['sampler']}, {s['nfe']} NFE", height=height)
    viz.add_points(fig, s["data"], name="data", color=viz.DATA_COLOR, size=3, opacity=0.4)
    viz.add_points(fig, s["samples"], name="samples", color=SAMPLE, size=3, opacity=0.7)
    return fig


def clouds_row(clouds: Sequence[tuple[str, Any]], box, data=None, height: int = 210) -> go.Figure:
    """Small sample clouds side by side (one dict layout: plotly's per-subplot updates are slow)."""
    n = max(len(clouds), 1)
    gap = 0.01
    width = (1 - gap * (n - 1)) / n
    traces, layout, notes = [], {}, []
    for j, (label, x) in enumerate(clouds):
        ax = "" if j == 0 else str(j + 1)
        for pts, color, op in ((data, viz.DATA_COLOR, 0.25), (x, SAMPLE, 0.7)):
            if pts is not None:
                p = _np(pts)
                traces.append(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", xaxis=f"x{ax}", yaxis=f"y{ax}",
                                         showlegend=False, hoverinfo="skip",
                                         marker={"size": 2, "color": color, "opacity": op, "line": {"width": 0}}))
        x0 = j * (width + gap)
        common = {"showticklabels": False, "showgrid": False, "zeroline": False, "mirror": True, "showline": True,
                  "linecolor": "#888"}
        layout[f"xaxis{ax}"] = dict(domain=[x0, x0 + width], range=list(box[:2]), anchor=f"y{ax}",
                                    constrain="domain", **common)
        layout[f"yaxis{ax}"] = dict(domain=[0, 1], range=list(box[2:]), anchor=f"x{ax}", scaleanchor=f"x{ax}",
                                    constrain="domain", **common)
        notes.append({"text": label, "x": x0 + width / 2, "y": 1.0, "xref": "paper", "yref": "paper",
                      "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 11}})
    layout.update(height=height, margin={"l": 5, "r": 5, "t": 24, "b": 5}, paper_bgcolor="white",
                  plot_bgcolor="white", font=viz.FONT, annotations=notes, showlegend=False)
    return go.Figure(data=traces, layout=layout)


def image_grid(images, ncols: int, title: str, height: int = 360, rows: list[str] | None = None) -> go.Figure:
    """Digits (N, 64) in [-1, 1] as one greyscale heatmap; ``rows`` labels the rows."""
    imgs = np.clip((_np(images).reshape(-1, 8, 8) + 1) / 2, 0, 1)
    ylabels = {"tickvals": [5 + 9 * i - 0.5 for i in range(len(rows))], "ticktext": rows} if rows else \
        {"showticklabels": False}
    lay = viz.layout(title, height, xaxis={"showgrid": False, "zeroline": False, "showticklabels": False, "ticks": "",
                                           "constrain": "domain"},
                     yaxis={"showgrid": False, "zeroline": False, "ticks": "", "autorange": "reversed",
                            "scaleanchor": "x", "constrain": "domain", **ylabels})
    lay["margin"] = {"l": 70 if rows else 10, "r": 10, "t": 40, "b": 10}
    return go.Figure(go.Heatmap(z=viz.tile(imgs, ncols), colorscale=[[0, "#000"], [1, "#fff"]], zmin=0, zmax=1,
                                showscale=False, hoverinfo="skip"), layout=lay)


@torch.no_grad()
def denoising_snapshot(trainer: DiffusionTrainer, t: float, n: int = 10) -> dict[str, Any]:
    """Digits: test images noised at t and the network's estimate of x0 from them."""
    t = float(trainer.schedule.snap(torch.tensor([max(t, 1e-3)], dtype=torch.float64))[0])
    a, s = trainer.schedule.at(t)
    x0 = trainer.heldout[:n]
    xt = a * x0 + s * torch.randn(x0.shape, generator=trainer.eval_generator(7), device=trainer.device)
    null = torch.full((n,), trainer.n_classes, dtype=torch.long, device=trainer.device) if trainer.n_classes else None
    _, x0_hat = trainer.denoiser()(xt, t, null)
    return {"t": t, "alpha": a, "sigma": s, "rows": torch.cat([x0, xt, x0_hat]).cpu(), "n": n}


def denoising(d: dict[str, Any]) -> go.Figure:
    return image_grid(d["rows"], d["n"], f"Test digits noised at {_title_t(d)}, and the network's guess",
                      height=230, rows=["x₀", "x_t", "E[x₀ | x_t]"])


# ---- curves --------------------------------------------------------------------------------------

def _curves(rows, keys, title, labels, log_y=False, hlines=None) -> go.Figure:
    return viz.curves(rows, keys, title=title, labels=labels, log_y=log_y, hlines=hlines, height=290)


def modes_curve(rows, n_modes: int, x: str = "step", title: str = "Modes captured and high-quality samples",
                height: int = 290) -> go.Figure:
    """Modes captured (left axis) and the high-quality percentage (right) against ``x``."""
    pts = np.array([(r[x], r["modes"], r.get("high_quality", np.nan)) for r in rows if r.get("modes") is not None],
                   dtype=np.float64).reshape(-1, 3)
    traces = []
    if len(pts):
        traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines+markers", name="modes captured",
                                 line={"color": viz.PALETTE[1], "width": 2}, marker={"size": 4}))
        traces.append(go.Scatter(x=pts[:, 0], y=100 * pts[:, 2], mode="lines+markers", name="high quality (%)",
                                 yaxis="y2", line={"color": viz.PALETTE[0], "width": 2}, marker={"size": 4}))
    lay = viz.layout(title, height, xaxis={"title": x, "type": "log" if x == "nfe" else "linear"},
                     yaxis={"title": "modes", "range": [0, n_modes * 1.05]},
                     yaxis2={"title": "high quality %", "overlaying": "y", "side": "right", "range": [0, 105],
                             "showgrid": False})
    lay["margin"]["r"] = 50
    return go.Figure(data=traces, layout=lay)


def curve_figures(rows, trainer: DiffusionTrainer) -> dict[str, Any]:
    b: dict[str, Any] = {"loss": lambda: _curves(rows, ["loss"], "Training loss",
                                                 {"loss": "loss"}, log_y=True)}
    data = trainer.data
    if data is not None and data.centers is not None and data.std is not None:
        b["modes"] = lambda: modes_curve(rows, len(data.centers))
    if trainer.mixture is not None:
        b["score_error"] = lambda: _curves(rows, ["score_error"], "Score error E σ²|s_θ − ∇log p_t|²",
                                           {"score_error": "score error"}, log_y=True)
    if data is not None:
        last = next((r for r in reversed(rows) if "w1_floor" in r), {})
        floor = lambda k: {"true samples of p": last[k]} if k in last else None  # noqa: E731
        b["mmd"] = lambda: _curves(rows, ["mmd"], "MMD² to 2,500 data points", {"mmd": "MMD²"}, log_y=True,
                                   hlines=floor("mmd_floor"))
        b["w1"] = lambda: _curves(rows, ["w1"], "W1 (exact OT, 1,000 points)", {"w1": "W1"}, log_y=True,
                                  hlines=floor("w1_floor"))
    if trainer.entropy is not None:
        h = trainer.entropy
        b["nll"] = lambda: _curves(rows, ["nll"], "Held-out NLL, probability-flow ODE",
                                   {"nll": "NLL (exact trace)"}, hlines={f"entropy {h:.3f}": h})
    if trainer.images:
        b["test_loss"] = lambda: _curves(rows, ["test_loss"], "Held-out denoising loss (test digits)",
                                         {"test_loss": "test loss"}, log_y=True)
        b["nearest"] = lambda: _curves(rows, ["nearest"], "Distance to the nearest training digit",
                                       {"nearest": "samples ÷ test digits"}, hlines={"test digits": 1.0})
    return b


def figures(trainer: DiffusionTrainer, t: float = 0.1, kind: str = "score", weighted: bool = True) -> viz.Figures:
    """The page's figures for ``trainer``, each built when first used."""
    rows = trainer.history.merged()
    b: dict[str, Any] = {}
    cache: dict[str, Any] = {}

    def smp() -> dict[str, Any]:
        if not cache:
            cache.update(sample_snapshot(trainer))
        return cache

    if trainer.images:
        b["samples"] = lambda: image_grid(smp()["samples"][:36], 6,
                                          f"Samples: {smp()['sampler']}, {smp()['nfe']} NFE")
        b["denoising"] = lambda: denoising(denoising_snapshot(trainer, t))
    else:
        f = field_snapshot(trainer, t, kind)
        box = trainer.data.box
        b["field"] = lambda: field(f, "learned")
        if "exact" in f:
            b["exact"] = lambda: field(f, "exact")
            b["error"] = lambda: error_map(f, weighted)
        x0, eps = forward_points(trainer)
        b["forward"] = lambda: forward(f, x0, eps)
        b["samples"] = lambda: samples(smp(), box)
        b["trajectories"] = lambda: trajectories(smp(), box)
    b.update(curve_figures(rows, trainer))
    return viz.Figures(b)
