"""The arena's figures: every family's samples on the same axes (plotly small multiples), and the measured
table linked to the metric curves (altair: a click on a family in the table or a legend picks it in every
chart; error bars span the seeds)."""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dgm.arena.run import QUALITY_LEVEL
from dgm.core import viz

SIDE = 8
CURVES = ("precision", "recall", "coverage", "mmd", "digits_fid", "nll")  # the curves' metrics, where measured
COLUMNS = {"likelihood": "likelihood", "nll": "NLL (nats)", "precision": "precision", "recall": "recall",
           "density": "density", "coverage": "coverage", "mmd": "MMD²", "w1": "W1", "modes": "modes",
           "digits_fid": "Digits-FID", "digits_is": "Digits-IS", "samples_per_s": "samples/s", "latent": "latent size",
           "seconds_to_quality": "s to quality", "steps": "steps", "train_s": "train s"}


def snapshot(trainer) -> dict[str, Any]:
    a = trainer.arena
    data = None if a.images else a.real[:500].numpy()
    shown: dict[str, list[np.ndarray]] = {}
    for e in a.entrants:
        if e.shown is not None:
            shown.setdefault(e.family, []).append(e.shown)
    return {"data": data, "box": None if a.images else a.dist.box, "images": a.images, "shown": shown,
            "families": list(dict.fromkeys(e.family for e in a.entrants)), "rows": a.rows(), "table": a.table(),
            "step": a.iteration, "budget": trainer.config.budget, "seeds": trainer.config.seeds,
            "limit": str(trainer.config.limit), "timed": trainer.config.unit == "seconds",
            "measured": a.done_rounds, "measures": a.rounds}


