"""The Divergences page's drawing code, restarts panel and theory text (Streamlit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dgm import config as cfglib
from dgm.divergences import LABELS, OBJECTIVES, SHORT_LABELS, restarts
from dgm.ui import common, live
from dgm.viz import divergences as vd

TIE = 1e-3  # values within this relative distance of a column's minimum count as tied for best
RESTARTS_KEY = "_divergence.restarts"  # session state: the last restarts result (no widget has this key)
REQUEST_KEY = "_divergence.restarts_requested"  # set by the button's callback
WARM_STEPS = 200  # the page opens on fitted q's

INTRO = (
    "A fixed mixture **p** and a simpler **q** (one Gaussian, or a few) fitted to it by minimising a "
    "divergence, one q per divergence, all at once. Minimising the forward KL(p‖q), which is maximum "
    "likelihood, stretches q over every mode; the reverse KL(q‖p) pulls it onto a single mode; the others "
    "fall in between. All values are exact up to a quadrature on a grid (stated below the figures); MMD is "
    "fitted from samples, as an integral probability metric would be. Press **Play** to watch, move the "
    "modes in the sidebar, or try a lesson preset."
)


def _label(o: str, alpha: float) -> str:
    return f"Amari α={alpha:g}" if o == "alpha" else LABELS[o]


def _short(o: str, alpha: float) -> str:
    return f"α={alpha:g}" if o == "alpha" else SHORT_LABELS[o]


def table_frame(table: dict[str, dict[str, float]], alpha: float) -> pd.DataFrame:
    """Rows: the q fitted by each objective; columns: every divergence between p and that q."""
    rows = list(table)
    cols = [c for c in OBJECTIVES if c in next(iter(table.values()))]
    return pd.DataFrame([[table[r][c] for c in cols] for r in rows],
                        index=[f"fit by {_short(r, alpha)}" for r in rows],
                        columns=[_short(c, alpha) for c in cols])


def styled_table(df: pd.DataFrame):
    """Column minima in green (the best q under that divergence; ties within TIE), each fit's own
    objective boxed in bold. One vectorised style pass."""
    v = df.to_numpy()
    m = v.min(0, keepdims=True)
    best = v <= m + TIE * np.abs(m) + 1e-12
    own = np.array([[r.endswith(c) for c in df.columns] for r in df.index])
    css = np.where(best, "background-color: #a6d96a; color: black;", "")
    css = np.char.add(css.astype(object).astype(str), np.where(own, "font-weight: bold; border: 2px solid #333;", ""))
    styles = pd.DataFrame(css, index=df.index, columns=df.columns)
    return df.style.format("{:.4g}").apply(lambda _: styles, axis=None)


def notes(snap: dict[str, Any], cfg) -> None:
    tgt = snap["target"]
    msg = [f"p: **{tgt['name']}**, {tgt['description']}. Quadrature: {snap['grid']}."]
    if snap["starts"] > 1:
        msg.append(f"Each objective is fitted from {snap['starts']} starts (one broad, the others narrow); the one "
                   "with the lowest value of that objective is shown.")
    if cfg.family == "mixture" and cfg.k >= tgt["modes"]:
        msg.append(f"q has {cfg.k} components for {tgt['modes']} modes: it need not choose, so the fits agree more. "
                   "Fewer components than modes forces a choice.")
    if tgt["name"] in ("ring8", "grid25") and cfg.width < 2:
        msg.append("These modes are narrower than a grid cell, so on the grid p is a few spikes: widen them "
                   "(mode width ×) or raise the resolution for smoother numbers.")
    if cfg.mc:
        msg.append(f"Reverse KL is fitted from {cfg.mc_n} reparameterised sample(s) of q per step: its curve is the "
                   "noisy estimate; the table gives its exact value on the grid.")
    st.caption(" ".join(msg))


class DivergenceView(live.View):
    """The fits over p at every frame; the values against steps, the notes, the side-by-side panels
    and the cross table about once a second while the run plays."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.snap: dict[str, Any] | None = None

    def layout(self, trainer) -> None:
        self.top = st.columns([1.25, 1])
        self.below = st.container()

    def main(self, trainer) -> Callable[[], None]:
        snap = self.snap = trainer.snapshot()

        def show() -> None:
            with self.top[0]:
                common.plot(lambda: vd.overlay(snap), key="div.overlay")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        snap, rows = self.snap or trainer.snapshot(), trainer.history.merged()

        def show() -> None:
            with self.top[1]:
                common.plot(lambda: vd.values(rows, snap["objectives"], snap["alpha"], height=440), key="div.values")
            with self.below:
                notes(snap, self.cfg)
                if snap["target"]["dim"] == 2:
                    st.markdown("**Side by side**: each objective's q alone on p (2-sd ellipses solid, 1-sd dotted; "
                                "mixture components fade with their weight), and its own value in the title.")
                else:
                    st.markdown("**Side by side**: each objective's q alone on p, and its own value in the title.")
                common.plot(lambda: vd.side_by_side(snap), key="div.side")
                st.markdown("**The cross table**: every divergence (columns) between p and each fitted q (rows). Green "
                            "marks the smallest value in each column (ties within 0.1% included); the boxed diagonal "
                            "is each fit under its own objective. When every green cell sits on the diagonal, each "
                            "fit is the best of the seven under its own objective. A green cell off the diagonal "
                            "means a fit stopped in a local optimum, or has not converged yet.")
                st.dataframe(styled_table(table_frame(snap["table"], snap["alpha"])), width="stretch")

        return show


