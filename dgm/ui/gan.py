"""The GAN page's Streamlit parts: step modes, view toggles, and the live figures with a timeline that
scrubs back through the run. The page file wires them together; the text is in
dgm/families/gan/lessons.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.core.registry import Experiment
from dgm.families.gan import figures as gf
from dgm.families.gan.trainer import JS_RESOLUTION
from dgm.ui import common, view
from dgm.ui.controls import is_bool, view_param

MODES = {"both": "Train both", "d": "Only D", "g": "Only G"}
view_param("gan.mode", lambda raw: raw in MODES.values())
for _name in ("arrows", "manifold", "dstar"):
    view_param(f"gan.{_name}", is_bool)


class Timeline:
    """A bounded record of (iteration, snapshot) pairs for scrubbing back through a run.
    When full, every other entry is dropped (the newest is always kept), so it spans the whole run."""

    def __init__(self, max_len: int = 60):
        self.max_len = max_len
        self.items: list[tuple[int, dict]] = []

    def add(self, iteration: int, snap: dict) -> None:
        if self.items and self.items[-1][0] == iteration:
            self.items[-1] = (iteration, snap)
            return
        self.items.append((iteration, snap))
        if len(self.items) > self.max_len:
            last = self.items[-1]
            self.items = self.items[:-1][::2] + [last]

    def iterations(self) -> list[int]:
        return [i for i, _ in self.items]

    def get(self, iteration: int) -> dict | None:
        for i, s in self.items:
            if i == iteration:
                return s
        return None

    def __len__(self) -> int:
        return len(self.items)


def mode_radio() -> str:
    """Train both / only D / only G: a runtime setting, it never restarts the run."""
    return st.radio("Step mode", list(MODES), format_func=MODES.get, horizontal=True, key="gan.mode", bind="query-params",
                    help="As in GAN Lab: train both players, or freeze one and watch the other adapt. "
                         "Changing it keeps the run going.")


def view_options() -> dict[str, bool]:
    c1, c2, c3 = st.columns(3)
    return {
        "show_arrows": c1.toggle("Gradient arrows", value=True, key="gan.arrows", bind="query-params",
                                 help="−∇ₓ of G's loss at 150 generated points: where each sample is pushed."),
        "show_manifold": c2.toggle("Warped latent grid", value=True, key="gan.manifold", bind="query-params",
                                   help="A square grid of latent codes pushed through G (for more than 2 latent "
                                        "dimensions, the slice through the first two)."),
        "show_dstar": c3.toggle("Optimal D* panel", value=True, key="gan.dstar", bind="query-params",
                                help="D*(x) = p/(p+q) for the current generator, next to the learned D."),
    }


def _timeline_pick(timeline: Timeline, playing: bool) -> dict[str, Any] | None:
    """While paused, a slider over recorded snapshots; returns the chosen one (None: the live one)."""
    its = timeline.iterations()
    if playing or len(its) < 2:
        return None
    pick = st.select_slider("Timeline: scrub back through the run", options=its, value=its[-1],
                            format_func=lambda i: f"{i:,}", key=f"gan.timeline.{len(its)}.{its[-1]}",
                            help="Snapshots recorded while training (up to 60, thinned evenly over the run).")
    return None if pick == its[-1] else timeline.get(pick)


class GameView(view.View):
    """The game plane at every frame; the learned D and D* beside it, the curves and the metrics
    below it, about once a second while the run plays. While paused, a timeline above them scrubs
    back through the run's snapshots, and every figure shows the one picked."""

    def __init__(self, exp: Experiment, opts: dict[str, bool]):
        self.exp, self.opts = exp, opts
        self.live: dict[str, Any] | None = None  # the latest snapshot of the run
        self.old: dict[str, Any] | None = None  # the snapshot picked on the timeline, if any

    def _snapshot(self, trainer) -> dict[str, Any]:
        """The run's snapshot at its current iteration (taken once per iteration, and recorded on
        the timeline), or the one picked on the timeline."""
        if self.live is None or self.live["iteration"] != trainer.iteration:
            self.live = gf.snapshot(trainer)
            self.timeline.add(trainer.iteration, self.live)
        return self.old or self.live

    @property
    def timeline(self) -> Timeline:
        """The run's snapshots so far (kept with the run, across reruns of the page)."""
        return self.state.view_state.setdefault("timeline", Timeline())

    def layout(self, trainer) -> None:
        self._snapshot(trainer)
        self.old = _timeline_pick(self.timeline, self.state.playing)
        self.side = self.opts["show_dstar"] and trainer.log_p_smooth is not None
        if self.side:
            self.main_col, *self.side_cols = st.columns([1.25, 1, 1])
        else:
            self.main_col, _ = st.columns([1.4, 1])
        self.below = st.container()

    def main(self, trainer) -> Callable[[], None]:
        """Under the run's lock, take what the figure needs; the returned function builds and shows
        it after the lock is released, while training goes on."""
        snap, box, opts = self._snapshot(trainer), trainer.data.box, self.opts

        def show() -> None:
            with self.main_col:
                if self.old is not None:
                    st.caption(f"Showing the snapshot at iteration {self.old['iteration']:,} (the curves show the "
                               "whole run).")
                common.plot(lambda: gf.game(snap, box, show_manifold=opts["show_manifold"],
                                            show_arrows=opts["show_arrows"]), key="gan.game")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        snap, data = self._snapshot(trainer), trainer.data
        rows, has_evals = trainer.history.merged(), bool(trainer.history.evals)
        caption = _metrics_caption(trainer)

        def show() -> None:
            figs = gf.main_figures(snap, rows, data)
            if self.side:
                for col, name, key in zip(self.side_cols, ("learned_d", "dstar"), ("gan.learned_d", "gan.dstar_fig")):
                    with col:
                        common.plot(lambda name=name: figs[name], key=key)
            with self.below:
                names = ["losses"] + ([n for n in ("modes", "mode_kl", "mmd", "js", "w1") if n in figs]
                                      if has_evals else [])
                for row in (names[:3], names[3:]):
                    for col, n in zip(st.columns(3), row):
                        with col:
                            common.plot(lambda n=n: figs[n], key=f"gan.{n}")
                st.caption(caption)

        return show