def small_multiples(s: dict[str, Any], height: int = 260) -> go.Figure:
    """Each family's samples (its first seed, 500 points from its last measurement) side by side on the same
    axes, over the data (black, faint), with the share that falls outside them; the digits as 8 images each. Families
    not measured yet show an empty panel."""
    fams = s["families"]
    n = max(len(fams), 1)
    gap = 0.015
    width = (1 - gap * (n - 1)) / n
    traces, layout, notes = [], {}, []
    for j, fam in enumerate(fams):
        ax = "" if j == 0 else str(j + 1)
        x = s["shown"].get(fam, [None])[0]
        label = fam
        if s["images"]:
            if x is not None:
                img = np.concatenate([np.concatenate(list(x[r * 4:(r + 1) * 4].reshape(-1, SIDE, SIDE)), 1)
                                      for r in range(max(1, len(x) // 4))], 0)
                traces.append(go.Heatmap(z=img[::-1], colorscale="Greys", zmin=0, zmax=1, showscale=False,
                                         xaxis=f"x{ax}", yaxis=f"y{ax}", hoverinfo="skip"))
            rng_x, rng_y = [-0.5, 4 * SIDE - 0.5], [-0.5, 2 * SIDE - 0.5]
        else:
            if s["data"] is not None:
                traces.append(go.Scatter(x=s["data"][:, 0], y=s["data"][:, 1], mode="markers", xaxis=f"x{ax}",
                                         yaxis=f"y{ax}", marker=dict(size=3, color=viz.DATA_COLOR, opacity=0.25),
                                         showlegend=False, hoverinfo="skip"))
            if x is not None:
                traces.append(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", xaxis=f"x{ax}", yaxis=f"y{ax}",
                                         marker=dict(size=3, color=viz.PALETTE[j % len(viz.PALETTE)], opacity=0.6),
                                         showlegend=False, hoverinfo="skip"))
            xmin, xmax, ymin, ymax = s["box"]
            rng_x, rng_y = [xmin, xmax], [ymin, ymax]
            if x is not None:
                out = ~((x[:, 0] >= xmin) & (x[:, 0] <= xmax) & (x[:, 1] >= ymin) & (x[:, 1] <= ymax))
                label = fam + (f" ({out.mean():.0%} outside)" if out.any() else "")
        x0 = j * (width + gap)
        layout[f"xaxis{ax}"] = dict(domain=[x0, x0 + width], range=rng_x, showticklabels=False, zeroline=False)
        layout[f"yaxis{ax}"] = dict(range=rng_y, showticklabels=False, zeroline=False, scaleanchor=f"x{ax}")
        notes.append(dict(text=label, x=x0 + width / 2, y=1.0, xref="paper", yref="paper", xanchor="center",
                          yanchor="bottom", showarrow=False))
    fig = go.Figure(traces)
    fig.update_layout(**layout, annotations=notes, height=height, margin=dict(l=10, r=10, t=60, b=10),
                      title=_title(s))
    return fig


def _title(s: dict[str, Any]) -> str:
    if s.get("timed"):  # a seconds budget: the measurements are the run's clock
        return f"Samples at measurement {s['measured']} of {s['measures']} ({s['limit']} per family)"
    return f"Samples at step {s['step']:,} of {s['budget']:,}"


def table_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured table, with readable column names and rounded figures, every row with the same columns in
    the same order ("—" where a family has no figure)."""
    out = []
    for r in s["table"]:
        row: dict[str, Any] = {"family": r["family"]}
        if "skipped" in r:
            row["likelihood"] = f"skipped: {r['skipped']}"
            out.append(row)
            continue
        for k, label in COLUMNS.items():
            if k not in r:
                continue
            v = r[k]
            if v is None:
                v = "none" if k == "latent" else "—"
            elif isinstance(v, int):
                v = f"{v:,}"
            elif isinstance(v, float):
                sd = r.get(f"{k}_sd")
                v = f"{v:.3g}" + (f" ± {sd:.2g}" if sd is not None and math.isfinite(sd) else "")
            row[label] = v
        out.append(row)
    cols = ["family", *(c for c in COLUMNS.values() if any(c in r for r in out))]  # one order for every row
    return [{c: r.get(c, "—") for c in cols} for r in out]


def _long(rows: list[dict[str, Any]]) -> pd.DataFrame:
    recs = [{"family": r["family"], "seed": r["seed"], "step": r["step"], "seconds": r["seconds"], "metric": m,
             "value": r[m]} for r in rows for m in CURVES if m in r and r[m] is not None and math.isfinite(r[m])]
    return pd.DataFrame(recs, columns=["family", "seed", "step", "seconds", "metric", "value"])


TABLE_COLUMNS = ("likelihood", "NLL (nats)", "precision", "recall", "coverage", "samples/s", "latent size")


def _table_chart(s: dict[str, Any], pick, color, opacity) -> alt.LayerChart:
    """The measured table drawn by altair, so that a click on a family's row picks it in the charts below."""
    cells = [{"family": r["family"], "column": c, "text": str(r.get(c, "—"))}
             for r in table_rows(s) for c in ("family", *TABLE_COLUMNS)]
    base = alt.Chart(pd.DataFrame(cells)).encode(
        y=alt.Y("family:N", sort=s["families"], axis=None),
        x=alt.X("column:N", sort=["family", *TABLE_COLUMNS], axis=alt.Axis(orient="top", title=None, labelAngle=0)))
    rows = base.mark_rect(color="#f4f4f4", stroke="white").encode(opacity=opacity).add_params(pick)
    text = base.mark_text(fontSize=11).encode(text="text:N", color=alt.condition(
        "datum.column == 'family'", color, alt.value("#222")))
    return (rows + text).properties(width=820, height=24 * max(len(s["families"]), 1),
                                    title="the table (click a family: it is picked in every chart)")


def linked_charts(s: dict[str, Any]) -> alt.VConcatChart:
    """The measured table; precision against recall (one point per family, the mean over the seeds with an error
    bar spanning them); the curves of each metric against steps and against training seconds, one facet per
    metric. One selection (click a family's row, a point or a legend entry) picks it in every chart."""
    df = _long(s["rows"])
    # clicks on the table's rows and the points pick too (a legend-bound selection ignores them unless told), a
    # double click clears; the selection lives in the views that draw a family: the table's rows and the points
    pick = alt.selection_point(fields=["family"], bind="legend", on="click", clear="dblclick")
    fams = s["families"]  # the small multiples' colours, in the same order
    color = alt.Color("family:N", legend=alt.Legend(orient="top"),
                      scale=alt.Scale(domain=fams, range=[viz.PALETTE[j % len(viz.PALETTE)] for j in range(len(fams))]))
    opacity = alt.condition(pick, alt.value(1.0), alt.value(0.15))
    last = df.sort_values("step").groupby(["family", "seed", "metric"]).tail(1)
    pr = last[last.metric.isin(["precision", "recall"])].pivot_table(index=["family", "seed"], columns="metric",
                                                                   values="value").reset_index()
    if pr.empty or not {"precision", "recall"} <= set(pr.columns):
        pr = pd.DataFrame({"family": pd.Series(dtype=str), "seed": pd.Series(dtype=int),
                           "precision": pd.Series(dtype=float), "recall": pd.Series(dtype=float)})
    base = alt.Chart(pr)
    scatter = base.mark_point(size=90, filled=True).encode(
        x=alt.X("mean(recall):Q", scale=alt.Scale(domain=[0, 1]), title="recall (data near a sample)"),
        y=alt.Y("mean(precision):Q", scale=alt.Scale(domain=[0, 1]), title="precision (samples near the data)"),
        color=color, opacity=opacity, tooltip=["family", "mean(precision):Q", "mean(recall):Q"]).add_params(pick)
    bars = base.mark_errorbar(extent="stdev").encode(x="recall:Q", y="precision:Q", color=color, opacity=opacity)
    level = alt.Chart(pd.DataFrame({"v": [QUALITY_LEVEL]})).mark_rule(strokeDash=[4, 4], color="grey")
    pr_chart = (scatter + bars.transform_filter("datum.recall != null") + level.encode(x="v:Q") + level.encode(y="v:Q")
                ).properties(width=260, height=220, title="precision vs recall (last measurement)")

    def facets(layers: alt.LayerChart) -> alt.FacetChart:
        return layers.properties(width=170, height=130).facet(
            column=alt.Column("metric:N", title=None, sort=list(CURVES))).resolve_scale(y="independent")

    # against steps: the mean over the seeds, a band spanning them (the seeds share their steps)
    line = alt.Chart().mark_line(point=True).encode(x=alt.X("step:Q", title="steps (each family)"),
                                                    y=alt.Y("mean(value):Q", title=None), color=color, opacity=opacity)
    band = alt.Chart().mark_errorband(extent="stdev").encode(x="step:Q", y=alt.Y("value:Q", title=None), color=color)
    # against training seconds: one line per seed (each seed has its own clock)
    timed = alt.Chart().mark_line(point=True).encode(x=alt.X("seconds:Q", title="training seconds"),
                                                     y=alt.Y("value:Q", title=None), detail="seed:N", color=color,
                                                     opacity=opacity)
    return alt.vconcat(_table_chart(s, pick, color, opacity), pr_chart, facets(alt.layer(band, line, data=df)),
                       facets(alt.layer(timed, data=df)))


def figures(trainer) -> viz.Figures:
    s = snapshot(trainer)
    return viz.Figures({"samples": lambda: small_multiples(s)})
