"""Figures of the autoregressive page on the digits: -log p of every pixel of chosen test digits, the
dependency check by gradients, and sampling one pixel at a time.

Functions that read a trainer (``pixel_nll``, ``dependency_data``) take what the figures need without
changing the model; the builders are pure (data in, plotly figure out).
Images are drawn as ONE heatmap of tiled 8x8 digits (ink white on black), so a grid stays one trace.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.families.autoregressive.layers import positions
from dgm.families.autoregressive.trainer import SIDE, ARTrainer, dependency_counts

GREY = [[0.0, "#000000"], [1.0, "#ffffff"]]
UNDRAWN = "#9ecae1"  # the background: pixels not drawn yet
SEEN, BLIND, LATER, SELF, WRONG = "#4292c6", "#fd8d3c", "#e0e0e0", "#d62728", "#000000"
DEFAULT_DIGITS = (0, 2, 3, 5, 7, 8)  # labels of the test digits shown by default (their first example each)


def default_digits(labels: Sequence[int]) -> list[int]:
    """The index of the first test digit of each label in DEFAULT_DIGITS."""
    labels = list(labels)
    return [labels.index(d) for d in DEFAULT_DIGITS if d in labels]


def _image_axes(domain: Sequence[float] = (0, 1), anchor: str = "x") -> tuple[dict, dict]:
    x = dict(showgrid=False, zeroline=False, showticklabels=False, ticks="", constrain="domain")
    y = dict(x, autorange="reversed", scaleanchor=anchor, scaleratio=1, domain=list(domain))
    return x, y


def image_grid(images: np.ndarray, ncols: int, title: str | None, height: int = 300, shapes: list | None = None,
               bg: str = "white") -> go.Figure:
    """Tiled greyscale images (values in [0, 1]; NaN shows the background ``bg``) as one heatmap."""
    xa, ya = _image_axes()
    lay = viz.layout(title, height, xaxis=xa, yaxis=ya, shapes=shapes or [])
    lay["margin"], lay["plot_bgcolor"] = dict(l=10, r=10, t=40 if title else 10, b=10), bg
    return go.Figure(go.Heatmap(z=viz.tile(images, ncols), colorscale=GREY, zmin=0, zmax=1, showscale=False,
                                hoverinfo="skip"), layout=lay)


def _cell(b: int, i: int, ncols: int, side: int = SIDE, gap: int = 1) -> tuple[int, int]:
    """(x, y) of pixel i of image b in the tiled array."""
    r, c = divmod(b, ncols)
    pr, pc = divmod(i, side)
    return gap + c * (side + gap) + pc, gap + r * (side + gap) + pr


# ---- what the figures read ----------------------------------------------------------------------

@torch.no_grad()
def pixel_nll(trainer: ARTrainer, idx: Sequence[int]) -> dict[str, Any]:
    """-log p(x_i | the pixels before it) of every pixel of the test digits ``idx``, under the first
    ordering of the current model (a mixture of orderings has no per-pixel split)."""
    x = trainer.test_x[list(idx)]
    nll = -trainer.model.cond_log_probs(x, 0)
    return {"x": (x.float() / (trainer.levels - 1)).cpu().numpy(), "nll": nll.cpu().numpy(),
            "labels": trainer.test_y[list(idx)].cpu().numpy(), "idx": list(idx)}


def dependency_data(trainer: ARTrainer, k: int = 0) -> dict[str, Any]:
    """The dependency matrix of ordering k of the current model (``ARTrainer.dependency``), its positions."""
    return {"dep": trainer.dependency(k), "pos": positions(trainer.model.order(k)).cpu().numpy(), "k": k,
            "orders": trainer.n_orders}


# ---- builders -----------------------------------------------------------------------------------

def pixel_nll_figure(d: dict[str, Any]) -> go.Figure:
    """The chosen test digits (top) and -log p of each of their pixels (below), in nats."""
    n = len(d["idx"])
    imgs, nll = d["x"].reshape(n, SIDE, SIDE), d["nll"].reshape(n, SIDE, SIDE)
    top = float(max(np.quantile(nll, 0.99), 1e-3))
    xa, ya = _image_axes((0.5, 0.98))
    xb, yb = _image_axes((0.0, 0.46), anchor="x2")
    lay = viz.layout("-log p(xᵢ | x before i) of each pixel, and their sum (nats)", 330, xaxis=xa, yaxis=ya,
                     xaxis2=dict(xb, anchor="y2"), yaxis2=dict(yb, anchor="x2"))
    lay["margin"] = dict(l=10, r=10, t=40, b=10)
    w = SIDE + 1
    lay["annotations"] = [dict(x=1 + i * w + (SIDE - 1) / 2, y=0.5, xref="x", yref="paper", showarrow=False,
                               text=f"{d['nll'][i].sum():.1f}",
                               font=dict(size=11), yanchor="middle") for i in range(n)]
    return go.Figure([go.Heatmap(z=viz.tile(imgs, n), colorscale=GREY, zmin=0, zmax=1, showscale=False, hoverinfo="skip"),
                      go.Heatmap(z=viz.tile(nll, n, fill=np.nan), xaxis="x2", yaxis="y2", colorscale="YlOrRd", zmin=0, zmax=top,
                                 colorbar=dict(title="nats", thickness=10, len=0.45, y=0.23),
                                 hovertemplate="%{z:.2f} nats<extra></extra>")], layout=lay)


def dependency_figure(dep: np.ndarray, pos: np.ndarray, pixel: int) -> go.Figure:
    """Which inputs conditional ``pixel`` depends on, as an 8x8 map: the step of each pixel written in it."""
    g, earlier = dep[pixel], pos < pos[pixel]
    seen = earlier & (g > 0)
    z = np.full(g.shape, 0.7)  # later pixels
    if seen.any():
        lg = np.log10(g[seen])
        span = max(float(lg.max() - lg.min()), 1e-9)
        z[seen] = 0.15 + 0.45 * (lg - lg.min()) / span
    z[earlier & ~seen] = 0.8
    z[(~earlier) & (g > 0)] = 1.0  # a violation: never expected
    z[pixel] = 0.9
    scale = [[0, "#deebf7"], [0.6, SEEN], [0.6, LATER], [0.75, LATER], [0.75, BLIND], [0.85, BLIND], [0.85, SELF],
             [0.95, SELF], [0.95, WRONG], [1, WRONG]]
    text = (pos + 1).reshape(SIDE, SIDE).astype(str)
    r, c = divmod(pixel, SIDE)
    lay = viz.layout(f"Inputs of the conditional of pixel (row {r}, col {c})", 330,
                     xaxis=dict(showgrid=False, zeroline=False, dtick=1, constrain="domain"),
                     yaxis=dict(showgrid=False, zeroline=False, dtick=1, autorange="reversed", scaleanchor="x",
                                constrain="domain"))
    lay["legend"] = dict(orientation="v", x=1.02, y=1, font=dict(size=11))
    fig = go.Figure(go.Heatmap(z=z.reshape(SIDE, SIDE), text=text, texttemplate="%{text}", zmin=0, zmax=1,
                               colorscale=scale, showscale=False, hoverinfo="skip", xgap=1, ygap=1,
                               textfont=dict(size=9, color="#444")), layout=lay)
    for name, color in (("seen (darker: larger gradient)", SEEN), ("earlier, not seen: blind spot", BLIND),
                        ("later: must not be seen", LATER), ("this pixel", SELF)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol="square", size=11, color=color)))
    return fig


def matrix_figure(dep: np.ndarray, pos: np.ndarray) -> go.Figure:
    """Every conditional's gradients with respect to every input, both in the ordering's steps: an
    autoregressive model may only fill the triangle above the diagonal (input step < output step);
    holes in it are blind spots."""
    order = np.argsort(pos)
    m = dep[np.ix_(order, order)]
    with np.errstate(divide="ignore"):
        z = np.where(m > 0, np.log10(np.where(m > 0, m, 1.0)), np.nan)
    later, blind, pairs = dependency_counts(dep, pos)
    d = len(pos)
    lay = viz.layout(f"All pairs: {later} later inputs used, {blind:,} of {pairs:,} earlier unseen", 330,
                     xaxis=dict(showgrid=False, zeroline=False, range=[-0.5, d - 0.5], title="input step",
                                constrain="domain"),
                     yaxis=dict(showgrid=False, zeroline=False, range=[-0.5, d - 0.5], title="output step",
                                scaleanchor="x", constrain="domain"),
                     shapes=[dict(type="line", x0=-0.5, y0=-0.5, x1=d - 0.5, y1=d - 0.5,
                                  line=dict(color=SELF, width=1, dash="dot"))])
    finite = z[np.isfinite(z)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return go.Figure(go.Heatmap(z=z, x=np.arange(d), y=np.arange(d), colorscale="Blues", zmin=lo, zmax=max(hi, lo + 1e-6),
                                colorbar=dict(title="log₁₀|∂|", thickness=10, len=0.7), hoverinfo="skip"),
                     layout=lay)


def sampling_figure(rec: dict[str, Any], cursor: int | None = None, ncols: int = 6) -> go.Figure:
    """The recorded samples with the pixels drawn before step ``cursor`` (None: all), the pixel of that step
    outlined in red in every image."""
    x, pos = rec["x"], rec["pos"]
    d = x.shape[1]
    t = d if cursor is None else max(0, min(int(cursor), d))
    shown = np.where(pos < t, x, np.nan).reshape(-1, SIDE, SIDE)
    shapes = []
    if t < d:
        for b in range(x.shape[0]):
            cx, cy = _cell(b, int(np.argmax(pos[b] == t)), ncols)
            shapes.append(dict(type="rect", x0=cx - 0.5, x1=cx + 0.5, y0=cy - 0.5, y1=cy + 0.5,
                               line=dict(color=SELF, width=2)))
    title = (f"Sampling one pixel at a time: step {t + 1} of {d}" if t < d else
             f"{x.shape[0]} samples, {d} steps each (model at step {rec['step']:,})")
    return image_grid(shown, ncols, title, height=380, shapes=shapes, bg=UNDRAWN)


def samples_figure(rec: dict[str, Any], ncols: int = 8) -> go.Figure:
    return image_grid(rec["x"].reshape(-1, SIDE, SIDE), ncols, f"{rec['n']} samples (model at step {rec['step']:,})",
                      height=380)
