"""The diffusion page's Streamlit parts: the settings check, the view options (time t, field, weighting), the
live view and the measurements on request (quality against NFE, against the guidance scale). The text is in
dgm/families/diffusion/lessons.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import streamlit as st

from dgm.core.registry import Experiment
from dgm.families.diffusion import figures as df
from dgm.families.diffusion import sweeps
from dgm.families.diffusion.trainer import DIGITS, is_mixture
from dgm.ui import common, session, view
from dgm.ui.controls import is_bool, view_param

T_KEY, FIELD_KEY, WEIGHT_KEY = "diffusion.t", "diffusion.field", "diffusion.weighted"
SWEEP_KEY = "_diffusion.sweep"  # session state: the last measurement on request
REQUEST_KEY = "_diffusion.sweep_requested"  # set by the buttons' callback
T_MIN, T_MAX = 0.01, 1.0


def _is_time(raw: str) -> bool:
    """A value of the time slider in a link: a plain decimal in [T_MIN, T_MAX]."""
    plain = raw.isascii() and len(raw) <= 12 and raw.replace(".", "", 1).isdigit()
    return plain and T_MIN <= float(raw) <= T_MAX


view_param(T_KEY, _is_time)
view_param(FIELD_KEY, lambda raw: raw in df.FIELDS)
view_param(WEIGHT_KEY, is_bool)


def check(cfg):
    """Guidance needs class labels: only a Gaussian mixture's components provide them."""
    if cfg.conditional and (cfg.data in (DIGITS, "custom") or ":" in cfg.data or not is_mixture(cfg.data)):
        st.warning(f"Classifier-free guidance uses each mixture component as a class, and **{cfg.data}** is not a "
                   "Gaussian mixture: training without labels instead.", icon=":material/info:")
        return dataclasses.replace(cfg, conditional=False)
    return cfg


def view_options(cfg) -> dict[str, Any]:
    """The time t of the field views, which field the arrows show, and the error's weighting (in the link too)."""
    a, b, c = st.columns([2, 1, 1], vertical_alignment="bottom")
    t = a.slider("Time t (0: data, 1: noise)", T_MIN, T_MAX, 0.1, 0.01, key=T_KEY, bind="query-params",
                 help="The noise level of the field views and the forward process; moved to the nearest level the "
                      "network is trained on (DDPM's T steps, the score model's L levels).")
    images = cfg.data == DIGITS
    kind = b.radio("Arrows show", df.FIELDS, horizontal=True, key=FIELD_KEY, bind="query-params", disabled=images,
                   help="score: ∇log p_t(x) = −ε/σ; velocity: the probability-flow ODE's dx/dt (flow matching learns "
                        "it directly).")
    weighted = c.toggle("Weight the error by p_t", value=True, key=WEIGHT_KEY, bind="query-params", disabled=images,
                        help="On: σ²|s_θ − ∇log p_t|² times the noised density (its integral is the score error at t). "
                             "Off: the error itself, large wherever there is no data.")
    return {"t": float(t), "kind": kind, "weighted": bool(weighted)}


def _caption(trainer) -> str:
    e, parts = trainer.latest_eval, []
    if "modes" in e:
        parts.append(f"modes {int(e['modes'])}/{len(trainer.data.centers)}, high quality {e['high_quality']:.1%}, "
                     f"mode KL {e['mode_kl']:.3f}")
    if "mmd" in e:
        se = f" ± {e['mmd_se']:.1e}" if "mmd_se" in e else ""
        parts.append(f"MMD² {e['mmd']:.2e}{se} (true samples: {e['mmd_floor']:.1e})")
    if "w1" in e:
        parts.append(f"W1 {e['w1']:.3f} on 1,000 points (true samples: {e['w1_floor']:.3f})")
    if "score_error" in e:
        parts.append(f"score error {e['score_error']:.3g}")
    if "nll" in e:
        parts.append(f"NLL {e['nll']:.3f} nats (entropy {trainer.entropy:.3f})")
    if "test_loss" in e:
        parts.append(f"held-out denoising loss {e['test_loss']:.3f}")
    if "nearest" in e:
        parts.append(f"the samples lie {e['nearest']:.2f}× as far from their nearest training digit as the test "
                     "digits do (noise: 3.7)")
    r = trainer.runtime
    how = f"{r.sampler}, {int(e['nfe'])} NFE" if "nfe" in e else r.sampler
    if not parts:
        return f"The metrics appear at the first evaluation, at step {trainer.eval_every:,}."
    where = f" at step {trainer.history.evals[-1]['step']:,}" if trainer.history.evals else ""
    reflow = ""
    if trainer.config.model == "flow" and (trainer.reflowed or trainer.config.coupling == "ot"):
        reflow = (" The exact field is that of independent pairs; with " +
                  ("the reflow round's pairs" if trainer.reflowed else "pairs matched by optimal transport") +
                  " the network learns another, straighter field, so its error against it is no flaw, and the "
                  "stochastic samplers (ancestral, Langevin), which read it as a score, go wrong.")
    n = "300 samples" if trainer.images else "2,500 samples"
    return (f"Evaluated every {trainer.eval_every:,} steps on {n} ({how}){where}: " + "; ".join(parts)
            + f".{reflow} The curves use the sampler chosen at the time.")