def _fingerprint(cfg, n: int, steps: int) -> str:
    return json.dumps([cfglib.to_dict(cfg), common.seed(), n, steps], sort_keys=True, default=str)


def _request() -> None:
    st.session_state[REQUEST_KEY] = True


def restarts_panel(cfg, trainer) -> None:
    st.subheader("Restarts: where does reverse KL land?")
    st.markdown("Reverse KL has one local optimum per mode (roughly): which one a fit reaches depends on where "
                "it starts. This fits reverse KL from many random starting means at once (one batched model) and "
                "colours each start by the mode its fit ends on: the basins of attraction.")
    c1, c2, c3 = st.columns([1, 1, 1], vertical_alignment="bottom")
    n = c1.select_slider("Runs", [16, 32, 64, 128, 256], value=64, key="div.restarts_n")
    steps = c2.select_slider("Steps per run", [100, 200, 300, 600], value=300, key="div.restarts_steps")
    fp = _fingerprint(cfg, n, steps)
    # a callback, not the button's return value: the request survives a rerun of the script
    c3.button("Run the restarts", key="div.restarts_btn", width="stretch", on_click=_request)
    if st.session_state.pop(REQUEST_KEY, False):
        with st.spinner(f"Fitting reverse KL from {n} starts…"):
            st.session_state[RESTARTS_KEY] = {"fp": fp, "res": restarts(cfg, n=n, steps=steps, seed=common.seed())}
    saved = st.session_state.get(RESTARTS_KEY)
    if not saved:
        st.caption("Press the button to run them (a few seconds).")
        return
    if saved["fp"] != fp:
        st.caption("The settings changed since the last restarts; press the button to run them again.")
        return
    res = saved["res"]
    snap = trainer.snapshot()
    a, b = st.columns([1.3, 1])
    with a:
        common.plot(vd.restarts(res, snap), key="div.restarts")
    with b:
        common.plot(vd.restart_counts(res), key="div.restart_counts")
        total = len(res["mode"])
        top = max((k for k in res["counts"] if int(k) >= 0), key=lambda k: res["counts"][k], default=None)
        if top is not None:
            st.caption(f"{res['counts'][top]} of {total} runs land on mode {int(top) + 1}. When the modes are far "
                       "apart, a fit on a mode of weight w ends with a reverse KL of about −log w, so the "
                       "heavier mode is the better optimum; but which one a run reaches is decided by where it "
                       "starts, and the basins follow the geometry of p, not its weights.")


