"""The Divergences page's Streamlit parts: the live view with its cross table, and the restarts panel.
The text is in dgm/families/divergences/lessons.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dgm.core import config as cfglib
from dgm.families.divergences import figures as vd
from dgm.families.divergences.figures import LABELS, SHORT_LABELS
from dgm.families.divergences.trainer import OBJECTIVES, restarts
from dgm.ui import common, view

TIE = 1e-3  # values within this relative distance of a column's minimum count as tied for best
RESTARTS_KEY = "_divergence.restarts"  # session state: the last restarts result (no widget has this key)
REQUEST_KEY = "_divergence.restarts_requested"  # set by the button's callback
WARM_STEPS = 200  # the page opens on fitted q's

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


class DivergenceView(view.View):
    """The fits over p at every frame; the values against steps, the notes, the side-by-side panels
    and the cross table about once a second while the run plays."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.snap: dict[str, Any] | None = None

    def layout(self, trainer) -> None:
        self.top = st.columns([1.25, 1])
        self.below = st.container()

    def main(self, trainer) -> Callable[[], None]:
        snap = self.snap = vd.snapshot(trainer)

        def show() -> None:
            with self.top[0]:
                common.plot(lambda: vd.overlay(snap), key="div.overlay")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        snap, rows = self.snap or vd.snapshot(trainer), trainer.history.merged()

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
    snap = vd.snapshot(trainer)
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
