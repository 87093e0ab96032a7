"""Figures of the GAN page: ``snapshot(trainer)`` takes what they need from a trainer (without changing
it), and the builders are pure functions of a snapshot and history rows.

- ``game``: real and generated points over the heatmap of D(x), with the generator's gradient field
  (arrows drawn as line segments in one trace), the warped latent grid and, for CFG, the particles' paths;
- ``dstar``: the optimal discriminator D*(x) = p / (p + q) for the current generator;
- curves against iteration: losses, modes and high-quality fraction, mode KL, MMD, JS, W1, each
  estimate with the floor that true samples of p get (a perfect generator) and, where measured, its spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch import Tensor

from dgm.core import viz
from dgm.core.metrics import Grid, mode_stats
from dgm.families.gan.model import PROB_LOSSES, cfg_move, g_loss_per_sample
from dgm.families.gan.trainer import JS_RESOLUTION, GANTrainer

FAKE_COLOR = "#e6550d"
REAL_COLOR = "#111111"
ARROW_COLOR = "#08519c"
MANIFOLD_COLOR = "rgba(60,60,60,0.45)"
PROB_SCALE = "PRGn"  # purple: "generated", green: "real" (as in GAN Lab)

#: arrow length ~ log10 |grad|, from GRAD_LO (no arrow) to GRAD_HI (the longest arrow)
GRAD_LO, GRAD_HI = 1e-4, 1.0

# A light template: plotly's named templates are copied into every figure (slow, and
# tens of kB of JSON); the page redraws seven figures several times a second, so it uses this one.
_AXIS = {"gridcolor": "#ebebeb", "linecolor": "#bbbbbb", "zerolinecolor": "#ebebeb", "ticks": "outside",
             "tickcolor": "#bbbbbb", "ticklen": 3}
LIGHT = go.layout.Template(layout={"paper_bgcolor": "white", "plot_bgcolor": "white", "font": viz.FONT,
                                       "colorway": viz.PALETTE, "xaxis": _AXIS, "yaxis": _AXIS})


def _np(x) -> np.ndarray:
    return viz._np(x)


def _layout(title: str | None, height: int, right: int = 10, **extra) -> dict:
    """viz.base_layout's look with the light template, as one dict: a figure built with its layout in
    one go is validated once (each update_layout afterwards validates anew)."""
    return dict(template=LIGHT, height=height, margin={"l": 40, "r": right, "t": 40 if title else 10, "b": 35},
                title={"text": title, "x": 0.02, "xanchor": "left", "font": {"size": 14}} if title else None,
                legend={"orientation": "h", "y": -0.12, "x": 0, "font": {"size": 11}}, **extra)


def plane(box, title: str | None = None, height: int = 420) -> go.Figure:
    xmin, xmax, ymin, ymax = box
    ax = {"showgrid": False, "zeroline": False, "constrain": "domain"}
    return go.Figure(layout=_layout(title, height, xaxis=dict(range=[xmin, xmax], **ax),
                                    yaxis=dict(range=[ymin, ymax], scaleanchor="x", scaleratio=1, **ax)))


def heatmap(fig: go.Figure, xs, ys, z, *, zmin, zmax, label: str, colorscale=None) -> go.Figure:
    fig.add_trace(go.Heatmap(x=_np(xs), y=_np(ys), z=np.asarray(z, dtype=np.float32), zmin=zmin, zmax=zmax,
                             colorscale=colorscale or PROB_SCALE, name=label, hoverinfo="skip", opacity=0.75,
                             colorbar={"title": label, "thickness": 10, "len": 0.7}))
    return fig


def points(fig: go.Figure, x, *, name: str, color: str, size: float = 3.0, opacity: float = 0.6) -> go.Figure:
    x = _np(x)
    fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", name=name,
                             marker={"size": size, "color": color, "opacity": opacity, "line": {"width": 0}}))
    return fig


def segments(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y arrays that draw one line segment per row, separated by NaN gaps (a single trace)."""
    n = len(starts)
    xs = np.full(3 * n, np.nan, dtype=np.float32)
    ys = np.full(3 * n, np.nan, dtype=np.float32)
    xs[0::3], xs[1::3] = starts[:, 0], ends[:, 0]
    ys[0::3], ys[1::3] = starts[:, 1], ends[:, 1]
    return xs, ys


