"""The VAE page's drawing code, its theory panel and its gradient-estimator panel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

import dgm.data
from dgm.ui import common, live
from dgm.viz import vae as vviz

INTRO = (
    "A variational autoencoder learns two networks at once: an **encoder** that maps an image to a "
    "Gaussian cloud q(z|x) in a small latent space, and a **decoder** p(x|z) that maps a latent point back "
    "to an image. It is trained on the **ELBO**, a lower bound on log p(x) that trades reconstruction "
    "against a KL penalty pulling every cloud towards the prior. With a 2-dimensional z you can watch the "
    "whole latent space: press **Play** and see the grid of decoded digits organise itself. "
    "Every likelihood below is in **nats per image** on held-out digits."
)

PAIR_A, PAIR_B = "vae.pair_a", "vae.pair_b"
GRADVAR = "_vae.gradvar"


def theory() -> None:
    with st.expander("Theory: the ELBO, the reparameterisation trick, IWAE, and why posteriors collapse"):
        st.markdown("**The bound.** For any distribution q over z, Jensen's inequality turns the intractable "
                    "log-evidence into a bound; the gap is how far q is from the true posterior:")
        st.latex(r"\log p_\theta(x) = \underbrace{\mathbb{E}_{q_\phi(z|x)}\big[\log p_\theta(x|z)\big]"
                 r" - \mathrm{KL}\big(q_\phi(z|x)\,\|\,p(z)\big)}_{\text{ELBO}(x)}"
                 r" + \mathrm{KL}\big(q_\phi(z|x)\,\|\,p_\theta(z|x)\big)")
        st.markdown("The first term rewards faithful reconstructions; the second charges for every nat of "
                    "information the code carries about x. For a diagonal Gaussian q and a N(0, I) prior it "
                    "has a closed form, one term per latent dimension:")
        st.latex(r"\mathrm{KL}\big(\mathcal N(\mu,\sigma^2)\,\|\,\mathcal N(0,1)\big) = "
                 r"\tfrac12\left(\mu^2 + \sigma^2 - 1 - \log\sigma^2\right)")
        st.markdown("**Reparameterisation.** To differentiate the expectation with respect to the encoder, "
                    "write the sample as a deterministic function of noise, so gradients flow through it. "
                    "The alternative, the score-function (REINFORCE) estimator, only multiplies the score of q "
                    "by the reconstruction value; it is unbiased but far noisier (see the panel at the bottom).")
        st.latex(r"z = \mu_\phi(x) + \sigma_\phi(x)\odot\varepsilon,\ \varepsilon\sim\mathcal N(0,I)"
                 r"\qquad\text{vs}\qquad \nabla_\phi\mathbb{E}_q[f(z)] = "
                 r"\mathbb{E}_q\big[f(z)\,\nabla_\phi\log q_\phi(z|x)\big]")
        st.markdown("**Importance weighting (IWAE).** Averaging k importance weights inside the logarithm "
                    "gives a family of bounds that starts at the ELBO (k = 1), never decreases with k, and "
                    "reaches log p(x) as k grows. We report it with k = 100 as the best estimate of the "
                    "held-out log-likelihood; training on it (objective = iwae) pushes the model further.")
        st.latex(r"\mathcal L_k(x) = \mathbb{E}\Big[\log \frac1k\sum_{i=1}^k "
                 r"\frac{p_\theta(x, z_i)}{q_\phi(z_i|x)}\Big],\quad z_i\sim q_\phi(z|x)"
                 r"\qquad \text{ELBO} = \mathcal L_1 \le \mathcal L_2 \le \dots \le \log p_\theta(x)")
        st.markdown("**Taking the KL apart (ELBO surgery).** Averaged over the data set, the KL term splits "
                    "into the information that z carries about *which* x it came from, and a mismatch between "
                    "the prior and the aggregated posterior q(z), the mixture of all the encoder's clouds:")
        st.latex(r"\frac1N\sum_n \mathrm{KL}\big(q(z|x_n)\,\|\,p(z)\big) = I_q(x;z) + "
                 r"\mathrm{KL}\big(q(z)\,\|\,p(z)\big),\qquad q(z) = \frac1N\sum_n q(z|x_n)")
        st.markdown("Only the second part can be removed without losing information: the best prior is "
                    "q(z) itself. A learned prior (a mixture of Gaussians, or a VampPrior built from the "
                    "encoder at learned pseudo-inputs) moves towards it. With N held-out images the mutual "
                    "information estimate cannot exceed log N.")
        st.markdown("**β, warm-up, free bits, collapse.** Weighting the KL by β > 1 squeezes the code: blurrier "
                    "images, a smoother latent space. If the decoder can explain the data without z (here: a "
                    "Gaussian decoder whose variance grows to cover the digits), the cheapest solution early "
                    "in training is q(z|x) = p(z) for every x: the KL drops to 0, the units go **inactive** and "
                    "never come back (**posterior collapse**). A **warm-up** that starts the KL weight at 0 lets "
                    "the code become useful before it is charged for; **free bits** stop charging below a few "
                    "nats per dimension. A unit counts as active when its posterior mean varies across the data: "
                    r"$\mathrm{Cov}_x\big(\mathbb{E}_{q(z|x)}[z_d]\big) > 0.01$.")
        st.markdown("**Overfitting.** With 1,197 (or fewer) training digits the ELBO on the training data "
                    "keeps rising while the validation ELBO turns down. The test figures shown come from the "
                    "checkpoint with the best validation ELBO, so they do not get worse as training goes on.")


def pair_picker(cfg: Any) -> tuple[int, int] | None:
    """Two test digits for the interpolation (digits only)."""
    if cfg.data != "digits":
        return None
    y = dgm.data.digits().test.y.tolist()
    opts = list(range(len(y)))
    fmt = lambda i: f"test #{i}: a {y[i]}"  # noqa: E731
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
    c = st.columns(6)
    c[0].metric("test ELBO", f"{e['elbo']:.1f}", help="nats per example, best validation checkpoint")
    c[1].metric(f"test IWAE (k={int(e['iwae_k'])})", f"{e['iwae']:.1f}",
                help="importance-weighted bound; the CLI's final figure uses k = 100")
    c[2].metric("reconstruction", f"{e['recon']:.1f}", help="E_q log p(x|z), test, best checkpoint")
    c[3].metric("KL", f"{e['kl']:.2f}", help="KL(q(z|x) || p(z)), test, best checkpoint")
    c[4].metric("active units", f"{int(e['active_units'])} / {trainer.config.latent}",
                help="dimensions with Cov_x(E_q[z_d]) > 0.01")
    c[5].metric("best step", f"{int(e['best_step']):,}",
                help="the step with the best validation ELBO so far; the test figures come from it")


class VaeView(live.View):
    """The latent manifold and the latent space at every frame; the summary numbers, the image grids
    and the curves about once a second while the run plays."""

    def __init__(self, pair: tuple[int, int] | None = None):
        self.pair = pair  # the two test digits of the interpolation
        self.snap: dict[str, Any] | None = None

    def layout(self, trainer) -> None:
        self.summary = st.container()
        self.top = st.columns([1, 1.1])
        self.images, self.curves = st.container(), st.container()

    def _figures(self, trainer, s: dict[str, Any]) -> Any:
        dist = trainer.dist
        entropy = dist.entropy if dist is not None and dist.has_density else None
        return vviz.figures(s, trainer.history.merged(), trainer.config, entropy)

    def main(self, trainer) -> Callable[[], None]:
        s = self.snap = trainer.snapshot(interp=self.pair)
        figs = self._figures(trainer, s)

        def show() -> None:  # built from the snapshot alone
            for col, name in zip(self.top, ("manifold", "latent")):
                with col:
                    common.plot(lambda name=name: figs[name], key=f"vae.{name}")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        s = self.snap or trainer.snapshot(interp=self.pair)
        figs, eval_every = self._figures(trainer, s), trainer.eval_every
        with self.summary:
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
                            f"after the first evaluation, at step {eval_every}.", icon=":material/hourglass_top:")
                    return
                common.plot_row(figs, ["elbo", "terms"], "vae")
                common.plot_row(figs, ["iwae", "surgery", "kl_dims"], "vae")
                step = s["analysis"].get("step")
                if step is not None:
                    st.caption(f"IWAE(k), ELBO surgery and the KL per dimension are of the current model on test "
                               f"data, updated every {eval_every} steps (last: step {step:,}). The train/validation "
                               "curves are of the current model; the dashed test curve and the numbers above, of "
                               "the best validation checkpoint.")

        return show


def _measure_gradients(exp) -> None:
    """Button callback (runs before the script reruns): measure on the page's current model."""
    s = live.state(exp)
    if s is not None:
        st.session_state[GRADVAR] = (s.trainer.iteration, s.trainer.gradient_panel())


