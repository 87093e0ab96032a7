"""Pure figure builders: data in, plotly figure out (never displayed here).

The same builders serve the pages, the CLI's ``--png`` output and the screenshot tests. They use
SVG traces only (no WebGL), so screenshots are stable. This module holds the shared pieces (planes,
heatmaps, points, ellipses, curves, presenter styling, PNG export); each model family keeps its own
figures in ``dgm/viz/<family>.py``.
"""

from __future__ import annotations

import re

import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Iterable, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core.metrics import Grid

#: a qualitative palette with enough contrast on a light heatmap
PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b", "#bcbd22"]
DATA_COLOR = "#222222"
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=12)


def subscript(i: int) -> str:
    """A whole number in Unicode subscript digits (z₁₂)."""
    return "".join("₀₁₂₃₄₅₆₇₈₉"[int(c)] for c in str(i))


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


class Figures(Mapping):
    """Named figures, each built on first access.

    A live page draws some figures every frame and others once a second (``dgm.ui.view.View``), so
    it builds only those it draws; iterating (the CLI's ``--png``, the export zip) builds them all."""

    def __init__(self, builders: dict[str, Callable[[], go.Figure]]):
        self._builders = builders
        self._built: dict[str, go.Figure] = {}

    def __getitem__(self, name: str) -> go.Figure:
        if name not in self._built:
            self._built[name] = self._builders[name]()
        return self._built[name]

    def __contains__(self, name: object) -> bool:  # without building (Mapping's would build it)
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


_AXIS = dict(gridcolor="#ebf0f8", zerolinecolor="#dfe6f2", linecolor="#ebf0f8", automargin=True)


def base_layout(fig: go.Figure, title: str | None = None, height: int = 380) -> go.Figure:
    """The shared look (white, light grid, compact margins) on an existing figure, on every pair of
    axes it has. A figure built from scratch is cheaper made with ``layout`` (one validation)."""
    shared = layout(title, height)
    del shared["xaxis"], shared["yaxis"]
    fig.update_layout(**shared)
    fig.update_xaxes(**_AXIS)
    fig.update_yaxes(**_AXIS)
    return fig


def layout(title: str | None = None, height: int = 380, *, xaxis: dict | None = None, yaxis: dict | None = None,
           **extra) -> dict:
    """The shared look for a figure with one pair of axes, as a layout dict to build the figure with:
    a layout given in one piece is validated once, where each update_layout or update_axes call
    afterwards costs several ms. ``xaxis``, ``yaxis`` and ``extra`` add to it."""
    return dict(title=dict(text=title, x=0.02, xanchor="left", font=dict(size=14)) if title else None,
                height=height, margin=dict(l=40, r=10, t=40 if title else 10, b=35), font=FONT,
                paper_bgcolor="white", plot_bgcolor="white", colorway=PALETTE, hovermode="closest",
                legend=dict(orientation="h", y=-0.12, x=0, font=dict(size=11)),
                xaxis=dict(_AXIS, **(xaxis or {})), yaxis=dict(_AXIS, **(yaxis or {})), **extra)


