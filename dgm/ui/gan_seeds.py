"""The many-seeds page's Streamlit parts: the runs' small multiples at every frame; the per-run table,
the summary and the mode curves about once a second."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.families.gan import seeds_figures as sf
from dgm.ui import common, view


class SeedsView(view.View):
    def __init__(self):
        self.snap: dict[str, Any] | None = None

    def _snapshot(self, batch) -> dict[str, Any]:
        if self.snap is None or self.snap["iteration"] != batch.iteration:
            self.snap = sf.snapshot(batch)
        return self.snap

    def layout(self, batch) -> None:
        self.main_box = st.container()
        self.below = st.container()

    def main(self, batch) -> Callable[[], None]:
        snap = self._snapshot(batch)

        def show() -> None:
            with self.main_box:
                common.plot(lambda: sf.small_multiples(snap), key="gan_seeds.multiples")
                st.caption("Orange: each run's samples (400, from fixed latent codes); black: the data. Every panel "
                           "has the same axes and the same settings; only the seed differs.")

        return show

    def panels(self, batch) -> Callable[[], None]:
        snap = self._snapshot(batch)
        every = batch.eval_schedule()

        def show() -> None:
            with self.below:
                st.markdown(sf.summary_text(snap))
                left, right = st.columns([1.1, 1])
                with left:
                    st.dataframe(sf.table_rows(snap), hide_index=True, width="stretch")
                    st.caption(f"Each run's metrics at its last evaluation ({every}), "
                               "on 2,500 samples of its own generator, as on the GAN page: modes captured, the "
                               "share of high-quality samples (within 3 std of a mode centre), MMD², W1 and JS.")
                with right:
                    common.plot(lambda: sf.modes_curves(snap), key="gan_seeds.modes")

        return show
