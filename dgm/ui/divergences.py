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
from dgm.families.divergences.fits import restarts, separation_scan
from dgm.families.divergences.trainer import OBJECTIVES, W1_N, DivergenceTrainer
from dgm.ui import common, view

TIE = 1e-3  # values within this relative distance of a column's minimum count as tied for best
RESTARTS_KEY = "_divergence.restarts"  # session state: the last restarts result (no widget has this key)
SCAN_KEY = "_divergence.scan"  # ... and the last separation scan
REQUEST_KEY = "_divergence.restarts_requested"  # set by the button's callback
WARM_STEPS = 200  # the page opens on fitted q's

def _label(o: str, alpha: float) -> str:
    return f"Amari α={alpha:g}" if o == "alpha" else LABELS[o]


def _short(o: str, alpha: float) -> str:
    return f"α={alpha:g}" if o == "alpha" else SHORT_LABELS[o]


def table_frame(table: dict[str, dict[str, float]], alpha: float, errors: dict[str, dict[str, float]] | None = None,
                w1: dict[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows: the q fitted by each objective; columns: every divergence between p and that q (then W1, an
    estimate from samples, when given). Returns the values (NaN where the quadrature error estimate
    exceeds 1%: not shown) and their text ("value ± error", "—", "∞")."""
    rows = list(table)
    cols = [c for c in OBJECTIVES if c in next(iter(table.values()))]
    err = errors or {r: {c: 0.0 for c in cols} for r in rows}
    vals = [[table[r][c] if DivergenceTrainer.shown(table[r][c], err[r][c]) else np.nan for c in cols] for r in rows]
    text = [[vd.value_text(table[r][c], err[r][c]) for c in cols] for r in rows]
    names = [_short(c, alpha) for c in cols]
    if w1 is not None:
        for i, r in enumerate(rows):
            vals[i].append(w1[r])
            text[i].append(f"{w1[r]:.3g}")
        names.append("W1")
    index = [f"fit by {_short(r, alpha)}" for r in rows]
    return pd.DataFrame(vals, index=index, columns=names), pd.DataFrame(text, index=index, columns=names)


def styled_table(df: pd.DataFrame, text: pd.DataFrame | None = None):
    """Column minima in green (the best q under that divergence; ties within TIE), each fit's own
    objective boxed in bold. One vectorised style pass; ``text`` gives what each cell shows."""
    v = df.to_numpy(dtype=float)
    filled = np.where(np.isnan(v), np.inf, v)
    m = filled.min(0, keepdims=True)
    best = filled <= m + TIE * np.abs(m) + 1e-12
    own = np.array([[r.endswith(c) for c in df.columns] for r in df.index])
    css = np.where(best, "background-color: #a6d96a; color: black;", "")
    css = np.char.add(css.astype(object).astype(str), np.where(own, "font-weight: bold; border: 2px solid #333;", ""))
    styles = pd.DataFrame(css, index=df.index, columns=df.columns)
    shown = text if text is not None else df.map(lambda x: f"{x:.4g}")
    return shown.style.apply(lambda _: styles, axis=None)


def notes(snap: dict[str, Any], cfg) -> None:
    tgt = snap["target"]
    msg = [f"p: **{tgt['name']}**, {tgt['description']}. Quadrature: {snap['grid']}."]
    if snap["starts"] > 1:
        msg.append(f"Each objective is fitted from {snap['starts']} starts (one broad, the others narrow); the one "
                   "with the lowest value of that objective is shown.")
    if cfg.family == "mixture" and cfg.k >= tgt["modes"]:
        msg.append(f"q has {cfg.k} components for {tgt['modes']} modes: it need not choose, so the fits agree more. "
                   "Fewer components than modes forces a choice.")
    msg.append("Every value is the exact densities integrated by the midpoint rule on that grid, shown ± its "
               "estimated error (the change from halving the cells, over 3: the rule's error shrinks with the square "
               "of the cell). A value whose estimate exceeds 1% of it is not shown (—): raise the grid resolution. "
               "MMD² is exact (closed form).")
    if snap.get("w1"):
        w = snap["w1"]
        msg.append("W1: exact (the integral of |F_p − F_q| over the line)." if tgt["dim"] == 1 else
                   f"W1: exact optimal transport between {W1_N} samples of p and {W1_N} of each q, an estimate: "
                   f"two sets of {W1_N} samples of p itself are {w['floor']:.3g} apart.")
    if cfg.mc:
        msg.append(f"Reverse KL is fitted from {cfg.mc_n} reparameterised sample(s) of q per step: its curve is the "
                   "noisy estimate; the table gives its exact value on the grid.")
    st.caption(" ".join(msg))


class DivergenceView(view.View):
    """The fits over p at every frame; the values against steps, the notes, the side-by-side panels
    and the cross table about once a second while the run plays."""

    def __init__(self, cfg):
        self.cfg = cfg

    def layout(self, trainer) -> None:
        self.top = st.columns([1.25, 1])
        self.below = st.container()

    def main(self, trainer) -> Callable[[], None]:
        snap = vd.snapshot(trainer, refine=False)  # the fits' shapes; their values come with the panels

        def show() -> None:
            with self.top[0]:
                common.plot(lambda: vd.overlay(snap), key="div.overlay")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        snap, rows = vd.snapshot(trainer, w1=True), trainer.history.merged()

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
                st.markdown("**The cross table**: every divergence (columns) between p and each fitted q (rows), and "
                            "W1, an integral probability metric like MMD, which no fit minimises. Green marks the "
                            "smallest value in each column (ties within 0.1% included); the boxed diagonal is each fit "
                            "under its own objective. When every green cell sits on the diagonal, each fit is the best "
                            "of the seven under its own objective. A green cell off the diagonal means a fit stopped "
                            "in a local optimum, or has not converged yet.")
                df, text = table_frame(snap["table"], snap["alpha"], snap["errors"], snap["w1"])
                st.dataframe(styled_table(df, text), width="stretch")

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
    if st.session_state.get(REQUEST_KEY):
        # the request is cleared only once its result is kept: a click elsewhere (the scan's button) that reruns
        # the page during the fit must not lose it (the next run fits again)
        with st.spinner(f"Fitting reverse KL from {n} starts…"):
            st.session_state[RESTARTS_KEY] = {"fp": fp, "res": restarts(cfg, n=n, steps=steps, seed=common.seed())}
        st.session_state.pop(REQUEST_KEY, None)
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
        st.caption(restarts_caption(res))


def restarts_caption(res: dict[str, Any]) -> str:
    """What the restarts show: how many runs reach each mode, and (in 1D) from which starts."""
    total, w = len(res["mode"]), res["weights"]
    get = lambda k: res["counts"].get(k, res["counts"].get(str(k), 0))  # noqa: E731 (JSON keys are str)
    parts = [f"{get(k)} on mode {k + 1} (weight {w[k]:.2f})" for k in range(len(w))]
    if get(-1):
        parts.append(f"{get(-1)} between modes")
    text = f"Of {total} runs, " + ", ".join(parts) + "."
    if len(res["init"][0]) == 1:
        spans = []
        for k in range(len(w)):
            xs = [x[0] for x, m in zip(res["init"], res["mode"]) if m == k]
            if xs:
                spans.append(f"mode {k + 1} from starts in [{min(xs):.2f}, {max(xs):.2f}]")
        text += " Reached: " + "; ".join(spans) + "."
    return text + (" Where a run ends depends on where it starts and on the weights: a heavier mode draws runs "
                   "from farther away, so the boundary between the basins sits closer to the lighter mode. When "
                   "the modes are far apart, a fit on a mode of weight w ends with a reverse KL of about −log w.")


def _scan_fingerprint(cfg) -> str:
    return json.dumps([cfg.sd1, cfg.sd2, cfg.w1, cfg.alpha, cfg.bw])


def _run_scan(cfg) -> None:
    st.session_state[SCAN_KEY] = {"fp": _scan_fingerprint(cfg), "res": separation_scan(cfg)}


def separation_panel(cfg) -> None:
    """Where each objective switches from covering both modes to seeking one, on the 1D two-mode p."""
    st.subheader("Covering or seeking: where does each objective switch?")
    st.markdown("The 1D two-mode p of the sidebar (its widths and weights; the separation is scanned) at separations"
                " from 0 to 20 mode stds, and a Gaussian fitted under each objective at each separation (the best "
                "of three starts: covering both modes, or on either mode). A covering fit widens as the modes move "
                "apart; a seeking fit drops to the width of one mode.")
    st.button("Run the scan", key="div.scan_btn", on_click=_run_scan, args=(cfg,))
    saved = st.session_state.get(SCAN_KEY)
    if not saved:
        st.caption("Press the button to run it (a few seconds).")
        return
    if saved["fp"] != _scan_fingerprint(cfg):
        st.caption("The 1D settings changed since the last scan; press the button to run it again.")
        return
    common.plot(vd.separation(saved["res"], cfg.alpha), key="div.scan")
    st.caption(scan_caption(saved["res"], cfg.alpha))


def scan_caption(scan: dict[str, Any], alpha: float) -> str:
    """Where each fit switches, from the scan."""
    parts = []
    for o in scan["objectives"]:
        sw = scan["fits"][o]["switch"]
        parts.append(f"{_label(o, alpha)}: " + (f"covers up to {sw - 1:g}σ, seeks from {sw:g}σ" if sw is not None
                                                 else "covers at every separation scanned"))
    return ("; ".join(parts) + ". (σ: the mean of the two modes' stds; fits seek when their mean lies within 1.5 std "
            "of a mode.) The bounded divergences (JS, Hellinger², TV) do side with one mode, but only once the modes "
            "are far apart: much later than reverse KL.")