def tile(images: np.ndarray, ncols: int, gap: int = 1, fill: float = 0.3) -> np.ndarray:
    """(N, h, w) images -> one (rows*(h+gap)+gap, ncols*(w+gap)+gap) array, row-major, the lines between the
    tiles ``fill`` (a grey level; NaN: not drawn), for one greyscale heatmap of many small images."""
    n, h, w = images.shape
    nrows = max(1, math.ceil(n / ncols))
    out = np.full((nrows * (h + gap) + gap, ncols * (w + gap) + gap), fill, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = images[i]
    return out


def plane(box, title: str | None = None, height: int = 380) -> go.Figure:
    """An empty 2D plane over ``box`` with equal aspect."""
    xmin, xmax, ymin, ymax = box
    ax = dict(constrain="domain", showgrid=False, zeroline=False)
    return go.Figure(layout=layout(title, height, xaxis=dict(ax, range=[xmin, xmax]),
                                   yaxis=dict(ax, range=[ymin, ymax], scaleanchor="x", scaleratio=1)))


def follow(fig: go.Figure, box, points, *, what: str = "samples", keep: float = 0.98, most: float = 2.0) -> go.Figure:
    """Keep ``points`` in sight on a plane over ``box``: where more than 1 - ``keep`` of them lie outside it,
    the view grows (equal aspect kept) to hold ``keep`` of them, by at most ``most`` times the box's span on
    each side; whatever is still outside is named in a note on the plot with its directions ("12% of samples
    outside → ↑"). Points that are not finite count as outside in no direction."""
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    pts = _np(points).reshape(-1, 2).astype(np.float64)
    if len(pts) == 0:
        return fig
    fin = np.isfinite(pts).all(axis=1)
    p = pts[fin]
    if len(p) and ((p[:, 0] < xmin) | (p[:, 0] > xmax) | (p[:, 1] < ymin) | (p[:, 1] > ymax)).mean() > 1 - keep:
        lo, hi = np.quantile(p, (1 - keep) / 2, axis=0), np.quantile(p, 1 - (1 - keep) / 2, axis=0)
        w, h = xmax - xmin, ymax - ymin
        pad = 0.05 * max(w, h)
        xmin, xmax = max(min(xmin, lo[0] - pad), xmin - most * w), min(max(xmax, hi[0] + pad), xmax + most * w)
        ymin, ymax = max(min(ymin, lo[1] - pad), ymin - most * h), min(max(ymax, hi[1] + pad), ymax + most * h)
        fig.layout.xaxis.range, fig.layout.yaxis.range = [xmin, xmax], [ymin, ymax]
    out = ~fin | (pts[:, 0] < xmin) | (pts[:, 0] > xmax) | (pts[:, 1] < ymin) | (pts[:, 1] > ymax)
    if out.any():
        where = [side for side, m in (("←", pts[fin, 0] < xmin), ("→", pts[fin, 0] > xmax),
                                      ("↓", pts[fin, 1] < ymin), ("↑", pts[fin, 1] > ymax)) if m.mean() > 0.005]
        frac = out.mean()
        share = f"{frac:.0%}" if frac >= 0.01 else "<1%"
        fig.add_annotation(text=f"{share} of {what} outside {' '.join(where)}".rstrip(),
                           xref="paper", yref="paper", x=0.5, y=0.98, xanchor="center", yanchor="top",
                           showarrow=False, bgcolor="rgba(255,255,255,0.85)", bordercolor="#d62728",
                           font=dict(color="#d62728"), name="outside")
    return fig


def add_heatmap(fig: go.Figure, grid: Grid, values, *, colorscale="Blues", name="density", showscale=False,
                zmin=None, zmax=None, colorbar_title=None, opacity=1.0) -> go.Figure:
    """A heatmap of per-grid-point ``values`` (R*R,) over the grid's box."""
    z = grid.image(torch.as_tensor(values)).detach().cpu().numpy()
    fig.add_trace(go.Heatmap(x=_np(grid.xs), y=_np(grid.ys), z=z, colorscale=colorscale, showscale=showscale,
                             zmin=zmin, zmax=zmax, name=name, hoverinfo="skip", opacity=opacity,
                             colorbar=dict(title=colorbar_title, thickness=10, len=0.7) if showscale else None))
    return fig


def add_contours(fig: go.Figure, grid: Grid, values, *, color="#08306b", n=6, name="contours", width=1.0) -> go.Figure:
    z = grid.image(torch.as_tensor(values)).detach().cpu().numpy()
    fig.add_trace(go.Contour(x=_np(grid.xs), y=_np(grid.ys), z=z, ncontours=n, showscale=False,
                             contours=dict(coloring="none"), line=dict(color=color, width=width), name=name,
                             hoverinfo="skip", showlegend=False))
    return fig


def add_points(fig: go.Figure, x, *, name: str, color: str, size: float = 3.0, opacity: float = 0.6,
               symbol: str = "circle") -> go.Figure:
    x = _np(x)
    fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", name=name,
                             marker=dict(size=size, color=color, opacity=opacity, symbol=symbol, line=dict(width=0))))
    return fig


def ellipse_path(mean, cov, nsig: float = 2.0, n: int = 100) -> np.ndarray:
    """Points (n, 2) on the ``nsig``-standard-deviation ellipse of a 2D Gaussian."""
    mean, cov = _np(mean).astype(float), _np(cov).astype(float)
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * math.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    return mean + nsig * circle * np.sqrt(np.clip(vals, 0, None)) @ vecs.T


