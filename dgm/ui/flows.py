"""The normalizing-flows page: its drawing code, notes and theory panel (streamlit only here)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import streamlit as st

from dgm import flows
from dgm.ui import common, live
from dgm.viz import flows as fviz

LAYER_KEY = "flow.layer"
LINEAR_KEY = "flow.linear"

INTRO = (
    "A flow turns a standard Gaussian into the target by a chain of **invertible** maps. Because every "
    "map can be undone, the model's density at any point is exact: pull the point back to the Gaussian "
    "and correct for how much each layer stretched or squeezed space on the way (its **log-determinant**). "
    "Below, the learned density sits beside the target; the row of small panels follows the Gaussian "
    "through every layer, with a square grid bent along; pick a layer to see where it expands (red) or "
    "compresses (blue) space. Press **Play**."
)


def check(cfg):
    """Reverse KL needs p's log density everywhere; for a target with none, fall back to forward KL."""
    if cfg.objective == "reverse_kl" and not flows.reverse_ok(cfg.data):
        st.warning(f"Reverse KL needs the target's log density at every point, and **{cfg.data}** has none "
                   "(it is known only through samples, or is zero off its support). Training with forward KL "
                   "instead; pick an energy U1-U4 or a Gaussian mixture for reverse KL.", icon=":material/info:")
        return dataclasses.replace(cfg, objective="forward_kl")
    return cfg


def direction_note(cfg) -> None:
    """Which direction this layer makes cheap, and whether the chosen objective uses the cheap one."""
    xz, zx = flows.DIRECTION_COST[cfg.flow]
    need = "x → z (the density of data samples)" if cfg.objective == "forward_kl" else \
        "z → x with its log-det (samples of q and their density)"
    cost = xz if cfg.objective == "forward_kl" else zx
    msg = (f"**{cfg.flow}** layers: x → z costs *{xz}*, z → x costs *{zx}*. "
           f"**{cfg.objective.replace('_', ' ')}** needs {need}: here that is *{cost}*.")
    if cost != "one pass":
        msg += " Every step pays that price: compare the steps/s with another layer type."
    if cfg.flow == "planar":
        msg += (" Planar layers are defined in the z → x direction; x → z (needed for the log q heatmap and "
                "the held-out NLL) is found by a root search along w in every layer, which is why it is slow.")
    st.caption(msg)


def _layer_slider(n_layers: int) -> int:
    if n_layers <= 1:
        return 1
    cur = st.session_state.get(LAYER_KEY)
    if not isinstance(cur, int) or not 1 <= cur <= n_layers:
        st.session_state[LAYER_KEY] = n_layers
    return int(st.slider("Layer to inspect", 1, n_layers, key=LAYER_KEY, bind="query-params",
                         help="The layer whose input, log|det J| and output are shown below."))


def _metrics_line(trainer) -> None:
    e = trainer.latest_eval
    parts = []
    if "nll" in e:
        parts.append(f"held-out NLL **{e['nll']:.3f}** nats")
    if trainer.entropy is not None:
        parts.append(f"true entropy {trainer.entropy:.3f}")
    if "forward_kl" in e:
        rev = e["reverse_kl"]
        rev_s = f"{rev:.3f}" if math.isfinite(rev) else "∞ (q puts mass where p is 0)"
        parts.append(f"KL(p‖q) {e['forward_kl']:.3f} · KL(q‖p) {rev_s}")
    if "modes" in e:
        parts.append(f"modes covered {int(e['modes'])}/{len(trainer.data.centers)}")
    if parts:
        st.caption(" · ".join(parts) + f" (evaluated every {trainer.eval_every} steps)")


class FlowView(live.View):
    """The fit (density and samples) at every frame; the target beside them, the metrics, the
    layer-by-layer panels and the curves about once a second while the run plays."""

    def layout(self, trainer) -> None:
        n_layers = len(trainer.model.layers)
        self.linear = bool(st.session_state.get(LINEAR_KEY, False))
        self.metrics = st.container()
        self.fit = st.columns(3)  # the target (static: a panel), the density and the samples
        st.toggle("Show densities on a linear scale", key=LINEAR_KEY, bind="query-params")
        st.subheader("Layer by layer")
        st.caption("From the base Gaussian (left) to the model's samples (right). Points keep the colour of their "
                   "angle in the base space, so you can follow each region; the grey lines are a square grid in the "
                   "base space pushed through the same layers. Each panel's axes are fitted to its points (layers "
                   "often stretch one axis far more than the other): read the scale off the axes below." +
                   (" With many layers, evenly spaced layers are shown." if n_layers + 1 > fviz.MAX_PANELS else ""))
        self.layers = st.container()
        self.layer = _layer_slider(n_layers)
        self.stage = st.container()
        st.subheader("Curves")
        self.curves = st.container()
        self.figs = None

    def main(self, trainer) -> Callable[[], None]:
        figs = self.figs = fviz.figures(trainer, layer=self.layer, log=not self.linear)

        def show() -> None:  # built from the snapshot alone
            for col, name in zip(self.fit[1:], ["density", "samples"]):
                with col:
                    common.plot(lambda name=name: figs[name], key=f"flow.{name}")

        return show

    def panels(self, trainer) -> None:
        """Under the run's lock: the layer panels ask the model itself."""
        figs = self.figs or fviz.figures(trainer, layer=self.layer, log=not self.linear)
        with self.metrics:
            _metrics_line(trainer)
        with self.fit[0]:
            common.plot(lambda: figs["target"], key="flow.target")
        with self.layers:
            common.plot(lambda: figs["layers"], key="flow.layers")
        with self.stage:
            common.plot_row(figs, ["logdet", "stage"], "flow")
        with self.curves:
            a, b = st.columns(2)
            with a:
                common.plot(lambda: figs["nll"], key="flow.nll")
            with b:
                if "kl" in figs:
                    common.plot(lambda: figs["kl"], key="flow.kl")
                else:
                    st.info(f"**{trainer.data.name}** is known only through samples, so KL(p‖q) and KL(q‖p) cannot "
                            "be computed exactly; the held-out NLL still measures the fit (it equals KL(p‖q) plus "
                            "the unknown entropy of p).", icon=":material/info:")