def theory() -> None:
    with st.expander("Theory: the divergences, and why they cover or seek modes"):
        st.markdown("For densities p (the target) and q (the model) on the same space:")
        st.latex(r"\mathrm{KL}(p\,\|\,q)=\int p(x)\log\frac{p(x)}{q(x)}\,dx \quad\text{(forward)}\qquad "
                 r"\mathrm{KL}(q\,\|\,p)=\int q(x)\log\frac{q(x)}{p(x)}\,dx \quad\text{(reverse)}")
        st.latex(r"\mathrm{JS}(p,q)=\tfrac12\,\mathrm{KL}\!\left(p\,\middle\|\,m\right)+\tfrac12\,"
                 r"\mathrm{KL}\!\left(q\,\middle\|\,m\right),\quad m=\tfrac12(p+q),\qquad 0\le \mathrm{JS}\le\log 2")
        st.latex(r"D_\alpha(p\,\|\,q)=\frac{1-\int p(x)^{\alpha}\,q(x)^{1-\alpha}\,dx}{\alpha(1-\alpha)},\qquad "
                 r"\lim_{\alpha\to1}D_\alpha=\mathrm{KL}(p\|q),\ \ \lim_{\alpha\to0}D_\alpha=\mathrm{KL}(q\|p)")
        st.latex(r"H^2(p,q)=1-\int\sqrt{p(x)\,q(x)}\,dx=\tfrac14 D_{1/2},\qquad "
                 r"\mathrm{TV}(p,q)=\tfrac12\int|p(x)-q(x)|\,dx")
        st.latex(r"\mathrm{MMD}^2(p,q)=\mathbb{E}\,k(x,x')+\mathbb{E}\,k(y,y')-2\,\mathbb{E}\,k(x,y),\quad "
                 r"x,x'\sim p,\ y,y'\sim q,\quad k(a,b)=e^{-\|a-b\|^2/2h^2}")
        st.markdown(
            "**Why forward KL covers.** The forward KL averages log(p/q) over *p*. Wherever p has mass and q is "
            "tiny, the log ratio is huge, so any mode that q leaves out costs without limit. The cheapest "
            "answer for a single Gaussian is to be wide enough to reach every mode, even if it puts mass in "
            "the empty space between them. For a Gaussian q the optimum is exact moment matching: q takes p's "
            "mean and covariance.\n\n"
            "**Why reverse KL seeks.** The reverse KL averages log(q/p) over *q*. Now q pays for mass it puts "
            "where p is nearly zero, and pays nothing for the modes it ignores. So q shrinks onto one mode "
            "(which one depends on where it starts; see the restarts) and fits that mode snugly. This is the "
            "direction of variational inference, which is why a variational posterior is often too narrow.\n\n"
            "**In between.** The Amari α-divergence moves from reverse KL (α = 0) to forward KL (α = 1) as α "
            "grows: small α seeks, large α covers, and α = ½ is four times the squared Hellinger distance. JS, "
            "Hellinger and total variation are bounded, so an ignored mode costs only a finite amount: they "
            "tend to side with one mode when the modes are far apart and cover when they overlap. MMD compares "
            "the two distributions through a kernel of bandwidth h, from samples only: a wide kernel sees "
            "mostly the mean and the spread, a narrow one sees the modes.\n\n"
            "**The link to GANs.** For a fixed generator density q, the discriminator that maximises "
            "E_p[log D] + E_q[log(1 − D)] is D*(x) = p(x) / (p(x) + q(x)). Putting it back in gives")
        st.latex(r"\max_D\ \mathbb{E}_{p}\log D(x)+\mathbb{E}_{q}\log\bigl(1-D(x)\bigr)"
                 r"=2\,\mathrm{JS}(p,q)-\log 4")
        st.markdown(
            "so a generator trained against an optimal discriminator minimises the Jensen-Shannon divergence; "
            "its JS column in the table is what such a GAN would see. Replacing JS by another f-divergence or "
            "by an integral probability metric (MMD, Wasserstein) gives the f-GAN, MMD-GAN and WGAN families.\n\n"
            "**How this page computes.** p and every q are evaluated at the cell centres of a grid over a box "
            "wider than the plot, normalised to cell probabilities on that grid, and compared there: so every "
            "value is the divergence between the two discretised distributions, ≥ 0 and exactly 0 when they "
            "agree. Adam follows the exact gradient of that sum. The reverse KL can instead be estimated from "
            "reparameterised samples x = μ + Lε of q, as variational inference does in high dimension, to show "
            "the noise this brings.")