def add_ellipses(fig: go.Figure, mean, cov, *, color: str, name: str, nsigs: Sequence[float] = (1.0, 2.0),
                 width: float = 2.0, dash: str | None = None, showlegend: bool = True) -> go.Figure:
    for i, s in enumerate(nsigs):
        p = ellipse_path(mean, cov, s)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name=name, legendgroup=name,
                                 showlegend=showlegend and i == 0, hoverinfo="name",
                                 line=dict(color=color, width=width if i == 0 else width * 0.6, dash=dash)))
    m = _np(mean)
    fig.add_trace(go.Scatter(x=[m[0]], y=[m[1]], mode="markers", legendgroup=name, showlegend=False, name=name,
                             marker=dict(color=color, size=7, symbol="x")))
    return fig


def curves(rows: Iterable[dict], keys: Sequence[str], *, title: str | None = None, labels: dict | None = None,
           log_y: bool = False, hlines: dict[str, float] | None = None, height: int = 300,
           x: str = "step", colors: dict | None = None, x_title: str | None = None) -> go.Figure:
    """Metric curves against ``x`` from history rows (rows may lack some keys); ``x_title`` replaces the
    x axis's title (e.g. to say how often the values were evaluated)."""
    rows = list(rows)
    fig = go.Figure()
    for i, k in enumerate(keys):
        pts = [(r[x], r[k]) for r in rows if k in r and r[k] is not None and math.isfinite(r[k])]
        if not pts:
            continue
        xs, ys = zip(*pts)
        color = (colors or {}).get(k, PALETTE[i % len(PALETTE)])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=(labels or {}).get(k, k),
                                 line=dict(color=color, width=2)))
    for j, (label, y) in enumerate((hlines or {}).items()):
        fig.add_hline(y=y, line=dict(color="#555", dash="dash", width=1), annotation_text=label,
                      annotation_position="top left")
    base_layout(fig, title, height)
    fig.update_xaxes(title=dict(text=x_title or x, standoff=4))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def wrap_title(fig: go.Figure, chars: int) -> go.Figure:
    """Break a title longer than ``chars`` characters into lines at spaces (at most three), and make room
    above the plot for them: a title never runs past its figure's edge."""
    t = fig.layout.title
    text = t.text if t is not None else None
    if not text or len(text) <= chars or "<br>" in text:
        return fig
    lines, cur = [], ""
    for word in text.split(" "):
        if cur and len(cur) + 1 + len(word) > chars:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    lines.append(cur)
    if len(lines) > 3:
        lines = lines[:2] + [" ".join(lines[2:])[: chars - 1] + "…"]
    size = (t.font.size if t.font and t.font.size else None) or 14
    top = (fig.layout.margin.t if fig.layout.margin and fig.layout.margin.t is not None else 40)
    fig.update_layout(title_text="<br>".join(lines), margin_t=top + int(1.3 * size * (len(lines) - 1)))
    return fig


def tidy_axes(fig: go.Figure) -> go.Figure:
    """Readable axes: each axis makes room for its own tick labels and title (no overlap when fonts grow), and
    a log axis that spans more than a decade is labelled at powers of ten only (no 2s and 5s between)."""
    for name in [k for k in fig.layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))]:
        ax = fig.layout[name]
        ax.automargin = True
        if ax.type != "log" or ax.dtick is not None or not name.startswith("yaxis"):
            continue
        ref = "y" + name[5:]
        ys = [np.asarray(tr.y, dtype=np.float64) for tr in fig.data
              if getattr(tr, "y", None) is not None and (getattr(tr, "yaxis", None) or "y") == ref]
        ys = np.concatenate(ys) if ys else np.array([])
        ys = ys[np.isfinite(ys) & (ys > 0)]
        if len(ys) and ys.max() / ys.min() >= 10:
            ax.dtick = 1
    return fig


#: in presenter mode a figure is at most this tall, so that a 1280x720 projector shows a page's main figure whole
PRESENTER_HEIGHT = 420


def evaluated(schedule: str | None, what: str = "") -> str:
    """The x-axis title of a curve of evaluated metrics (``what``, e.g. "held-out NLL"): how often they were
    evaluated (``Trainer.eval_schedule()``), in two short lines (one overflowed a third of the page at 1400 px)."""
    if not schedule:
        return "step"
    lead = f"step · {what + ' ' if what else ''}evaluated"
    m = re.fullmatch(r"at steps? (.*), then every (.*?)( steps)?", schedule)
    if m is None:
        return f"{lead}<br>{schedule}"
    steps = re.split(r", | and ", m.group(1))
    early = steps[0] if len(steps) == 1 else f"{steps[0]} … {steps[-1]}"
    return f"{lead} at {early},<br>then every {m.group(2)}"


