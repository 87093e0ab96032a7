"""The VAE page's Streamlit parts: the interpolation picker, the live view and the gradient-estimator
panel. The text is in dgm/families/vae/lessons.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import streamlit as st

import dgm.core.digits
from dgm.families.vae import elbo_figures
from dgm.families.vae import figures as vviz
from dgm.families.vae.lessons import GRADIENT_NOTE
from dgm.families.vae.trainer import BINARISED, IWAE_FINAL_K, data_label, per_example
from dgm.ui import common, session, view
from dgm.ui.controls import view_param

PAIR_A, PAIR_B = "vae.pair_a", "vae.pair_b"
GRADVAR = "_vae.gradvar"


@functools.cache
def _pair_labels() -> tuple[str, ...]:
    """The interpolation picker's options as a link holds them."""
    return tuple(f"test #{i}: a {d}" for i, d in enumerate(dgm.core.digits.digits().test.y.tolist()))


view_param(PAIR_A, lambda raw: raw in _pair_labels())
view_param(PAIR_B, lambda raw: raw in _pair_labels())


def pair_picker(cfg: Any) -> tuple[int, int] | None:
    """Two test digits for the interpolation (digits only)."""
    if cfg.data not in ("digits", BINARISED):
        return None
    y = dgm.core.digits.digits().test.y.tolist()
    opts = list(range(len(y)))
    fmt = _pair_labels().__getitem__
    a0, b0 = (y.index(4) if 4 in y else 0), (y.index(0) if 0 in y else 1)
    with st.expander("Interpolation endpoints", expanded=False):
        c1, c2 = st.columns(2)
        a = c1.selectbox("From", opts, index=a0, format_func=fmt, key=PAIR_A, bind="query-params")
        b = c2.selectbox("To", opts, index=b0, format_func=fmt, key=PAIR_B, bind="query-params")
    return int(a), int(b)


def _summary(trainer) -> None:
    e = trainer.latest_eval
    if not e:
        return
    unit, data = per_example(trainer.config), data_label(trainer.config)
    se = (f" Monte Carlo estimates on the {trainer.test_x.shape[0]:,} test examples: ELBO ± {e['elbo_se']:.2f}, IWAE ± "
          f"{e['iwae_se']:.2f} (standard errors, sd / √N of the per-example values)." if "elbo_se" in e else "")
    st.caption(f"Held-out figures on **{data}**, in {unit}"
               + (": a different data set, not comparable with the grey-level digits' figures." if
                  trainer.config.data == BINARISED else ".") + se)
    c = st.columns(6)
    c[0].metric("test ELBO", f"{e['elbo']:.1f}", help=f"{unit}, best validation checkpoint")
    c[1].metric(f"test IWAE (k={int(e['iwae_k'])})", f"{e['iwae']:.1f}",
                help=f"importance-weighted bound with k = {int(e['iwae_k'])} samples, {unit}; the command line's "
                     f"final figure uses k = {IWAE_FINAL_K}")
    c[2].metric("reconstruction", f"{e['recon']:.1f}", help="E_q log p(x|z), test, best checkpoint")
    c[3].metric("KL", f"{e['kl']:.2f}", help="KL(q(z|x) || p(z)), test, best checkpoint")
    c[4].metric("active units", f"{int(e['active_units'])} / {trainer.config.latent}",
                help="dimensions with Cov_x(E_q[z_d]) > 0.01")
    c[5].metric("best step", f"{int(e['best_step']):,}",
                help="the step with the best validation ELBO so far; the test figures come from it")


class VaeView(view.View):
    """The latent manifold and the latent space at every frame; the summary numbers, the image grids
    and the curves about once a second while the run plays."""

    def __init__(self, pair: tuple[int, int] | None = None):
        self.pair = pair  # the two test digits of the interpolation
        self.snap: dict[str, Any] | None = None

    def layout(self, trainer) -> None:
        self.top = st.columns([1, 1.1])
        self.summary = st.container()  # the numbers under the main figures: the figure comes first
        self.images, self.curves = st.container(), st.container()

    def _figures(self, trainer, s: dict[str, Any]) -> Any:
        dist = trainer.dist
        entropy = dist.entropy if dist is not None and dist.has_density else None
        return vviz.page_figures(s, trainer.history.merged(), trainer.config, entropy)

    def main(self, trainer) -> Callable[[], None]:
        s = self.snap = vviz.snapshot(trainer, interp=self.pair)
        figs = self._figures(trainer, s)

        def show() -> None:  # built from the snapshot alone
            for col, name in zip(self.top, ("manifold", "latent")):
                with col:
                    common.plot(lambda name=name: figs[name], key=f"vae.{name}")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        s = self.snap or vviz.snapshot(trainer, interp=self.pair)
        figs, schedule = self._figures(trainer, s), trainer.eval_schedule()
        with self.summary:
            st.empty()  # a full run leaves the container something (before the first evaluation: only this), or
            # the panels' fragment may not write into it later
            _summary(trainer)

        def show() -> None:
            if s["images"]:
                with self.images:
                    c, d = st.columns([1.35, 1])
                    with c:
                        common.plot(lambda: figs["recon"], key="vae.recon")
                        common.plot(lambda: figs["interp"], key="vae.interp")
                    with d:
                        common.plot(lambda: figs["samples"], key="vae.samples")
            with self.curves:
                if not s["analysis"]:
                    st.info(f"The held-out curves, the IWAE bound, the ELBO surgery and the KL per dimension appear "
                            f"after the first evaluation (they are evaluated {schedule}).", icon=":material/hourglass_top:")
                    return
                common.plot_row(figs, ["elbo", "terms"], "vae")
                common.plot_row(figs, ["iwae", "surgery", "kl_dims"], "vae")
                step = s["analysis"].get("step")
                if step is not None:
                    st.caption(f"IWAE(k), ELBO surgery and the KL per dimension are of the current model on test "
                               f"data, evaluated {schedule} (last: step {step:,}). The train/validation "
                               "curves are of the current model; the dashed test curve and the numbers above, of "
                               "the best validation checkpoint.")

        return show


def _measure_gradients(exp) -> None:
    """Button callback (runs before the script reruns): measure on the page's current model."""
    s = session.state(exp)
    if s is not None:
        st.session_state[GRADVAR] = (s.trainer.iteration, elbo_figures.gradient_panel(s.trainer))


def gradient_panel(exp) -> None:
    with st.expander("Gradient estimators: why the reparameterisation trick matters", expanded=False):
        st.markdown(GRADIENT_NOTE)
        st.button("Estimate the gradient variance now", key="vae.gradvar_btn", on_click=_measure_gradients,
                  args=(exp,))
        stored = st.session_state.get(GRADVAR)
        if stored:
            it, res = stored
            common.plot(elbo_figures.gradient_variance(res), key="vae.gradvar_fig")
            base = res["reparameterisation"]["variance"]
            rows = [{"estimator": k, "total variance": v["variance"], "× reparameterisation": v["variance"] / base,
                     "|mean gradient|²": v["mean_norm2"], "signal-to-noise": v["snr"]} for k, v in res.items()]
            st.dataframe(rows, hide_index=True)
            st.caption(f"Measured at step {it:,}. Press the button again to re-measure on the current model.")