def polylines(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L, P, 2) polylines -> x, y arrays with a NaN gap after each line."""
    lines = np.asarray(lines, dtype=np.float32)
    gap = np.full((lines.shape[0], 1, 2), np.nan, dtype=np.float32)
    flat = np.concatenate([lines, gap], 1).reshape(-1, 2)
    return flat[:, 0], flat[:, 1]


def curves(rows: Sequence[dict], keys: Sequence[str], *, title: str, labels: dict | None = None,
           log_y: bool = False, hlines: dict[str, float] | None = None, height: int = 300,
           bands: dict[str, str] | None = None, x_title: str = "step") -> go.Figure:
    """viz.curves with the light template and binary arrays; ``bands`` {key: sd key} shades ±1 sd; ``x_title``
    says how often the values were evaluated."""
    traces = []
    for i, k in enumerate(keys):
        pts = np.array([(r["step"], r[k]) for r in rows if r.get(k) is not None and math.isfinite(r[k])],
                       dtype=np.float64).reshape(-1, 2)
        sd_key = (bands or {}).get(k)
        if sd_key and len(pts):
            band = np.array([(r["step"], r[k], r.get(sd_key, 0.0)) for r in rows
                             if r.get(k) is not None and math.isfinite(r[k])], dtype=np.float64)
            xs = np.concatenate([band[:, 0], band[::-1, 0]])
            ys = np.concatenate([band[:, 1] + band[:, 2], (band[:, 1] - band[:, 2])[::-1]])
            traces.append(go.Scatter(x=xs, y=ys, fill="toself", mode="lines", line={"width": 0}, hoverinfo="skip",
                                     fillcolor="rgba(31,119,180,0.18)", name="±1 sd over draws", showlegend=True))
        if len(pts):
            traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines" if len(pts) > 60 else "lines+markers",
                                     name=(labels or {}).get(k, k), marker={"size": 4},
                                     line={"color": viz.PALETTE[i % len(viz.PALETTE)], "width": 2}))
    shapes, notes = [], []
    for label, y in (hlines or {}).items():
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
                           "line": {"color": "#555", "dash": "dash", "width": 1}})
        notes.append({"xref": "paper", "x": 0, "y": y, "text": label, "showarrow": False, "xanchor": "left", "yanchor": "bottom"})
    layout = _layout(title, height, xaxis={"title": x_title}, shapes=shapes, annotations=notes,
                     yaxis={"type": "log" if log_y else "linear"})
    return go.Figure(data=traces, layout=layout)


def arrow_geometry(points, grads, box, max_frac: float = 0.08, head: float = 0.35):
    """Arrow shafts and heads for gradients ``grads`` (N, 2) at ``points`` (N, 2).

    Length grows with log10 |grad| between GRAD_LO and GRAD_HI (so a saturated, near-zero gradient
    really shows as no arrow, and one of 1e-2 as half of one of 1), capped at ``max_frac`` of the box."""
    p, g = _np(points).astype(float), _np(grads).astype(float)
    norm = np.linalg.norm(g, axis=1)
    frac = np.clip((np.log10(np.maximum(norm, 1e-30)) - math.log10(GRAD_LO)) / math.log10(GRAD_HI / GRAD_LO), 0, 1)
    length = frac * max_frac * (box[1] - box[0])
    unit = g / np.maximum(norm, 1e-30)[:, None]
    tip = p + unit * length[:, None]
    # two barbs at the tip, at +-25 degrees
    c, s = math.cos(math.radians(155)), math.sin(math.radians(155))
    rot = lambda u, sg: np.stack([c * u[:, 0] - sg * s * u[:, 1], sg * s * u[:, 0] + c * u[:, 1]], 1)
    hl = (head * length)[:, None]
    keep = length > 0
    starts = np.concatenate([p[keep], tip[keep], tip[keep]])
    ends = np.concatenate([tip[keep], (tip + rot(unit, 1) * hl)[keep], (tip + rot(unit, -1) * hl)[keep]])
    return starts, ends, float(norm.max()) if len(norm) else 0.0


def d_heat_range(values: np.ndarray, kind: str) -> tuple[float, float, str]:
    if kind == "probability":
        return 0.0, 1.0, "D(x)"
    v = values[np.isfinite(values)]
    if not len(v):
        return -1.0, 1.0, "D(x)"
    lo, hi = np.percentile(v, [2, 98])
    mid = float(np.median(v))
    half = max(hi - mid, mid - lo, 1e-6)
    return mid - half, mid + half, "critic" if kind == "critic" else "score"


def game(snap: dict[str, Any], box, *, show_manifold: bool = True, show_arrows: bool = True,
         show_heatmap: bool = True, title: str | None = None, height: int = 460) -> go.Figure:
    """Real (black) and generated (orange) points over D(x); arrows of -grad_x of G's loss."""
    fig = plane(box, title=title or f"Step {snap['iteration']:,}: D(x), data, samples", height=height)
    if show_heatmap:
        _d_heatmap(fig, snap)
    if show_manifold and snap.get("manifold") is not None:
        xs, ys = polylines(_np(snap["manifold"]))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="G's latent grid", hoverinfo="skip",
                                 line={"color": MANIFOLD_COLOR, "width": 1}))
    points(fig, snap["real"], name="data p", color=REAL_COLOR, size=3, opacity=0.5)
    points(fig, snap["fake"], name="generated q", color=FAKE_COLOR, size=3.5, opacity=0.8)
    if snap.get("particles") is not None:
        xs, ys = polylines(np.transpose(_np(snap["particles"]), (1, 0, 2)))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="CFG particle paths", hoverinfo="skip",
                                 line={"color": "#6a51a3", "width": 1.5}))
        end = _np(snap["particles"])[-1]
        fig.add_trace(go.Scatter(x=end[:, 0], y=end[:, 1], mode="markers", name="moved particles",
                                 marker={"size": 4, "color": "#6a51a3", "symbol": "diamond"}))
    if show_arrows and snap.get("arrows") is not None:
        starts, ends, gmax = arrow_geometry(*snap["arrows"], box)
        xs, ys = segments(starts, ends)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", line={"color": ARROW_COLOR, "width": 1.3},
                                 name=f"−∇ₓ G loss (length ~ log |∇|, max {gmax:.0e})"))
    return viz.follow(fig, box, snap["fake"])


