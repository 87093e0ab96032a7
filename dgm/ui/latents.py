"""The latents page's Streamlit parts: the live view of each model. The text is in
dgm/families/latents/lessons.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.families.latents import figures as lviz
from dgm.families.latents.trainer import IWAE_K, MC_KS, MC_REPEATS, per_example
from dgm.ui import common, view


def _density_summary(trainer) -> None:
    e = trainer.latest_eval
    if not e:
        return
    unit = per_example(trainer.config)
    st.caption(f"Test figures in {unit}: the Monte Carlo estimate from the prior (mean of {MC_REPEATS} independent "
               f"estimates; ± their spread per example) and the bound of an encoder fitted to the same decoder.")
    c = st.columns(len(MC_KS) + 1)
    for col, k in zip(c, MC_KS):
        col.metric(f"MC, K = {k:,}", f"{e[f'mc_{k}']:.1f}", help=f"± {e[f'sd_{k}']:.2f} ({unit})")
    c[-1].metric(f"IWAE (k = {IWAE_K})", f"{e['iwae']:.1f}", delta=f"{e['iwae'] - e[f'mc_{MC_KS[-1]}']:+.1f} vs K = "
                 f"{MC_KS[-1]:,}", delta_color="off", help=f"importance-weighted bound with an encoder ({unit})")


class LatentsView(view.View):
    """Main figures every frame; the summary and the curves about once a second while playing."""

    def __init__(self) -> None:
        self.snap: dict[str, Any] | None = None

    def layout(self, trainer) -> None:
        self.summary = st.container()
        self.top = st.columns(2)
        self.below = st.container()

    def _main_names(self, s: dict[str, Any]) -> list[str]:
        return ["k", "samples"] if s["images"] else ["density", "pushforward"]

    def main(self, trainer) -> Callable[[], None]:
        s = self.snap = lviz.snapshot(trainer)
        figs = lviz.page_figures(s, trainer.history.merged(), trainer.config)

        def show() -> None:
            for col, name in zip(self.top, self._main_names(s)):
                with col:
                    common.plot(lambda name=name: figs[name], key=f"latents.{name}")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        s = self.snap or lviz.snapshot(trainer)
        figs = lviz.page_figures(s, trainer.history.merged(), trainer.config)
        with self.summary:
            _density_summary(trainer)

        def show() -> None:
            with self.below:
                if not trainer.history.evals:
                    st.info(f"The test estimates appear after the first evaluation, at step {trainer.eval_every}.",
                            icon=":material/hourglass_top:")
                    return
                common.plot_row(figs, ["curves"] if s["images"] else ["k", "curves"], "latents")

        return show
