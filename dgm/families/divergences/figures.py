"""Figures of the Divergences page: ``snapshot(trainer)`` takes what they need from a trainer, and the
builders turn a snapshot (dicts and lists) into plotly figures. The objectives' names and colours."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.core.metrics import Grid
from dgm.families.divergences.trainer import OBJECTIVES, DivergenceTrainer

LABELS = {
    "forward_kl": "forward KL(p‖q)",
    "reverse_kl": "reverse KL(q‖p)",
    "js": "Jensen-Shannon",
    "alpha": "Amari α",
    "hellinger": "Hellinger²",
    "tv": "total variation",
    "mmd": "MMD²",
}
SHORT_LABELS = {"forward_kl": "KL(p‖q)", "reverse_kl": "KL(q‖p)", "js": "JS", "alpha": "α-div", "hellinger": "H²",
                "tv": "TV", "mmd": "MMD²"}
COLORS = {
    "forward_kl": "#d62728",
    "reverse_kl": "#1f77b4",
    "js": "#2ca02c",
    "alpha": "#9467bd",
    "hellinger": "#ff7f0e",
    "tv": "#17becf",
    "mmd": "#e377c2",
}

P_COLOR = "#333333"
MODE_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def value_text(v: float, err: float) -> str:
    """A value with its estimated quadrature error ("0.1234 ± 2e-05"), "∞", or "—" when the error estimate
    exceeds 1% of the value (DivergenceTrainer.shown). MMD's error is 0: it is exact."""
    if math.isinf(v):
        return "∞"
    if not DivergenceTrainer.shown(v, err):
        return "—"
    return f"{v:.4g}" if err == 0 else f"{v:.4g} ± {err:.1g}"


def _label(name: str, alpha: float | None = None) -> str:
    if name == "alpha" and alpha is not None:
        return f"Amari α={alpha:g}"
    return LABELS[name]


def _ellipse_traces(par: dict, color: str, name: str, width: float, showlegend: bool, nsig: float = 2.0,
                    xaxis: str = "x", yaxis: str = "y") -> list[go.Scatter]:
    """One nsig-sd ellipse per component (opacity follows the component's weight) and its centre."""
    out = []
    wmax = max(par["weights"])
    for j, (m, c, w) in enumerate(zip(par["means"], par["covs"], par["weights"])):
        path = viz.ellipse_path(np.array(m), np.array(c), nsig)
        op = 0.35 + 0.65 * (w / wmax)
        out.append(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines", name=name, legendgroup=name,
                              showlegend=showlegend and j == 0, opacity=op, hoverinfo="name",
                              line=dict(color=color, width=width), xaxis=xaxis, yaxis=yaxis))
        out.append(go.Scatter(x=[m[0]], y=[m[1]], mode="markers", name=name, legendgroup=name, showlegend=False,
                              opacity=op, hovertemplate=f"{name}<br>mean (%{{x:.2f}}, %{{y:.2f}})<br>weight {w:.2f}"
                              "<extra></extra>", marker=dict(color=color, size=8, symbol="x"),
                              xaxis=xaxis, yaxis=yaxis))
    return out


def _p_heatmap(plot: dict, showscale: bool = False, xaxis: str = "x", yaxis: str = "y", every: int = 1,
               contours: bool = True) -> list[go.BaseTraceType]:
    """p as a heatmap (every ``every``-th grid point) with contour lines."""
    xs, ys = np.asarray(plot["xs"], np.float32)[::every], np.asarray(plot["ys"], np.float32)[::every]
    z = np.asarray(plot["p"], np.float32)[::every, ::every]
    out = [go.Heatmap(x=xs, y=ys, z=z, colorscale="Blues", showscale=showscale, hoverinfo="skip", name="p",
                      xaxis=xaxis, yaxis=yaxis)]
    if contours:
        out.append(go.Contour(x=xs, y=ys, z=z, ncontours=6, showscale=False, contours=dict(coloring="none"),
                              line=dict(color="#08306b", width=0.8), hoverinfo="skip", showlegend=False,
                              xaxis=xaxis, yaxis=yaxis))
    return out


