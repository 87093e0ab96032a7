"""The normalizing-flows page's Streamlit parts: the objective check, the direction note and the live
view. The text is in dgm/families/flows/lessons.py."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import streamlit as st

from dgm.families.flows import figures as fviz
from dgm.families.flows import trainer as flows
from dgm.ui import common, view
from dgm.ui.controls import is_bool, view_param

LAYER_KEY = "flow.layer"
LINEAR_KEY = "flow.linear"
#: while the run plays, the layer-by-layer panels are redrawn this often (seconds; the other panels every second)
LAYERS_EVERY = 3.0
view_param(LAYER_KEY, lambda raw: raw.isascii() and raw.isdigit() and 1 <= int(raw[:4]) <= 1000)  # the slider keeps it to the layers
view_param(LINEAR_KEY, is_bool)

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
        parts.append(f"modes covered {int(e['modes'])}/{len(trainer.data.centers)} (each holding over "
                     f"{flows.MODE_SHARE:.0%} of q's samples)")
    if "w1" in e:
        parts.append(f"W1 {e['w1']:.3f} (exact optimal transport between 1,000 samples of q and 1,000 held-out "
                     f"points; two sets of true samples: {e['w1_floor']:.3f})")
    if parts:
        st.caption(" · ".join(parts) + f" (evaluated {trainer.eval_schedule()})")


class FlowView(view.View):
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
                   "often stretch one axis far more than the other): read the scale off the axes below. While the "
                   f"run plays, these panels are redrawn every {LAYERS_EVERY:g} s." +
                   (" With many layers, evenly spaced layers are shown, and the one you inspect." if n_layers + 1 > fviz.MAX_PANELS else ""))
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
        # the layer panels cost the browser most (nine panels of 500 points: ~200 ms a redraw): while the run
        # plays they are redrawn every LAYERS_EVERY seconds, so that Pause and the main view need not wait for them
        with self.layers:
            self.held(lambda: figs["layers"], "flow.layers", LAYERS_EVERY)
        with self.stage:
            for col, name in zip(st.columns(2), ["logdet", "stage"]):
                with col:
                    self.held(lambda name=name: figs[name], f"flow.{name}", LAYERS_EVERY)
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
            if "w1" in figs:
                common.plot(lambda: figs["w1"], key="flow.w1")