class DiffusionView(view.View):
    """The learned field and its error at every frame; the exact field, the forward and reverse processes,
    the samples and the curves about once a second while the run plays. For the digits: the denoising row at
    every frame, the samples and curves once a second."""

    def __init__(self, opts: dict[str, Any]):
        self.opts = opts
        self.snap: dict[str, Any] | None = None  # the field snapshot of the last frame

    def layout(self, trainer) -> None:
        if trainer.images:
            self.top = st.container()
            self.caption = st.container()  # the evaluation's numbers under the main figures: the figure first
            self.mid = st.columns(3)
        else:
            self.top = st.columns(3)
            self.caption = st.container()
            self.mid = st.columns(3)
        self.curves = st.container()

    def main(self, trainer) -> Callable[[], None]:
        o = self.opts
        if trainer.images:
            d = df.denoising_snapshot(trainer, o["t"])

            def show_images() -> None:
                with self.top:
                    common.plot(lambda: df.denoising(d), key="diffusion.denoising")

            return show_images
        snap = self.snap = df.field_snapshot(trainer, o["t"], o["kind"])

        def show() -> None:
            with self.top[0]:
                common.plot(lambda: df.field(snap, "learned"), key="diffusion.learned")
            with self.top[2]:
                if "error" in snap:
                    common.plot(lambda: df.error_map(snap, o["weighted"]), key="diffusion.error")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        o = self.opts
        s = df.sample_snapshot(trainer)
        curves = df.curve_figures(trainer.history.merged(), trainer)
        caption = _caption(trainer)
        if trainer.images:
            def show_images() -> None:
                with self.caption:
                    st.caption(caption)
                with self.mid[0]:
                    common.plot(lambda: df.image_grid(s["samples"][:36], 6, f"Samples: {s['sampler']}, {s['nfe']} NFE"),
                                key="diffusion.samples")
                with self.mid[1]:
                    common.plot(curves["nearest"], key="diffusion.nearest")
                with self.mid[2]:
                    common.plot(curves["test_loss"], key="diffusion.test_loss")

            return show_images
        snap = self.snap if self.snap is not None and self.snap["iteration"] == trainer.iteration else \
            df.field_snapshot(trainer, o["t"], o["kind"])
        box, x0, eps = trainer.data.box, *df.forward_points(trainer)
        name = trainer.data.name

        def show() -> None:
            with self.caption:
                st.caption(caption)
            with self.top[1]:
                if "exact" in snap:
                    common.plot(lambda: df.field(snap, "exact"), key="diffusion.exact")
                else:
                    st.info(f"**{name}** is not a Gaussian mixture: its exact score is unknown, so only the learned "
                            "field is shown.", icon=":material/info:")
            for col, key, build in ((self.mid[0], "forward", lambda: df.forward(snap, x0, eps)),
                                    (self.mid[1], "trajectories", lambda: df.trajectories(s, box)),
                                    (self.mid[2], "samples", lambda: df.samples(s, box))):
                with col:
                    common.plot(build, key=f"diffusion.{key}")
            with self.curves:
                names = [n for n in ("loss", "modes", "score_error", "mmd", "w1", "nll") if n in curves]
                for row in (names[:3], names[3:]):
                    for col, n in zip(st.columns(3), row):
                        with col:
                            common.plot(curves[n], key=f"diffusion.curve.{n}")

        return show


def _request(kind: str) -> None:
    st.session_state[REQUEST_KEY] = kind


def _measure(exp: Experiment, kind: str) -> None:
    """Measure on the page's current model (a replica of the run, when a worker trains it)."""
    s = session.state(exp)
    if s is None:
        return
    what = "every sampler at 1 to 100 NFE" if kind == "nfe" else "guidance scales 0 to 8"
    with st.spinner(f"Measuring {what} on 2,500 samples each…"):
        with s.lock:
            res = sweeps.nfe_sweep(s.trainer) if kind == "nfe" else sweeps.guidance_sweep(s.trainer)
            figs = sweeps.sweep_figures(res, s.trainer)
    st.session_state[SWEEP_KEY] = (kind, res, figs)


def measurements(exp: Experiment, trainer) -> None:
    """Quality against NFE for every sampler (and against the guidance scale), measured on request."""
    st.subheader("Quality against the number of steps")
    a, b, _ = st.columns([1, 1, 2])
    a.button("Measure against NFE", key="diffusion.nfe_btn", on_click=_request, args=("nfe",),
             help="Every sampler at 1 to 100 network evaluations, on 2,500 samples each (a few seconds).")
    if trainer.n_classes:
        b.button("Sweep the guidance scale", key="diffusion.guidance_btn", on_click=_request, args=("guidance",),
                 help="The run's sampler at guidance scales 0 to 8, with the network and with the exact scores "
                      "(about ten seconds).")
    kind = st.session_state.pop(REQUEST_KEY, None)
    if kind is not None:
        _measure(exp, kind)
    saved = st.session_state.get(SWEEP_KEY)
    if not saved:
        st.caption("Press a button to measure the model as it is now (training goes on meanwhile).")
        return
    kind, res, figs = saved
    what = "NFE" if kind == "nfe" else "the guidance scale"
    st.caption(f"Measured against {what} at step {res['iteration']:,}" +
               (f" ({res['sampler']}, {res['nfe']} NFE)" if kind == "guidance" else
                f"; the dashed line is the {res['sampler']} sampler with the exact denoiser" if res.get("exact") else "")
               + ". Press again to measure the current model.")
    names = [n for n in figs if not n.endswith(("clouds", "images"))]
    if names:
        for col, n in zip(st.columns(len(names)), names):
            with col:
                common.plot(figs[n], key=f"diffusion.{n}")
    for n in figs:
        if n.endswith(("clouds", "images")):
            common.plot(figs[n], key=f"diffusion.{n}")