def overlay(snap: dict, title: str | None = None, height: int = 460, show: Sequence[str] | None = None) -> go.Figure:
    """p as a heatmap with contours, every fitted q on top (2-sd ellipses); in 1D, p and every q as curves."""
    tgt, objectives = snap["target"], [o for o in snap["objectives"] if show is None or o in show]
    title = title or f"p = {tgt['name']} and the q fitted under each objective"
    if tgt["dim"] == 1:
        return curves_1d(snap, title=title, height=height, show=show)
    fig = viz.plane(tgt["box"], title=title, height=height)
    for tr in _p_heatmap(snap["plot"]):
        fig.add_trace(tr)
    for o in objectives:
        primary = o == snap["primary"]
        for tr in _ellipse_traces(snap["params"][o], COLORS[o], _label(o, snap["alpha"]), 3.2 if primary else 2.0,
                                  True):
            fig.add_trace(tr)
    fig.update_layout(legend=dict(orientation="v", y=1, x=1.02, yanchor="top"), margin=dict(r=10))
    return fig


def curves_1d(snap: dict, title: str | None = None, height: int = 420, show: Sequence[str] | None = None) -> go.Figure:
    plot = snap["plot"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=plot["xs"], y=plot["p"], mode="lines", name="p (target)", fill="tozeroy",
                             line=dict(color=P_COLOR, width=2.5), fillcolor="rgba(60,60,60,0.15)"))
    for o in snap["objectives"]:
        if show is not None and o not in show:
            continue
        primary = o == snap["primary"]
        fig.add_trace(go.Scatter(x=plot["xs"], y=plot["q"][o], mode="lines", name=_label(o, snap["alpha"]),
                                 line=dict(color=COLORS[o], width=3.2 if primary else 2.0)))
    viz.base_layout(fig, title, height)
    fig.update_layout(legend=dict(orientation="v", y=1, x=1.02, yanchor="top"))
    fig.update_xaxes(title="x", range=[plot["xs"][0], plot["xs"][-1]])
    fig.update_yaxes(title="density", rangemode="tozero")
    return fig


