"""The arena page's Streamlit parts: every family's samples at every frame; the measured table and the linked
altair charts (precision vs recall, curves against steps and seconds) once a second; the likelihood-vs-samples
contrasts below."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.arena import contrasts as con
from dgm.arena import figures as af
from dgm.arena.run import QUALITY_LEVEL
from dgm.ui import common, view


class ArenaView(view.View):
    def __init__(self):
        self.snap: dict[str, Any] | None = None

    def _snapshot(self, trainer) -> dict[str, Any]:
        key = (trainer.iteration, trainer.arena.done_rounds)
        if self.snap is None or self.snap["key"] != key:
            self.snap = {**af.snapshot(trainer), "key": key}
        return self.snap

    def layout(self, trainer) -> None:
        self.main_box = st.container()
        self.below = st.container()

    def main(self, trainer) -> Callable[[], None]:
        snap = self._snapshot(trainer)

        def show() -> None:
            with self.main_box:
                common.plot(lambda: af.small_multiples(snap), key="arena.samples")
                st.caption("Each family's samples at its last measurement (first seed): 500 points over the data "
                           "in black, or 8 digits; every panel has the same axes.")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        snap = self._snapshot(trainer)

        def show() -> None:
            with self.below:
                if not snap["rows"]:
                    st.info(f"Press Play: every family trains {snap['limit']} in turn and is measured "
                            f"{trainer.config.measures} times along the way.")
                    return
                st.dataframe(af.table_rows(snap), hide_index=True, width="stretch")
                if snap["timed"]:
                    st.caption(f"A budget of {snap['limit']} per family measures this machine: each family trains "
                               "the steps it manages in that time (the 'steps' column), so a link gives the same "
                               "settings, not the same numbers. A budget in steps replays exactly.")
                st.caption(
                    "The measured taxonomy table, at the last measurement (mean ± sd over the seeds). NLL: nats per "
                    "example on the same held-out points (exact, a bound, or none); precision, recall, density, "
                    "coverage (k = 5) on 2,500 samples against 2,500 data points (on the digits, in a classifier's "
                    f"features); samples/s measured; 's to quality': training seconds until precision and recall "
                    f"both reach {QUALITY_LEVEL}.")
                line = con.precision_recall(snap["table"])
                if line:
                    st.markdown(f"**Precision vs recall, GAN against flow.** {line}")
                with warnings.catch_warnings():
                    # the table's rows and the points share one selection: altair merges the copies and says so
                    warnings.filterwarnings("ignore", "Automatically deduplicated selection parameter")
                    st.altair_chart(af.linked_charts(snap))
                st.caption("Click a family (its row, its legend entry or its point) to pick it in every chart; "
                           "double-click to show them all again. Error bars and bands span the seeds.")

        return show


def contrasts() -> None:
    """The lectures' two arguments that likelihood and samples disagree, measured on exact densities."""
    st.subheader("Likelihood vs samples, measured")
    m, k = _contrasts()
    left, right = st.columns(2)
    with left:
        st.markdown(
            f"**1% good model, 99% noise** (ring8): held-out NLL {m['nll_good']:.2f} → {m['nll_mixture']:.2f} nats, "
            f"a change of {m['change']:.2f} ≤ log 100 = {m['bound']:.2f}; precision of its samples "
            f"{m['precision_good']:.2f} → {m['precision_mixture']:.3f}.")
    with right:
        st.markdown(
            f"**A memorising KDE** (8gaussians, bandwidth {k['narrow']}): precision {k['precision_narrow']:.2f}, "
            f"recall {k['recall_narrow']:.2f}, yet held-out NLL {k['nll_narrow']:.1f} nats against "
            f"{k['nll_scott']:.2f} for Scott's bandwidth and {k['nll_true']:.2f} for the true density.")


@st.cache_resource(show_spinner=False)
def _contrasts() -> tuple[dict[str, Any], dict[str, Any]]:
    return con.noise_mixture("ring8"), con.memorising_kde("8gaussians")
