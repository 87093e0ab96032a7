"""Figures of the many-seeds view: every run's samples as small multiples on the same axes, the runs'
mode counts against steps, and the per-run table. ``snapshot(batch)`` takes what they need."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dgm.core import viz
from dgm.families.gan.figures import FAKE_COLOR, REAL_COLOR
from dgm.families.gan.seeds import GANSeeds

#: the per-run table's columns: (key in the run's metrics, header, format)
COLUMNS = (("modes", "modes", "{:.0f}"), ("high_quality", "high quality", "{:.1%}"), ("mmd", "MMD²", "{:.2e}"),
           ("w1", "W1", "{:.3f}"), ("js", "JS (nats)", "{:.3f}"))


def snapshot(batch: GANSeeds, n_points: int = 400) -> dict[str, Any]:
    """Each run's samples and latest metrics, the data, and the summary (nothing in the batch changes)."""
    return {
        "iteration": batch.iteration,
        "seeds": list(batch.seeds),
        "samples": batch.samples(n_points).cpu().numpy(),  # (K, n, 2)
        "real": batch.runs[0].real_eval[:n_points].cpu().numpy(),
        "centers": None if batch.data.centers is None else batch.data.centers.cpu().numpy(),
        "box": batch.data.box,
        "evals": [dict(r.latest_eval) for r in batch.runs],
        "histories": [[(e["step"], e.get("modes")) for e in r.history.evals] for r in batch.runs],
        "diverged": dict(batch.diverged),
        "summary": batch.summary(),
    }


def _grid(k: int) -> tuple[int, int]:
    cols = min(4, k) if k > 4 else k
    return math.ceil(k / cols), cols


def run_title(snap: dict[str, Any], k: int) -> str:
    seed, ev = snap["seeds"][k], snap["evals"][k]
    if k in snap["diverged"]:
        return f"seed {seed}: diverged at step {snap['diverged'][k]:,}"
    if "modes" in ev and snap["centers"] is not None:
        return f"seed {seed}: {ev['modes']:.0f}/{len(snap['centers'])} modes, {ev['high_quality']:.0%} HQ"
    return f"seed {seed}"


def small_multiples(snap: dict[str, Any], height_per_row: int = 190) -> go.Figure:
    """Every run's generated points (orange) over the data (black, faint), on the same axes."""
    k = len(snap["seeds"])
    rows, cols = _grid(k)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[run_title(snap, i) for i in range(k)],
                        horizontal_spacing=0.03, vertical_spacing=0.09 if rows > 1 else 0.05)
    xmin, xmax, ymin, ymax = snap["box"]
    real = snap["real"]
    for i in range(k):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=real[:, 0], y=real[:, 1], mode="markers", name="data", showlegend=False,
                                 marker=dict(size=3, color=REAL_COLOR, opacity=0.12)), r, c)
        pts = snap["samples"][i]
        pts = pts[np.isfinite(pts).all(1)]
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name="G's samples", showlegend=False,
                                 marker=dict(size=3, color=FAKE_COLOR, opacity=0.7)), r, c)
        fig.update_xaxes(range=[xmin, xmax], showticklabels=False, showgrid=False, zeroline=False, row=r, col=c)
        fig.update_yaxes(range=[ymin, ymax], showticklabels=False, showgrid=False, zeroline=False,
                         scaleanchor=f"x{i + 1 if i else ''}", row=r, col=c)
    fig.update_annotations(font_size=11)
    viz.base_layout(fig, f"{k} seeds, same settings, iteration {snap['iteration']:,}", height=60 + rows * height_per_row)
    fig.update_layout(margin=dict(t=70))
    return fig


def modes_curves(snap: dict[str, Any]) -> go.Figure:
    """Each run's captured modes against steps (one line per seed): where the runs part ways."""
    fig = go.Figure()
    for k, hist in enumerate(snap["histories"]):
        pts = [(s, m) for s, m in hist if m is not None]
        if pts:
            x, y = zip(*pts)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"seed {snap['seeds'][k]}",
                                     line=dict(width=1.5), marker=dict(size=4)))
    viz.base_layout(fig, "Captured modes per seed", height=300)
    top = len(snap["centers"]) if snap["centers"] is not None else None
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1, font=dict(size=10)),
                      xaxis_title="iteration (at the evaluations)", yaxis=dict(title="modes", range=[-0.3, top + 0.5] if top else None))
    return fig


def table_rows(snap: dict[str, Any]) -> list[dict[str, str]]:
    """The per-run table: one row per seed, each metric formatted."""
    rows = []
    for k, ev in enumerate(snap["evals"]):
        row = {"seed": str(snap["seeds"][k])}
        for key, head, fmt in COLUMNS:
            row[head] = fmt.format(ev[key]) if key in ev and math.isfinite(ev[key]) else "—"
        row["status"] = f"diverged at {snap['diverged'][k]:,}" if k in snap["diverged"] else "training"
        rows.append(row)
    return rows


def summary_text(snap: dict[str, Any]) -> str:
    s, k = snap["summary"], len(snap["seeds"])
    parts = []
    if "all_modes" in s and snap["centers"] is not None:
        n = round(s["all_modes"] * k)
        parts.append(f"**{n} of {k} runs** capture all {len(snap['centers'])} modes with at least 90% of samples of "
                     "high quality")
    if "modes_median" in s:
        parts.append(f"modes: median {s['modes_median']:.1f}, range {s['modes_min']:.0f}–{s['modes_max']:.0f}")
    if "w1_median" in s:
        parts.append(f"W1: median {s['w1_median']:.3f}, range {s['w1_min']:.3f}–{s['w1_max']:.3f}")
    if s.get("diverged"):
        parts.append(f"{s['diverged']:.0f} diverged (stopped where they last stood whole)")
    return "; ".join(parts) + "." if parts else "The table fills at the first evaluation."


def figures(batch: GANSeeds) -> dict[str, go.Figure]:
    snap = snapshot(batch)
    return {"seeds": small_multiples(snap), "modes": modes_curves(snap)}