def theory() -> None:
    with st.expander("Theory: change of variables, log-determinants, couplings, MAF and IAF"):
        st.markdown("**Change of variables.** Draw z from a simple base density (here a standard 2D Gaussian) "
                    "and set x = f(z) with f invertible. The probability in a small patch around z is carried to "
                    "the image patch around x, whose area is |det J| times larger, so the density divides by it:")
        st.latex(r"\log q(x) = \log p_Z\big(f^{-1}(x)\big) + \log\left|\det \frac{\partial f^{-1}(x)}{\partial x}\right|"
                 r" = \log p_Z(z) - \log\left|\det \frac{\partial f(z)}{\partial z}\right|")
        st.markdown("**Stacking layers.** For f = f_K ∘ … ∘ f_1 the Jacobian is a product, so the log-determinants "
                    "add up along the chain z₀ → z₁ → … → z_K = x:")
        st.latex(r"\log q(x) = \log p_Z(z_0) - \sum_{k=1}^{K} \log\left|\det \frac{\partial z_k}{\partial z_{k-1}}\right|")
        st.markdown("The heatmap of one layer shows the k-th term: where it is positive the layer spreads mass out "
                    "(density drops), where negative it piles mass up.")
        st.markdown("**Planar and radial layers** (Rezende & Mohamed) bend space along one direction or around one "
                    "point; the matrix determinant lemma gives their determinant in closed form:")
        st.latex(r"x = z + u\,h(w^\top z + b),\qquad \det J = 1 + h'(w^\top z + b)\, u^\top w")
        st.markdown("They are easy to run forwards but have no closed-form inverse, so evaluating q at given data "
                    "needs a numerical solve in every layer.")
        st.markdown("**Coupling layers** (NICE, RealNVP, splines) leave half the coordinates alone and transform the "
                    "other half with parameters computed from the untouched half. The Jacobian is triangular, so its "
                    "determinant is the product of its diagonal, and inverting only needs the same network once more:")
        st.latex(r"x_a = z_a,\quad x_b = z_b \odot e^{s(z_a)} + t(z_a),\qquad "
                 r"J = \begin{pmatrix} I & 0 \\ \ast & \operatorname{diag}(e^{s(z_a)}) \end{pmatrix},\quad "
                 r"\log|\det J| = \textstyle\sum_i s_i(z_a)")
        st.markdown("NICE is the case s = 0 (volume-preserving, with one scaling at the end); a rational-quadratic "
                    "spline replaces the affine map of x_b by a flexible monotone curve. The swap or rotation "
                    "between layers lets every coordinate be transformed in turn.")
        st.markdown("**Autoregressive layers.** MAF computes each coordinate's shift and scale from the *data* "
                    "coordinates before it; IAF from the *noise* coordinates before it:")
        st.latex(r"\text{MAF: } z_i = \big(x_i - \mu_i(x_{<i})\big)\, e^{-\alpha_i(x_{<i})}\qquad"
                 r"\text{IAF: } x_i = z_i\, e^{\alpha_i(z_{<i})} + \mu_i(z_{<i})")
        st.markdown("Both have triangular Jacobians. MAF gets z from x in one masked-network pass (cheap "
                    "likelihood, so cheap **forward KL** = maximum likelihood on data), but sampling must build x "
                    "one coordinate at a time. IAF is the mirror image: one pass to sample x together with its "
                    "log q (cheap **reverse KL**), but the density of a given data point needs the sequential "
                    "inversion. In 2D 'one coordinate at a time' is only two passes; in an image it is thousands.")
        st.markdown("**The two objectives.**")
        st.latex(r"\mathrm{KL}(p\,\|\,q) = -H(p) - \mathbb{E}_{x\sim p}[\log q(x)]\qquad"
                 r"\mathrm{KL}(q\,\|\,p) = \mathbb{E}_{x\sim q}[\log q(x) - \log \tilde p(x)] + \log Z")
        st.markdown("Forward KL only needs samples of p, and the held-out NLL can approach the entropy H(p) but "
                    "never go below it; missing a mode is expensive, so q spreads to cover all of them. Reverse KL "
                    "needs p's density up to its constant Z, and samples of q; q is punished for putting mass where p "
                    "has none, but not for ignoring a mode, so it tends to lock onto some modes. Annealing (weighting "
                    "log p̃ by β rising from 0.01 to 1) lets q spread before the target's full sharpness kicks in.")