def gradient_panel(exp) -> None:
    with st.expander("Gradient estimators: why the reparameterisation trick matters", expanded=False):
        st.markdown(
            "On the **same model and the same batch** (64 validation digits), we draw 64 independent "
            "single-sample estimates of the gradient of the ELBO with respect to the encoder's weights with "
            "three estimators, and measure how much they scatter (the sum of the per-weight variances). "
            "All three are unbiased; the score function ignores how the decoder's output changes with z and "
            "pays for it in variance; subtracting a baseline (the reconstruction at the posterior mean) "
            "helps, but the reparameterised gradient stays far less noisy.")
        st.button("Estimate the gradient variance now", key="vae.gradvar_btn", on_click=_measure_gradients,
                  args=(exp,))
        stored = st.session_state.get(GRADVAR)
        if stored:
            it, res = stored
            common.plot(vviz.gradient_variance(res), key="vae.gradvar_fig")
            base = res["reparameterisation"]["variance"]
            rows = [{"estimator": k, "total variance": v["variance"], "× reparameterisation": v["variance"] / base,
                     "|mean gradient|²": v["mean_norm2"], "signal-to-noise": v["snr"]} for k, v in res.items()]
            st.dataframe(rows, hide_index=True)
            st.caption(f"Measured at step {it:,}. Press the button again to re-measure on the current model.")