def side_by_side(snap: dict, height: int | None = None, cols: int = 4) -> go.Figure:
    """One small panel per objective: p with that objective's q, its own value in the title.
    The grid of axes is laid out by hand in one layout dict (much faster than make_subplots and
    per-axis updates, which matters at several frames per second)."""
    tgt, objectives = snap["target"], list(snap["objectives"])
    rows = math.ceil(len(objectives) / cols)
    plot = snap["plot"]
    gap_x, gap_y = 0.03, (0.12 if tgt["dim"] == 2 else 0.16)
    w, h = (1 - gap_x * (cols - 1)) / cols, (1 - gap_y * (rows - 1)) / rows
    traces: list[go.BaseTraceType] = []
    layout: dict[str, Any] = {"annotations": []}
    for n, o in enumerate(objectives):
        r, c = n // cols, n % cols
        ax = "" if n == 0 else str(n + 1)
        xa, ya = f"x{ax}", f"y{ax}"
        x0, y1 = c * (w + gap_x), 1 - r * (h + gap_y)
        xdom, ydom = [max(x0, 0.0), min(x0 + w, 1.0)], [max(y1 - h, 0.0), min(y1, 1.0)]
        if tgt["dim"] == 1:
            traces.append(go.Scatter(x=plot["xs"], y=plot["p"], mode="lines", fill="tozeroy", showlegend=False,
                                     line=dict(color=P_COLOR, width=1.5), fillcolor="rgba(60,60,60,0.15)",
                                     hoverinfo="skip", xaxis=xa, yaxis=ya))
            traces.append(go.Scatter(x=plot["xs"], y=plot["q"][o], mode="lines", showlegend=False, name=_label(o),
                                     line=dict(color=COLORS[o], width=2.5), xaxis=xa, yaxis=ya))
            layout[f"xaxis{ax}"] = dict(domain=xdom, anchor=ya, range=[float(plot["xs"][0]), float(plot["xs"][-1])])
            layout[f"yaxis{ax}"] = dict(domain=ydom, anchor=xa, rangemode="tozero", showticklabels=False)
        else:
            traces += _p_heatmap(plot, xaxis=xa, yaxis=ya, every=2, contours=False)
            traces += _ellipse_traces(snap["params"][o], COLORS[o], _label(o), 2.2, False, xaxis=xa, yaxis=ya)
            for m, cv in zip(snap["params"][o]["means"], snap["params"][o]["covs"]):
                path = viz.ellipse_path(np.array(m), np.array(cv), 1.0)
                traces.append(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines", showlegend=False, hoverinfo="skip",
                                         line=dict(color=COLORS[o], width=1.2, dash="dot"), xaxis=xa, yaxis=ya))
            off = dict(showticklabels=False, showgrid=False, zeroline=False)
            layout[f"xaxis{ax}"] = dict(domain=xdom, anchor=ya, range=list(tgt["box"][:2]), constrain="domain", **off)
            layout[f"yaxis{ax}"] = dict(domain=ydom, anchor=xa, range=list(tgt["box"][2:]), scaleanchor=xa,
                                        scaleratio=1, constrain="domain", **off)
        own = value_text(snap["table"][o][o], snap["errors"][o][o])
        layout["annotations"].append(dict(text=f"{_label(o, snap['alpha'])}: {own}",
                                          x=x0 + w / 2, y=y1, xref="paper", yref="paper", xanchor="center",
                                          yanchor="bottom", showarrow=False, font=dict(size=12)))
    fig = go.Figure(data=traces, layout=layout)
    viz.base_layout(fig, None, height or (250 * rows if tgt["dim"] == 2 else 190 * rows))
    fig.update_layout(margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    return fig


def values(rows: list[dict], objectives: Sequence[str], alpha: float | None = None, height: int = 320) -> go.Figure:
    """Each objective's value on its own q against steps (log scale: they differ by orders of magnitude).
    Built in one go from arrays (this redraws at every frame)."""
    traces = []
    for o in objectives:
        k = f"fit_{o}"
        pts = np.array([(r["step"], r[k]) for r in rows if k in r and r[k] is not None], dtype=np.float64)
        if pts.size == 0:
            continue
        pts = pts[np.isfinite(pts[:, 1]) & (pts[:, 1] > 0)]
        traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines", name=_label(o, alpha),
                                 line=dict(color=COLORS[o], width=2)))
    fig = go.Figure(data=traces, layout=dict(xaxis=dict(title="step"),
                                             yaxis=dict(type="log", title="value (nats for the KLs and JS)")))
    viz.base_layout(fig, "each objective on its own q", height)
    return fig


def table_heatmap(table: dict[str, dict[str, float]], alpha: float | None = None, height: int = 360,
                  errors: dict[str, dict[str, float]] | None = None) -> go.Figure:
    """The cross table as a heatmap: rows, the q fitted under each objective; columns, every divergence
    between p and that q. Colour: the value over the column's smallest (1 = best in its column, ringed).
    A value whose quadrature error estimate exceeds 1% of it is left blank ("—")."""
    rows = list(table)
    cols = [c for c in OBJECTIVES if c in next(iter(table.values()))]
    err = np.array([[(errors or {}).get(r, {}).get(c, 0.0) for c in cols] for r in rows])
    v = np.array([[table[r][c] if DivergenceTrainer.shown(table[r][c], err[i, j]) else np.nan
                   for j, c in enumerate(cols)] for i, r in enumerate(rows)])
    best = np.nanmin(np.where(np.isnan(v), np.inf, v), 0, keepdims=True)
    ratio = np.log10(np.maximum(v, 1e-300) / np.maximum(best, 1e-300))
    text = [["—" if np.isnan(x) else ("∞" if np.isinf(x) else f"{x:.3g}") for x in row] for row in v]
    ratio = np.where(np.isfinite(ratio), ratio, np.nan)
    short = [f"α={alpha:g}" if c == "alpha" and alpha is not None else SHORT_LABELS[c] for c in cols]
    fig = go.Figure(go.Heatmap(z=ratio, x=short, y=[f"q fitted by {_label(r, alpha)}" for r in rows],
                               text=text, texttemplate="%{text}", colorscale="YlOrRd", zmin=0,
                               zmax=max(float(np.nanmax(ratio)) if np.isfinite(ratio).any() else 0.0, 0.3),
                               showscale=True, hoverongaps=False,
                               colorbar=dict(title="log10(value / column min)", thickness=10, len=0.8),
                               hovertemplate="%{y}<br>%{x} = %{text}<extra></extra>"))
    tied = np.nan_to_num(v, nan=np.inf) <= best + 1e-3 * np.abs(best) + 1e-12  # ties within 0.1% all count as best
    for i, j in zip(*np.nonzero(tied)):
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="#1a9850", width=3))
    viz.base_layout(fig, "every divergence between p and every fitted q (green: column minimum)", height)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    fig.update_layout(margin=dict(l=10, r=10, t=75, b=10), title=dict(y=0.97, yanchor="top"))
    fig.update_xaxes(tickangle=0)
    return fig