def _metrics_caption(trainer) -> str:
    """What the curves and numbers are: each estimate with its estimator, its spread where measured, and
    the floor that true samples of p get (a perfect generator)."""
    ev = trainer.latest_eval
    parts = []
    if "modes" in ev:
        parts.append(f"modes {int(ev['modes'])}/{len(trainer.data.centers)}, high quality {ev['high_quality']:.1%}, "
                     f"mode KL {ev['mode_kl']:.3f}")
    if "mmd" in ev:
        se = f" ± {ev['mmd_se']:.1e}" if "mmd_se" in ev else ""
        parts.append(f"MMD² {ev['mmd']:.2e}{se} (true samples: {ev.get('mmd_floor', float('nan')):.1e})")
    if "js" in ev:
        parts.append(f"JS {ev['js']:.3f} ± {ev.get('js_sd', 0.0):.3f} nats (true samples: {ev.get('js_floor', float('nan')):.3f})")
    if "w1" in ev:
        critic = f", critic's estimate {ev['critic_w1']:.3f}" if "critic_w1" in ev else ""
        parts.append(f"W1 {ev['w1']:.3f}{critic} (true samples: {ev.get('w1_floor', float('nan')):.3f})")
    where = f" (at iteration {trainer.history.evals[-1]['step']:,})" if trainer.history.evals else ""
    every = trainer.eval_schedule()
    head = (f"Metrics on 2,500 samples of G, evaluated {every}: " + "; ".join(parts) + where + "." if parts else
            f"The metric curves (modes, mode KL, MMD, JS, W1) are evaluated {every}.")
    how = (" Each is an estimate; its dashed line is what 2,500 true samples of p get in G's place, the best "
           "a perfect generator can show. MMD²: the biased estimate (Gaussian kernels of bandwidths 0.1, 0.3, 1 "
           "and 3) against 2,500 data points, ± its first-order standard error over G's samples. W1: exact "
           "optimal transport (POT) between the first 1,000 of G's samples and 1,000 data points.")
    if "critic_w1" in ev:
        how += (" The critic's estimate is E_p f − E_q f on the 2,500 + 2,500 points: it equals W1 only for an "
                "optimal 1-Lipschitz critic (weight clipping makes f K-Lipschitz for an unknown K, so its gap "
                "estimates K·W1; a gradient penalty keeps K near 1 only where it is applied).")
    if trainer.log_p_smooth is not None:
        how += (f" JS and D*: q is a Gaussian kernel density estimate of G's samples (h = {trainer.kde_h:.3g}) and p "
                f"its exact convolution with the same kernel, both on a {JS_RESOLUTION}×{JS_RESOLUTION} grid over "
                "the plot's box, so a perfect generator gives D* ≈ 1/2 and JS ≈ 0; JS is the mean ± sd over 4 "
                "sets of 2,500 samples.")
    else:
        how += " This data set has no exact density, so JS and D* are not shown."
    return (head + how + " High quality: within 3 std of the nearest mode centre; a mode is captured when it is the "
            "nearest centre of a high-quality sample.")