def legend_under_axis_title(fig: go.Figure, only_below: bool = False) -> go.Figure:
    """Put a horizontal legend at the figure's bottom edge, under the x axis's title (one line or two), and make
    the bottom margin hold both: whatever the fonts (presenter mode scales them) and the top margin (a wrapped
    title widens it), they never overlap. (A legend placed at a fraction of the plot's height under it moved up
    as its own margin shrank the plot.) ``only_below``: only where the legend already is horizontal and under
    the plot. The last touch of every figure drawn, on a page (``common.plot``) and as an image (``to_image``):
    figure builders leave it to them."""
    lay = fig.layout
    leg = lay.legend
    if only_below and not (leg and leg.orientation == "h" and ((leg.y or 0) < 0 or leg.yref == "container")
                           and lay.xaxis and lay.xaxis.title and lay.xaxis.title.text):
        return fig
    size = (lay.font.size if lay.font and lay.font.size else None) or FONT["size"]
    text = lay.xaxis.title.text if lay.xaxis and lay.xaxis.title else None
    lines = 1 + text.count("<br>") if text else 0
    below = int(2 * size + 6 + 1.4 * size * lines + 6)  # tick labels, standoff, the title's lines, a gap
    names = [tr.name for tr in fig.data if tr.showlegend is not False and tr.name]
    leg_size = (leg.font.size if leg and leg.font and leg.font.size else None) or 11
    rows = 0
    if len(names) > 1 or (names and lay.showlegend):  # the rows the entries wrap to on a chart ~300 px wide
        rows = min(len(names), math.ceil(sum(0.6 * leg_size * len(n) + 40 for n in names) / 300))
    fig.update_layout(legend=dict(yref="container", y=0, yanchor="bottom"),
                      margin_b=below + int(rows * 1.7 * leg_size) + 4)
    return fig


def presenter(fig: go.Figure, scale: float = 1.5) -> go.Figure:
    """Projector style: larger fonts (legends too), thicker lines and bigger markers, ``follow``'s note in
    its short form; at most ``PRESENTER_HEIGHT`` tall."""
    fig.update_layout(font=dict(size=int(FONT["size"] * scale)))
    if fig.layout.title and fig.layout.title.text:
        fig.update_layout(title_font_size=int(14 * scale))
    for tr in fig.data:
        if getattr(tr, "line", None) is not None and tr.line.width:
            tr.line.width = tr.line.width * scale
        if isinstance(tr, go.Scatter) and tr.marker is not None and tr.marker.size is not None:
            try:
                tr.marker.size = float(tr.marker.size) * scale
            except TypeError:
                pass
    for note in fig.layout.annotations or ():
        if note.name == "outside":  # follow's note, its short form ("12% outside → ↑"): at the larger font
            note.text = re.sub(r"^(\S+) of .+? outside", r"\1 outside", note.text)  # it reached the tick labels
    legend = fig.layout.legend
    fig.update_layout(legend_font_size=int(((legend.font.size if legend and legend.font else None) or 11) * scale),
                      height=min(int(fig.layout.height or 380), PRESENTER_HEIGHT))
    return fig


_KALEIDO_LOCK = threading.Lock()
_KALEIDO_STARTED = False


def _kaleido_server() -> None:
    """Keep one headless Chromium for all exports of this process (0.1 s an image instead of 2 s)."""
    global _KALEIDO_STARTED
    if not _KALEIDO_STARTED:
        import kaleido

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kaleido.start_sync_server(silence_warnings=True)
        _KALEIDO_STARTED = True


def to_image(fig, fmt: str = "png", width: int = 700, height: int | None = None, scale: float = 2.0) -> bytes:
    """A plotly figure (through kaleido, which drives Chromium) or an altair chart (through
    vl-convert) as PNG or SVG bytes."""
    if isinstance(fig, go.Figure):
        fig = legend_under_axis_title(go.Figure(fig), only_below=True)  # as a page draws it (common.plot)
        with _KALEIDO_LOCK:
            _kaleido_server()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fig.to_image(format=fmt, width=width, height=height or fig.layout.height or 400,
                                    scale=scale if fmt == "png" else 1)
    import vl_convert as vlc

    spec = fig.to_json()
    return vlc.vegalite_to_png(spec, scale=scale) if fmt == "png" else vlc.vegalite_to_svg(spec).encode()


def write_png(fig, path: str, width: int = 700, height: int | None = None, scale: float = 2.0) -> None:
    with open(path, "wb") as f:
        f.write(to_image(fig, "png", width, height, scale))
