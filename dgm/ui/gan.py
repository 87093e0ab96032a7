"""The GAN page's Streamlit parts: step modes, view toggles, the live figures with a timeline, the
lesson notes and the theory panel. The page file wires them together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.experiments import Experiment
from dgm.ui import common, live
from dgm.ui.controls import PRESET

MODES = {"both": "Train both", "d": "Only D", "g": "Only G"}
INTRO = (
    "Two networks play a game on 2D data. The **discriminator** D learns to tell data points (black) from the "
    "generator's samples (orange); the **generator** G moves its samples wherever D says they look real. The "
    "heatmap is D's current opinion, the arrows show where G's loss pushes each sample, and the grey lines are a "
    "square grid of latent codes after G has warped it. Below, mode collapse is *measured*: how many of the "
    "modes G hits, how many of its samples are close to a mode, and how unevenly it spreads over them."
)

LESSON_TEXT = {
    "vanilla GAN collapses": (
        "A plain GAN (the log D trick, one D step per G step) whose generator learns ten times faster than its "
        "discriminator. Press Play and watch the orange cloud: instead of spreading over the ring it stays one tight "
        "blob that D keeps rejecting, so it jumps from one place to the next. The **modes** curve stays near 0 or 1 "
        "and the **mode KL** stays near its maximum, log 8. Set the two learning rates equal, or use WGAN-GP, to "
        "see the blob spread out."),
    "saturating loss stalls early": (
        "Here D trains five times per G step, so it quickly rejects the generator's first samples with great "
        "confidence. With the saturating loss log(1 − D(G(z))) that is exactly where the loss is flat: the arrows "
        "are tiny and the orange cloud hardly moves, although it is nowhere near the data. Switch the loss to "
        "*nonsaturating* (the log D trick) and the arrows come back at once."),
    "WGAN-GP covers every mode": (
        "The critic is no longer a classifier: it scores points, and a gradient penalty keeps its slope near 1 "
        "everywhere between data and samples. Its gradient therefore never vanishes, even far from the data, so "
        "every part of the generated cloud keeps being pulled towards some mode. Watch all eight modes fill in."),
    "CFG particles": (
        "Johnson & Zhang's composite functional gradient. The purple paths are generated points moved T times "
        "uphill on D (D estimates log p/q, so uphill means 'towards the data, away from the samples'); then G is "
        "fitted by least squares to land on the moved points. The generator follows its own particles."),
    "grid25": (
        "Twenty-five narrow modes on a square grid, 2 apart. A WGAN-GP with wider networks (128 units) and a "
        "learning-rate decay: watch *modes captured* climb to 25 first (the critic's gradient reaches every empty "
        "mode), then the high-quality fraction rise as the decaying rates let G settle onto them. The orange "
        "samples come from a running average of G's weights (*G weight average* in the sidebar): G itself keeps "
        "circling the equilibrium a little, and its average sits tighter on the modes. Set it to 0 to compare."),
}


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


def lesson_note(exp: Experiment) -> None:
    name = st.query_params.get(PRESET) or st.session_state.get(PRESET)
    if name in LESSON_TEXT:
        st.info(f"**Lesson: {name}.** {LESSON_TEXT[name]}", icon=":material/school:")


def _timeline_pick(exp: Experiment, trainer) -> dict[str, Any] | None:
    """While paused, a slider over recorded snapshots; returns the chosen one (None: the live one)."""
    s = live.state(exp)
    its = trainer.timeline.iterations()
    if s is None or s.playing or len(its) < 2:
        return None
    pick = st.select_slider("Timeline: scrub back through the run", options=its, value=its[-1],
                            format_func=lambda i: f"{i:,}", key=f"gan.timeline.{len(its)}.{its[-1]}",
                            help="Snapshots recorded while training (up to 60, thinned evenly over the run).")
    return None if pick == its[-1] else trainer.timeline.get(pick)


class GameView(live.View):
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
            self.live = trainer.snapshot()
            trainer.timeline.add(trainer.iteration, self.live)
        return self.old or self.live

    def layout(self, trainer) -> None:
        self._snapshot(trainer)
        self.old = _timeline_pick(self.exp, trainer)
        self.side = self.opts["show_dstar"] and trainer.log_p_grid is not None
        if self.side:
            self.main_col, *self.side_cols = st.columns([1.25, 1, 1])
        else:
            self.main_col, _ = st.columns([1.4, 1])
        self.below = st.container()

    def main(self, trainer) -> Callable[[], None]:
        """Under the run's lock, take what the figure needs; the returned function builds and shows
        it after the lock is released, while training goes on."""
        from dgm.viz import gan as vg

        snap, box, opts = self._snapshot(trainer), trainer.data.box, self.opts

        def show() -> None:
            with self.main_col:
                if self.old is not None:
                    st.caption(f"Showing the snapshot at iteration {self.old['iteration']:,} (the curves show the "
                               "whole run).")
                common.plot(lambda: vg.game(snap, box, show_manifold=opts["show_manifold"],
                                            show_arrows=opts["show_arrows"]), key="gan.game")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        from dgm.viz import gan as vg

        snap, data = self._snapshot(trainer), trainer.data
        rows, has_evals = trainer.history.merged(), bool(trainer.history.evals)
        caption = _metrics_caption(trainer)

        def show() -> None:
            figs = vg.main_figures(snap, rows, data)
            if self.side:
                for col, name, key in zip(self.side_cols, ("learned_d", "dstar"), ("gan.learned_d", "gan.dstar_fig")):
                    with col:
                        common.plot(lambda name=name: figs[name], key=key)
            with self.below:
                names = ["losses"] + ([n for n in ("modes", "mode_kl", "mmd", "js") if n in figs] if has_evals else [])
                for row in (names[:3], names[3:]):
                    for col, n in zip(st.columns(3), row):
                        with col:
                            common.plot(lambda n=n: figs[n], key=f"gan.{n}")
                st.caption(caption)

        return show


def _metrics_caption(trainer) -> str:
    from dgm.gan import JS_RESOLUTION

    ev = trainer.latest_eval
    parts = []
    if "modes" in ev:
        parts.append(f"modes {int(ev['modes'])}/{len(trainer.data.centers)}, high quality {ev['high_quality']:.1%}, "
                     f"mode KL {ev['mode_kl']:.3f}")
    if "mmd" in ev:
        parts.append(f"MMD² {ev['mmd']:.2e}")
    if "js" in ev:
        parts.append(f"JS {ev['js']:.3f} nats")
    where = f" (at iteration {trainer.history.evals[-1]['step']:,})" if trainer.history.evals else ""
    h = trainer.kde_bandwidth(trainer.generate()) if trainer.data.std is None else max(
        trainer.data.std, (trainer.data.box[1] - trainer.data.box[0]) / JS_RESOLUTION)
    js_note = (f" JS and D* use the exact p and a Gaussian KDE q of 2,500 samples (bandwidth h = {h:.3g}) on a "
               f"{JS_RESOLUTION}×{JS_RESOLUTION} grid over the plot's box." if trainer.log_p_grid is not None else
               " This data set has no exact density, so JS and D* are not shown.")
    every = f"{trainer.eval_every:,}"
    return ((f"Metrics on 2,500 samples, every {every} steps: " + "; ".join(parts) + where + "." if parts else
             f"The metric curves (modes, mode KL, MMD, JS) appear after the first evaluation, at step {every}.")
            + js_note + " High quality: within 3 std of the nearest mode "
            "centre; a mode is captured when it is the nearest centre of a high-quality sample.")


def theory() -> None:
    with st.expander("Theory: the game, the optimal D, the log D trick, Lipschitz critics, mode collapse"):
        st.markdown("**The minimax game.** D outputs the probability that x is real; G maps noise z to points. "
                    "D maximises, and G minimises, the same value:")
        st.latex(r"\min_G \max_D \; V(G,D) = \mathbb{E}_{x\sim p}\,[\log D(x)] + \mathbb{E}_{z\sim p(z)}\,[\log(1-D(G(z)))]")
        st.markdown("**The optimal discriminator.** For a fixed G with sample density q, maximising the integrand "
                    "point by point gives")
        st.latex(r"D^*(x) = \frac{p(x)}{p(x)+q(x)}")
        st.markdown("which is the right-hand panel. Putting D* back into V turns the game into a divergence:")
        st.latex(r"V(G, D^*) = 2\,\mathrm{JS}(p\,\|\,q) - \log 4, \qquad "
                 r"\mathrm{JS}(p\|q) = \tfrac12 \mathrm{KL}\!\left(p \,\middle\|\, \tfrac{p+q}{2}\right) + "
                 r"\tfrac12 \mathrm{KL}\!\left(q \,\middle\|\, \tfrac{p+q}{2}\right)")
        st.markdown("so a generator facing a perfect discriminator minimises JS, which is 0 only when q = p "
                    "(and then D* = 1/2 everywhere). The JS curve on this page is that quantity, measured.")
        st.markdown("**Why the log D trick.** Write D = σ(l) with l the logit. The saturating generator loss and "
                    "its gradient are")
        st.latex(r"\log(1-\sigma(l)),\quad \frac{\partial}{\partial l} = -\sigma(l) \qquad\text{vs.}\qquad "
                 r"-\log \sigma(l),\quad \frac{\partial}{\partial l} = -(1-\sigma(l))")
        st.markdown("Early on D rejects the samples easily, so σ(l) ≈ 0: the saturating gradient vanishes exactly "
                    "when G most needs a signal, while the non-saturating one is close to its largest value. Both "
                    "push in the same direction (∇l); only the weight differs (Johnson & Zhang read this as a "
                    "step-size factor s(x) in front of ∇D).")
        st.markdown("**Wasserstein critics need a Lipschitz bound.** WGAN replaces the classifier by a critic f and "
                    "the game by the Kantorovich–Rubinstein dual of the earth mover's distance:")
        st.latex(r"W(p,q) = \sup_{\|f\|_L \le 1} \mathbb{E}_{p}[f(x)] - \mathbb{E}_{q}[f(x)]")
        st.markdown("Without the constraint the supremum is infinite. *Weight clipping* keeps every weight in "
                    "[−c, c]; a network of bounded weights has a bounded slope, so f is K-Lipschitz for some K "
                    "(crude: it also limits what f can express). The *gradient penalty* adds "
                    "λ E(‖∇f(x̂)‖ − 1)² at points between data and samples, where an optimal 1-Lipschitz critic has "
                    "slope exactly 1. *Spectral normalisation* divides each layer by its largest singular value, so "
                    "each layer, and with 1-Lipschitz activations the whole net, is at most 1-Lipschitz.")
        st.markdown("**Composite functional gradient (CFG).** Trained by logistic regression, D(x) ≈ log p(x)/q(x). "
                    "Moving every sample a little uphill,")
        st.latex(r"x \leftarrow x + \eta\, \nabla D(x)")
        st.markdown("decreases KL(p‖q) to first order (Johnson & Zhang, 2018). Repeating it T times builds a deeper "
                    "and deeper generator; xICFG keeps G a fixed network by regressing it onto the moved points, "
                    "½‖G(z) − x_T‖². That is what the CFG loss here does, with one discriminator per outer step.")
        st.markdown("**Mode collapse.** G is rewarded for samples D cannot reject, not for covering p. If all "
                    "samples sit on one mode, D learns to reject that mode, and G can jump to another one instead of "
                    "spreading out: the pair chases each other from mode to mode. The symptom is measurable: few "
                    "modes captured, a high mode KL, while each sample still looks sharp (high quality).")
