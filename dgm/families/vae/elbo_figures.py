"""VAE figures of the ELBO taken apart: the bound and its terms against steps, KL per latent dimension,
IWAE(k), the ELBO surgery, and the variance of the gradient estimators."""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

from dgm.core import viz
from dgm.core.viz import subscript
from dgm.families.vae.model import gradient_variance as _gradient_variance
from dgm.families.vae.trainer import VAETrainer

_layout = viz.base_layout


def _curves(rows: list[dict], keys: Sequence[str], *, title: str, labels: dict, colors: dict | None = None,
            hlines: dict[str, float] | None = None, height: int = 300, schedule: str | None = None) -> go.Figure:
    return viz.curves(rows, keys, title=title, labels=labels, colors=colors, hlines=hlines, height=height,
                      x_title=viz.evaluated(schedule))


def elbo_curves(rows: list[dict], entropy: float | None = None, unit: str = "nats per example",
                schedule: str | None = None) -> go.Figure:
    hl = {"−H(p): the best possible": -entropy} if entropy is not None else None
    fig = _curves(rows, ["train_elbo", "val_elbo", "elbo"], title=f"ELBO ({unit}): train vs validation",
                     labels={"train_elbo": "train ELBO (current)", "val_elbo": "validation ELBO (current)",
                             "elbo": "test ELBO (best checkpoint)"},
                     colors={"train_elbo": viz.PALETTE[1], "val_elbo": viz.PALETTE[0], "elbo": "#555"}, hlines=hl,
                     schedule=schedule)
    for tr in fig.data:
        if tr.name.startswith("test"):
            tr.line.dash = "dash"
            tr.line.width = 1.5
    return fig


def terms_curves(rows: list[dict], schedule: str | None = None) -> go.Figure:
    fig = _curves(rows, ["val_recon", "val_kl"], title="Validation: reconstruction term and KL term (nats)",
                     labels={"val_recon": "E_q log p(x|z)", "val_kl": "KL(q(z|x) ‖ p(z))"}, schedule=schedule)
    for tr in fig.data:
        if tr.name.startswith("KL"):
            tr.yaxis = "y2"
    fig.update_layout(yaxis=dict(title="reconstruction"),
                      yaxis2=dict(title="KL", overlaying="y", side="right", showgrid=False, rangemode="tozero"))
    return fig


def kl_per_dim(s: dict[str, Any], threshold: float = 0.01, standard: bool = True) -> go.Figure:
    """KL to N(0,1) per latent dimension, coloured by whether the unit is active."""
    a = s["analysis"]
    fig = go.Figure()
    if not a:
        return _layout(fig, "KL per dimension (after the first evaluation)", 260)
    kl, act = a["kl_dim"], a["activity"]
    active = act > threshold
    dims = [f"z{subscript(i + 1)}" for i in range(len(kl))]
    fig.add_trace(go.Bar(x=dims, y=kl, marker_color=[viz.PALETTE[1] if x else "#bbbbbb" for x in active],
                         text=[f"{v:.2f}" for v in kl], textposition="outside", cliponaxis=False,
                         hovertext=[f"Cov_x(E_q z) = {v:.3f}" for v in act], name="KL"))
    what = "KL per dim" if standard else "KL to N(0,1) per dim"
    _layout(fig, f"{what}: {int(active.sum())} of {len(kl)} units active", 280)
    fig.update_yaxes(title="nats", rangemode="tozero")
    return fig


def iwae_vs_k(s: dict[str, Any], unit: str = "nats per example") -> go.Figure:
    a = s["analysis"]
    fig = go.Figure()
    if a:
        ks, vals = zip(*sorted(a["iwae_curve"].items()))
        fig.add_trace(go.Scatter(x=ks, y=vals, mode="lines+markers", name="IWAE(k)", line=dict(color=viz.PALETTE[3])))
        fig.add_hline(y=vals[0], line=dict(color="#888", dash="dot", width=1), annotation_text="k = 1: the ELBO",
                      annotation_position="bottom right")
    _layout(fig, "IWAE(k) bound vs k (test subset)", 280)
    fig.update_xaxes(type="log", title="importance samples k", tickvals=list(a["iwae_curve"]) if a else None)
    fig.update_yaxes(title=unit)
    return fig


def surgery(s: dict[str, Any]) -> go.Figure:
    """Average KL = marginal KL(q(z) ‖ p(z)) + mutual information I(x; z)."""
    a = s["analysis"]
    fig = go.Figure()
    if a:
        sg = a["surgery"]
        bars = (("split", sg["mi"], f"I(x;z) {sg['mi']:.2f}", viz.PALETTE[1]),
                ("split", sg["marginal_kl"], f"KL(q(z)‖p(z)) {sg['marginal_kl']:.2f}", viz.PALETTE[0]),
                ("average KL", sg["kl_avg"], f"{sg['kl_avg']:.2f}", "#777"))
        for y, x, text, color in bars:
            fig.add_trace(go.Bar(y=[y], x=[x], orientation="h", text=[text], textposition="inside",
                                 insidetextanchor="middle", marker_color=color, showlegend=False, name=text,
                                 textfont=dict(color="white")))
        fig.add_vline(x=sg["log_n"], line=dict(color="#555", dash="dash", width=1),
                      annotation_text=f"log N = {sg['log_n']:.2f}", annotation_position="top left")
    _layout(fig, "ELBO surgery: KL = I(x;z) + marginal KL", 280)
    fig.update_xaxes(title="nats per example", rangemode="tozero")
    fig.update_layout(barmode="stack", margin=dict(t=60))
    return fig


def gradient_variance(result: dict[str, dict[str, float]]) -> go.Figure:
    names = list(result)
    var = [result[n]["variance"] for n in names]
    snr = [result[n]["snr"] for n in names]
    fig = go.Figure(go.Bar(x=names, y=var, marker_color=[viz.PALETTE[1], viz.PALETTE[0], viz.PALETTE[4]][: len(names)],
                           text=[f"{v:.3g}<br>SNR {r:.2g}" for v, r in zip(var, snr)], textposition="outside",
                           cliponaxis=False))
    _layout(fig, "Variance of the encoder's ELBO gradient (one sample per data point)", 320)
    fig.update_yaxes(type="log", title="total variance (sum over parameters)")
    return fig



def gradient_panel(trainer: VAETrainer, repeats: int = 64, batch: int = 64) -> dict[str, dict[str, float]]:
    """The gradient-estimator comparison on the current model and a fixed validation batch."""
    x = trainer.val_x[:batch]
    return _gradient_variance(trainer.model, x, trainer.eval_generator(6), repeats)
