"""The latents page's Streamlit parts: the live view of each model. The text is in
dgm/families/latents/lessons.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.families.latents import figures as lviz
from dgm.families.latents.lessons import ESTIMATOR_NOTE
from dgm.families.latents.trainer import (
    ESTIMATOR_IMAGES, ESTIMATOR_SAMPLES, GUMBEL, IWAE_K, MC_KS, MC_REPEATS, VQ, GumbelTrainer, per_example,
)
from dgm.ui import common, session, view


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


def _gumbel_summary(trainer) -> None:
    e = trainer.latest_eval
    if not e:
        return
    st.caption("Test figures of the discrete model (one-hot samples of q(y|x), the exact KL to the uniform prior), "
               "nats per image.")
    c = st.columns(4)
    c[0].metric("test ELBO", f"{e['elbo']:.1f}")
    c[1].metric("reconstruction", f"{e['recon']:.1f}", help="E_q log p(x|y), one-hot y")
    c[2].metric("KL", f"{e['kl']:.2f}", help="KL(q(y|x) || uniform), exact")
    c[3].metric("temperature τ", f"{trainer.temperature():.3g}")


def _vq_summary(trainer) -> None:
    e = trainer.latest_eval
    if not e:
        return
    c = trainer.config
    st.caption(f"Test digits ({trainer.test_x.shape[0]} images, {c.positions} codes each): the codes in use, the "
               "perplexity of their frequencies, and the reconstruction from the codes.")
    m = st.columns(5)
    m[0].metric("codes in use", f"{e['used']:.0%} of {c.codes}", help="codes picked at least once on the test digits")
    m[1].metric("perplexity", f"{e['perplexity']:.1f}", help="exp(entropy of the code frequencies): the number of "
                "equally used codes that would give the same entropy")
    m[2].metric("reconstruction", f"{e['recon']:.1f}", help="log p(x|z_q), nats per image")
    m[3].metric("squared error", f"{e['mse']:.4f}", help="mean squared error of the decoded means, intensities in [0, 1]")
    m[4].metric("codes under the AR prior", f"{e['prior_nll']:.1f}", delta=f"{e['prior_nll'] - e['uniform_nll']:+.1f} vs "
                "uniform", delta_color="inverse", help="-log p(codes) of the test digits, nats per image")


SUMMARIES = {GUMBEL: _gumbel_summary, VQ: _vq_summary}


class LatentsView(view.View):
    """Main figures every frame; the summary and the curves about once a second while playing."""

    def __init__(self) -> None:
        self.snap: dict[str, Any] | None = None

    def layout(self, trainer) -> None:
        self.top = st.columns(2)
        self.summary = st.container()  # the numbers under the main figures: the figure comes first
        self.below = st.container()

    def _main_names(self, s: dict[str, Any]) -> list[str]:
        if s["model"] == GUMBEL:
            return ["recon", "samples"]
        if s["model"] == VQ:
            return ["codebook", "usage"]
        return ["k", "samples"] if s["images"] else ["density", "pushforward"]

    def _panel_names(self, s: dict[str, Any]) -> list[str]:
        if s["model"] == GUMBEL:
            return ["curves", "kl_tau"]
        if s["model"] == VQ:
            return ["perplexity", "recon_curve"]
        return ["curves"] if s["images"] else ["k", "curves"]

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
            st.empty()  # a full run leaves the container something (before the first evaluation: only this), or
            # the panels' fragment may not write into it later
            SUMMARIES.get(s["model"], _density_summary)(trainer)

        def show() -> None:
            with self.below:
                if not trainer.history.evals:
                    st.info(f"The test estimates appear after the first evaluation, at step {trainer.eval_every}.",
                            icon=":material/hourglass_top:")
                    return
                if s["model"] == VQ:
                    common.plot(lambda: figs["recon"], key="latents.recon")
                    common.plot_row(figs, ["samples", "prior_samples", "prior"], "latents")
                common.plot_row(figs, self._panel_names(s), "latents")

        return show


def _measure(exp) -> None:
    """Button callback (runs before the script reruns): measure on the page's current model."""
    s = session.state(exp)
    if s is not None and isinstance(s.trainer, GumbelTrainer):
        with s.lock:
            s.trainer.measure_estimators()


def estimator_panel(exp, cfg) -> None:
    """Gumbel-softmax: the gradient estimators' bias and variance against enumeration, on demand."""
    if cfg.model != GUMBEL:
        return
    with st.expander("Gradient estimators for discrete z: bias and variance against the exact gradient", expanded=True):
        st.markdown(ESTIMATOR_NOTE)
        st.button("Measure the estimators now", key="latents.estimators_btn", on_click=_measure, args=(exp,))
        s = session.state(exp)
        stored = getattr(s.trainer, "estimators", None) if s is not None else None
        if stored:
            it, rows = stored
            common.plot(lviz.estimator_figure(rows), key="latents.estimators")
            st.dataframe([{"estimator": r["estimator"], "τ": "any" if r["tau"] is None else f"{r['tau']:g}",
                           "bias²": r["bias2"], "variance": r["variance"], "noise floor of bias²": r["floor"],
                           "relative bias": r["rel_bias"]} for r in rows], hide_index=True)
            st.caption(f"Measured at step {it:,} on {ESTIMATOR_IMAGES} test digits, {ESTIMATOR_SAMPLES} estimates per "
                       "row; per image, summed over the first variable's logits. Press again to re-measure.")