def dstar(snap: dict[str, Any], box, height: int = 460) -> go.Figure | None:
    """The optimal discriminator for the current generator, D*(x) = p(x) / (p(x) + q(x))."""
    if snap.get("dstar") is None:
        return None
    xs, ys, values, h = snap["dstar"]
    fig = plane(box, title=f"Optimal D* = p/(p+q), smoothed (h = {h:.2g})", height=height)
    heatmap(fig, xs, ys, values, zmin=0, zmax=1, label="D*")
    points(fig, snap["fake"], name="generated q", color=FAKE_COLOR, size=3, opacity=0.5)
    return fig


def _d_heatmap(fig: go.Figure, snap: dict[str, Any]) -> tuple[float, float, str]:
    grid = snap["d_grid"]
    vals = _np(snap["d_values"])
    zmin, zmax, label = d_heat_range(vals, snap["d_kind"])
    heatmap(fig, grid.xs, grid.ys, vals.reshape(grid.resolution, grid.resolution), zmin=zmin, zmax=zmax, label=label)
    return zmin, zmax, label


def learned_d(snap: dict[str, Any], box, height: int = 460) -> go.Figure:
    """The learned D alone (next to D*), on the same colour scale when it is a probability."""
    kind = snap["d_kind"]
    fig = plane(box, title="Learned D(x)" if kind == "probability" else f"Learned D(x): a {kind}",
                height=height)
    _d_heatmap(fig, snap)
    points(fig, snap["fake"], name="generated q", color=FAKE_COLOR, size=3, opacity=0.5)
    return fig