def restarts(res: dict[str, Any], snap: dict, height: int = 420) -> go.Figure:
    """Basins of reverse KL: each run's starting mean, coloured by the mode its fit lands on
    (grey: between modes), with the fitted means and p's mode centres."""
    tgt = snap["target"]
    init, final, mode = np.array(res["init"]), np.array(res["final"]), np.array(res["mode"])
    centers = np.array(res["centers"])
    color = [MODE_COLORS[m % len(MODE_COLORS)] if m >= 0 else "#999999" for m in mode]
    title = f"reverse KL from {len(mode)} random starts ({res['steps']} steps each)"
    if tgt["dim"] == 1:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=init[:, 0], y=final[:, 0], mode="markers", name="runs",
                                 marker=dict(color=color, size=8, line=dict(width=0.5, color="white")),
                                 hovertemplate="start %{x:.2f} → mean %{y:.2f}<extra></extra>"))
        for k, c in enumerate(centers[:, 0]):
            fig.add_hline(y=c, line=dict(color=MODE_COLORS[k % len(MODE_COLORS)], dash="dot", width=1),
                          annotation_text=f"mode {k + 1}", annotation_position="top left")
        viz.base_layout(fig, title, height)
        fig.update_xaxes(title="initial mean of q")
        fig.update_yaxes(title="fitted mean of q")
        return fig
    fig = viz.plane(tgt["box"], title=title, height=height)
    for tr in _p_heatmap(snap["plot"]):
        tr.opacity = 0.5
        fig.add_trace(tr)
    fig.add_trace(go.Scatter(x=init[:, 0], y=init[:, 1], mode="markers", name="start (colour: mode reached)",
                             marker=dict(color=color, size=8, line=dict(width=0.5, color="white")),
                             hovertemplate="start (%{x:.2f}, %{y:.2f})<extra></extra>"))
    fig.add_trace(go.Scatter(x=final[:, 0], y=final[:, 1], mode="markers", name="fitted means",
                             marker=dict(color="black", size=9, symbol="x")))
    fig.add_trace(go.Scatter(x=centers[:, 0], y=centers[:, 1], mode="markers+text", name="modes of p",
                             text=[str(k + 1) for k in range(len(centers))], textposition="top center",
                             marker=dict(color=[MODE_COLORS[k % len(MODE_COLORS)] for k in range(len(centers))],
                                         size=12, symbol="circle-open", line=dict(width=2))))
    return fig


def restart_counts(res: dict[str, Any], height: int = 300) -> go.Figure:
    """How many runs land on each mode (weights of p in the hover)."""
    counts, w = res["counts"], res["weights"]
    m = len(res["centers"])
    keys = list(range(m)) + ([-1] if -1 in counts or "-1" in counts else [])
    get = lambda k: counts.get(k, counts.get(str(k), 0))  # noqa: E731 (JSON round trips make keys str)
    names = [f"mode {k + 1} (weight {w[k]:.2f})" if k >= 0 else "between modes" for k in keys]
    fig = go.Figure(go.Bar(x=names, y=[get(k) for k in keys], text=[get(k) for k in keys], textposition="auto",
                           marker_color=[MODE_COLORS[k % len(MODE_COLORS)] if k >= 0 else "#999999" for k in keys]))
    viz.base_layout(fig, "runs per mode", height)
    fig.update_yaxes(title="runs")
    return fig