def modes_curve(rows: Sequence[dict], n_modes: int | None, height: int = 300, x_title: str = "step") -> go.Figure:
    """Modes captured (left axis) and the high-quality fraction (right axis) against iteration."""
    traces = []
    pts = np.array([(r["step"], r["modes"], r.get("high_quality", np.nan)) for r in rows if r.get("modes") is not None],
                   dtype=np.float64).reshape(-1, 3)
    if len(pts):
        traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines+markers", name="modes captured",
                                 line={"color": viz.PALETTE[1], "width": 2}, marker={"size": 4}))
        traces.append(go.Scatter(x=pts[:, 0], y=100 * pts[:, 2], mode="lines+markers", name="high quality (%)",
                                 yaxis="y2", line={"color": viz.PALETTE[0], "width": 2}, marker={"size": 4}))
    layout = _layout("Modes captured and high-quality samples", height, right=50, xaxis={"title": x_title},
                     yaxis={"title": "modes", "range": [0, (n_modes or 1) * 1.05]},
                     yaxis2={"title": "high quality %", "overlaying": "y", "side": "right", "range": [0, 105],
                             "showgrid": False})
    return go.Figure(data=traces, layout=layout)


def main_figures(snap: dict[str, Any], rows: Sequence[dict], data, *, show_manifold: bool = True,
                 show_arrows: bool = True) -> viz.Figures:
    """Every figure of the page, by name, built when first used (the CLI's --png writes them all)."""
    box = data.box
    b: dict[str, Any] = {"game": lambda: game(snap, box, show_manifold=show_manifold, show_arrows=show_arrows)}
    if snap.get("dstar") is not None:
        b["learned_d"] = lambda: learned_d(snap, box)
        b["dstar"] = lambda: dstar(snap, box)
    b["losses"] = lambda: curves(rows, ["d_loss", "g_loss"], title="Losses",
                                 labels={"d_loss": "D loss", "g_loss": "G loss"}, x_title="step · every step")
    ev = viz.evaluated(snap.get("eval_schedule"))
    if data.centers is not None and data.std is not None:
        now = snap.get("modes_now")
        mrows = list(rows) + [now] if now and not any(r.get("step") == now["step"] and "modes" in r for r in rows) \
            else rows
        b["modes"] = lambda: modes_curve(mrows, len(data.centers), x_title=ev)
        b["mode_kl"] = lambda: curves(mrows, ["mode_kl"], title="Mode KL (0: every mode equally often)",
                                      labels={"mode_kl": "mode KL"}, x_title=ev)
    last = next((r for r in reversed(rows) if "mmd_floor" in r), {})
    floor = lambda k: {"true samples of p": last[k]} if k in last else {}  # noqa: E731
    b["mmd"] = lambda: curves(rows, ["mmd"], title="MMD² (biased) to 2,500 data points", labels={"mmd": "MMD²"},
                              log_y=True, hlines=floor("mmd_floor"), x_title=ev)
    if any("js" in r for r in rows):
        b["js"] = lambda: curves(rows, ["js"], title="JS(p, q) in nats (smoothed p, q)",
                                 labels={"js": "JS (mean of 4 draws)"}, bands={"js": "js_sd"},
                                 hlines={"log 2 (maximum)": math.log(2), **floor("js_floor")}, x_title=ev)
    if any("w1" in r for r in rows):
        keys = ["w1", "critic_w1"] if any("critic_w1" in r for r in rows) else ["w1"]
        b["w1"] = lambda: curves(rows, keys, title="W1(p, q) by exact OT",
                                 labels={"w1": "W1 (exact OT)", "critic_w1": "critic: E_p f − E_q f"},
                                 hlines=floor("w1_floor"), x_title=ev)
    return viz.Figures(b)


@torch.no_grad()
def dstar_grid(trainer: GANTrainer, samples: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """D* = p / (p + q) for q the density of ``samples``, both p and q smoothed by the JS kernel, on the
    JS grid pooled 2 x 2 (cell masses add up): xs, ys (R/2,), D* (R/2, R/2) (NaN where p + q is below
    1e-3 of its peak) and p's pooled density (R/2, R/2)."""
    r = JS_RESOLUTION
    pool = lambda d: F.avg_pool2d(d.view(1, 1, r, r), 2)[0, 0]  # noqa: E731  (r/2, r/2)
    p, q = pool(trainer.log_p_smooth.exp()), pool(trainer.q_grid(samples))
    tot = p + q
    dstar = torch.where(tot > 1e-3 * tot.max(), p / tot.clamp_min(1e-300), torch.full_like(tot, float("nan")))
    g = trainer.js_grid
    return g.xs.view(-1, 2).mean(1), g.ys.view(-1, 2).mean(1), dstar, p


# ---- from a trainer -----------------------------------------------------------------------------

def snapshot(trainer: GANTrainer, n_points: int = 600, n_arrows: int = 150, resolution: int = 80) -> dict[str, Any]:
    """What every figure of the page needs, from the trainer's current state (nothing changes in it)."""
    c = trainer.config
    with torch.no_grad(), trainer.frozen():
        fake = trainer.sampler(trainer.z_eval[:n_points])  # (n, 2): fixed codes, so the cloud moves smoothly
    grid = Grid.over(trainer.data.box, resolution, device=trainer.device)
    snap: dict[str, Any] = {
        "iteration": trainer.iteration,
        "loss": c.loss,
        "real": trainer.real_eval[:n_points].cpu(),
        "fake": fake.cpu(),
        "d_grid": grid,
        "d_values": trainer.d_output(grid.points).cpu(),
        "d_kind": "probability" if c.loss in PROB_LOSSES else ("score" if c.loss == "lsgan" else "critic"),
        "eval_schedule": trainer.eval_schedule(),
    }
    # the generator's gradient field: -grad_x of its loss at generated points
    pts = fake[:n_arrows]
    with trainer.frozen(), torch.enable_grad():
        xg = pts.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(g_loss_per_sample(c.loss, trainer.d_point(xg)).sum(), xg)
        snap["arrows"] = (pts.cpu(), (-g).detach().cpu())
        if c.loss == "cfg":
            snap["particles"] = cfg_move(trainer.d_point, pts, c.eta, c.T, trajectory=True).cpu()  # (T+1, n, 2)
    snap["manifold"] = manifold(trainer).cpu()
    # the optimal discriminator for the current generator, D* = p / (p + q), on the JS grid
    samples = trainer.generate() if trainer.log_p_smooth is not None or trainer.data.centers is not None else None
    if trainer.log_p_smooth is not None:
        xs, ys, dstar, _ = dstar_grid(trainer, samples)
        snap["dstar"] = (xs.cpu(), ys.cpu(), dstar.float().cpu().numpy(), trainer.kde_h)
    if trainer.data.centers is not None and trainer.data.std is not None:
        # the mode metrics now, on the evaluation's own samples: the panels agree with the picture between
        # evaluations (which also measure MMD, JS and W1, and so come only every eval_every steps)
        snap["modes_now"] = {"step": trainer.iteration, **mode_stats(samples, trainer.data.centers, trainer.data.std)}
    return snap


@torch.no_grad()
def manifold(trainer: GANTrainer, lines: int = 15, points: int = 50) -> Tensor:
    """A latent grid pushed through G: (2 * lines, points, 2) polylines. For z_dim > 2, the slice
    through the first two coordinates with the others at 0; for z_dim = 1, the line itself."""
    c = trainer.config
    span = 2.5 if c.prior == "gaussian" else 1.0
    t = torch.linspace(-span, span, points, device=trainer.device)
    s = torch.linspace(-span, span, lines, device=trainer.device)
    if c.z_dim == 1:
        z = t[None, :, None]  # (1, P, 1)
    else:
        a = torch.stack([t[None, :].expand(lines, -1), s[:, None].expand(-1, points)], -1)  # (L, P, 2)
        z2 = torch.cat([a, a.flip(-1)])  # (2L, P, 2): rows then columns
        z = torch.zeros(*z2.shape[:2], c.z_dim, device=trainer.device)
        z[..., :2] = z2
    with trainer.frozen():
        return trainer.sampler(z.reshape(-1, c.z_dim)).view(z.shape[0], points, 2)


def figures(trainer: GANTrainer) -> viz.Figures:
    """The page's figures of the trainer's current state (the CLI's --png, the export zip)."""
    return main_figures(snapshot(trainer), trainer.history.merged(), trainer.data)