def separation(scan: dict[str, Any], alpha: float | None = None, height: int = 380) -> go.Figure:
    """The fitted q's std (in units of the modes' mean std) against the separation of the two modes, one line
    per objective: a covering fit widens with the separation, a seeking one drops to a mode's width."""
    traces = []
    for o in scan["objectives"]:
        f = scan["fits"][o]
        sw = f["switch"]
        name = _label(o, alpha) + (f" (seeks from {sw:g}σ)" if sw is not None else " (covers)")
        traces.append(go.Scatter(x=scan["seps"], y=f["std"], mode="lines+markers", name=name,
                                 line=dict(color=COLORS[o], width=2), marker=dict(size=5)))
    fig = go.Figure(data=traces, layout=dict(xaxis=dict(title="separation of the modes (in mode stds)"),
                                             yaxis=dict(title="std of the fitted q (in mode stds)", type="log")))
    viz.base_layout(fig, "Covering or seeking: the fitted q's width against the separation", height)
    fig.update_layout(legend=dict(orientation="v", y=1, x=1.02, yanchor="top"))
    return fig


@torch.no_grad()
def plot_data(trainer: DivergenceTrainer, best: dict[str, int], resolution: int = 100) -> dict[str, Any]:
    """p (and in 1D every fitted q) as continuous densities on a plotting grid over p's box (float32
    numpy arrays: plotly sends them to the browser as compact binary)."""
    t = trainer.target
    if t.dim == 1:
        xs = torch.linspace(t.box[0], t.box[1], 4 * resolution, device=trainer.device)
        p = t.log_prob(xs[:, None]).exp()
        q = trainer.q.log_prob(xs[:, None]).exp()  # (Q*S, n)
        return {"xs": xs.cpu().numpy(), "p": p.cpu().numpy(),
                "q": {name: q[best[name]].cpu().numpy() for name in trainer.row}}
    g = Grid.over(t.box, resolution, device=trainer.device)
    p = t.log_prob(g.points).exp().reshape(resolution, resolution)
    return {"xs": g.xs.cpu().numpy(), "ys": g.ys.cpu().numpy(), "p": p.cpu().numpy()}


@torch.no_grad()
def snapshot(trainer: DivergenceTrainer, w1: bool = False, refine: bool = True) -> dict[str, Any]:
    """What every figure and table of the page needs (nothing changes in the trainer); with ``w1``, the
    W1 column too (exact optimal transport), and with ``refine`` the values of fits narrower than the
    grid (see ``DivergenceTrainer.exact``): both once a second on the page, not every frame."""
    t = trainer.target
    ex = trainer.exact(refine)
    return {"table": trainer.table(ex), "errors": trainer.table_errors(ex), "params": trainer.params(ex),
            "w1": trainer.w1_column(ex[1]) if w1 else None, "grid": trainer.grid.describe(),
            "objectives": trainer.objectives, "primary": trainer.config.objective, "plot": plot_data(trainer, ex[1]),
            "target": {"name": t.name, "description": t.description, "box": t.box, "dim": t.dim,
                       "centers": t.means.cpu().tolist(), "modes": int(t.means.shape[0])},
            "alpha": trainer.config.alpha, "iteration": trainer.iteration, "starts": trainer.starts}


def figures(trainer: DivergenceTrainer) -> viz.Figures:
    """The page's main figures (also the CLI's --png), each built when first used."""
    snap = snapshot(trainer, w1=True)
    return viz.Figures({
        "fit": lambda: overlay(snap),
        "side_by_side": lambda: side_by_side(snap),
        "values": lambda: values(trainer.history.merged(), snap["objectives"], snap["alpha"]),
        "table": lambda: table_heatmap(snap["table"], snap["alpha"], errors=snap["errors"]),
    })
