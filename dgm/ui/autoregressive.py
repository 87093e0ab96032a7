"""The autoregressive page's Streamlit parts: the live view (sampling one pixel at a time, -log p per pixel,
the dependency check, curves; on 2D data the density, samples and slices), the measured sampling times
beside a VAE's and a flow's one-pass sampling, and the reference lines read from the other pages' runs.
The text is in dgm/families/autoregressive/lessons.py."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st
import torch

import dgm.core.digits
from dgm.core import registry
from dgm.core.device import seeded
from dgm.families.autoregressive import figures as arf
from dgm.families.autoregressive import image_figures as imf
from dgm.families.autoregressive import plane_figures as plf
from dgm.families.autoregressive.trainer import DIGITS, ORDERINGS, SIDE
from dgm.ui import common, session, view
from dgm.ui.controls import view_param

DIGITS_KEY, ROW_KEY, COL_KEY, ORDER_KEY = ("autoregressive.digits", "autoregressive.row", "autoregressive.col",
                                           "autoregressive.ordering")
SAMPLES, NCOLS = 36, 6  # the animated batch
PIXELS_PER_FRAME = 4  # steps of the animation per frame (about 6 frames a second)
HOLD_FRAMES = 8  # frames the finished samples stay before the next batch


@functools.cache
def _digit_labels() -> tuple[str, ...]:
    """The test digits' picker options as a link holds them."""
    return tuple(f"#{i}: a {d}" for i, d in enumerate(dgm.core.digits.digits().test.y.tolist()))


def _index_in(hi: int) -> Callable[[str], bool]:
    return lambda raw: raw.isascii() and raw.isdigit() and int(raw[:4]) <= hi


view_param(DIGITS_KEY, lambda raw: raw == "" or raw in _digit_labels())
view_param(ROW_KEY, _index_in(SIDE - 1))
view_param(COL_KEY, _index_in(SIDE - 1))
view_param(ORDER_KEY, _index_in(max(ORDERINGS) - 1))  # the slider keeps it below the run's orderings


# ---- what the other pages contribute ---------------------------------------------------------------

def _vae_run(cfg) -> tuple[Any, dict[str, float]] | None:
    """The VAE page's run in this browser session (its config and latest evaluation) where it models the same
    test digits with the same categorical-17 likelihood as ``cfg``."""
    s = session.state(registry.get("vae")) if cfg.data == DIGITS else None
    c = s.trainer.config if s is not None else None
    if c is None or c.data != "digits" or c.decoder != "categorical17":
        return None
    return c, s.trainer.latest_eval


def reference_lines(cfg) -> dict[str, float]:
    """Other pages' held-out figures on the same data, from this browser session's runs (none until they
    have been computed): the VAE page's -ELBO and -IWAE on the same test digits and categorical-17
    likelihood, or the flows page's NLL on the same 2D target."""
    out: dict[str, float] = {}
    if cfg.data == DIGITS:
        if (vae := _vae_run(cfg)) is not None:
            c, e = vae
            if "elbo" in e:
                out[f"VAE page −ELBO (z = {c.latent}, step {int(e.get('best_step', 0)):,})"] = -e["elbo"]
            if "iwae" in e:
                out[f"VAE page −IWAE (k = {int(e.get('iwae_k', 0))})"] = -e["iwae"]
    elif cfg.data not in ("digits_binary",):
        s = session.state(registry.get("flow"))
        c = s.trainer.config if s is not None else None
        if c is not None and c.data == cfg.data and c.objective == "forward_kl" and "nll" in s.trainer.latest_eval:
            out[f"flows page NLL ({c.flow}, step {s.trainer.iteration:,})"] = s.trainer.latest_eval["nll"]
    return out


@st.cache_resource(show_spinner=False)
def _one_pass_samplers(device: str) -> dict[str, Callable[[int, torch.Generator], Any]]:
    """Samplers that make an image in one pass, at the sizes of the VAE and flows pages' defaults, untrained
    (the time does not depend on the weights): the VAE's decoder (through the registry), and a RealNVP of
    the flows page's default configuration built on 64 dimensions (the flows page itself works in 2D)."""
    from dgm.families.flows.trainer import FlowConfig, build_flow

    vae = registry.get("vae")
    vt = vae.make(seed=0, device=device)
    with seeded(0):
        flow = build_flow(FlowConfig(), dim=SIDE * SIDE).to(device)
    return {"VAE decoder (z = 2)": lambda n, g: vae.samples(vt, n),
            "RealNVP flow (8 coupling layers)": lambda n, g: flow.sample(n, g)}


@torch.no_grad()
def one_pass_seconds(n: int, device: torch.device) -> dict[str, float]:
    """Seconds per image of each one-pass sampler, for a batch of n."""
    out = {}
    for name, fn in _one_pass_samplers(device.type).items():
        gen = torch.Generator(device=device).manual_seed(0)
        fn(n, gen)  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        fn(n, gen)
        sync()
        out[name] = (time.perf_counter() - t0) / n
    return out


# ---- widgets -----------------------------------------------------------------------------------------

def _digit_picker(trainer) -> list[int]:
    labels = trainer.test_y.tolist()
    default = imf.default_digits(labels)
    picked = st.multiselect("Test digits", list(range(len(labels))), default=default, key=DIGITS_KEY,
                            format_func=_digit_labels().__getitem__, max_selections=8, bind="query-params",
                            help="The held-out digits whose per-pixel -log p is shown above.")
    return list(picked) or default


def _clamped_slider(label: str, key: str, hi: int, default: int, help: str) -> int:
    cur = st.session_state.get(key)
    if not isinstance(cur, int) or not 0 <= cur <= hi:
        st.session_state[key] = default
    return int(st.slider(label, 0, hi, key=key, bind="query-params", help=help))


def _pixel_and_ordering(trainer) -> tuple[int, int]:
    a, b, c = st.columns(3)
    with a:
        row = _clamped_slider("Pixel row", ROW_KEY, SIDE - 1, arf.DEFAULT_PIXEL // SIDE, "Row of the pixel whose "
                              "conditional's inputs are mapped (0 = top).")
    with b:
        col = _clamped_slider("Pixel column", COL_KEY, SIDE - 1, arf.DEFAULT_PIXEL % SIDE, "Its column (0 = left).")
    k = 0
    if trainer.n_orders > 1:
        with c:
            k = _clamped_slider("Ordering", ORDER_KEY, trainer.n_orders - 1, 0, "Which of MADE's orderings to check.")
    return row * SIDE + col, k


# ---- the view ----------------------------------------------------------------------------------------

def _summary(trainer) -> None:
    e = trainer.latest_eval
    if not e:  # (the panels' fragment writes here later: a full run must leave the container something)
        st.empty()
        return
    if not trainer.images:
        a, b, c = st.columns(3)
        a.metric("test NLL", f"{e['nll']:.3f}", help="nats per point, exact, best validation checkpoint")
        if trainer.dist.entropy is not None:
            b.metric("entropy of the target", f"{trainer.dist.entropy:.3f}", help="the floor of the NLL")
        c.metric("best step", f"{int(e['best_step']):,}")
        return
    cols = st.columns(5)
    cols[0].metric("test NLL", f"{e['nll']:.2f}", help="nats per image, exact, best validation checkpoint")
    cols[1].metric("bits per dimension", f"{e['bits_per_dim']:.3f}", help="the test NLL / (64 ln 2)")
    cols[2].metric("validation NLL", f"{e['val_nll']:.2f}", help="the current model")
    if "nll_one" in e:
        cols[3].metric("first ordering alone", f"{e['nll_one']:.2f}", help="test NLL of one ordering of the "
                       "best checkpoint: the ensemble's gain is the difference")
    cols[4].metric("best step", f"{int(e['best_step']):,}", help="the step with the best validation NLL so far")


def _timing(vs: dict) -> None:
    rec, ref = vs.get("rec"), vs.get("ref")
    if rec is None:
        st.empty()  # (as in _summary)
        return
    per = rec["seconds"] / rec["n"]
    each = " (each pass runs every ordering at once)" if len(np.unique(rec["pos"], axis=0)) > 1 else ""
    once = rec["likelihood_seconds"]
    parts = [f"Measured here: these {rec['n']} samples took {SIDE * SIDE} passes of the network{each} "
             f"({rec['seconds'] * 1e3:.0f} ms), **{per * 1e3:.2f} ms per image**; the exact likelihood of the same "
             f"images takes one pass ({once * 1e3:.1f} ms): sampling is **{rec['seconds'] / max(once, 1e-12):,.0f}× "
             f"slower**."]
    for name, sec in (ref or {}).items():
        parts.append(f"{name}, one pass: {sec * 1e3:.3f} ms per image ({per / max(sec, 1e-12):,.0f}× faster).")
    st.caption(" ".join(parts))


class ARView(view.View):
    """Digits: the samples being drawn and the per-pixel -log p at every frame; the numbers, the sampling
    times, the dependency check and the curves about once a second. 2D: the density and samples at every
    frame; the target, the slices and the curves once a second."""

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @staticmethod
    def _take_the_vae_bound(trainer) -> None:
        """The VAE page's -ELBO, where there is one, for the lesson that compares it with the exact NLL."""
        vae = _vae_run(trainer.config)
        trainer.vae_bound = -vae[1]["elbo"] if vae is not None and "elbo" in vae[1] else None

    def layout(self, trainer) -> None:
        self._take_the_vae_bound(trainer)  # before the status line (a full run: e.g. back from the VAE page)
        self.summary = st.container()
        if not trainer.images:
            self.top, self.bottom = st.columns(2), st.columns(2)
            self.curves = st.container()
            return
        left, right = st.columns([1, 1.3])
        with left:
            self.sampling, self.timing = st.container(), st.container()
        with right:
            self.pixels = st.container()
            self.digits = _digit_picker(trainer)
        st.subheader("Is it autoregressive? The dependency check")
        st.caption("The gradient of each conditional's log-probability with respect to every input pixel, averaged "
                   "over random images: a conditional may only depend on pixels that come before it in the ordering "
                   "(numbered in each cell). Orange pixels come before it but no gradient reaches it from them: the "
                   "blind spot of a plain PixelCNN, or in a MADE a pair that its random connectivity (or a unit "
                   "switched off for these inputs) leaves without a path.")
        self.pixel, self.k = _pixel_and_ordering(trainer)
        self.dep = st.columns([1.15, 1])
        st.subheader("Curves")
        self.curves = st.container()

    def _new_record(self, trainer) -> None:
        vs = self.state.view_state
        n = vs.get("records", 0)
        vs["rec"] = trainer.measure_sampling(SAMPLES, trainer.eval_generator(20 + n))
        vs["ref"] = one_pass_seconds(SAMPLES, trainer.device)
        vs["records"], vs["cursor"] = n + 1, 0

    def main(self, trainer) -> Callable[[], None]:
        if not trainer.images:
            s = plf.plane(trainer)

            def show_plane() -> None:
                with self.top[1]:
                    common.plot(lambda: plf.learned(s), key="ar.density")
                with self.bottom[0]:
                    common.plot(lambda: plf.samples(s), key="ar.samples")

            return show_plane
        vs = self.state.view_state
        if "rec" not in vs or (not self.state.playing and vs["rec"]["step"] != trainer.iteration):
            self._new_record(trainer)  # paused: samples of the model shown
        cursor = None
        if self.state.playing:
            vs["cursor"] = vs.get("cursor", 0) + PIXELS_PER_FRAME
            cursor = vs["cursor"] if vs["cursor"] < SIDE * SIDE else None
        rec, px = vs["rec"], imf.pixel_nll(trainer, self.digits)

        def show() -> None:
            with self.sampling:
                common.plot(lambda: imf.sampling_figure(rec, cursor, NCOLS), key="ar.sampling")
            with self.pixels:
                common.plot(lambda: imf.pixel_nll_figure(px), key="ar.pixels")

        return show

    def panels(self, trainer) -> Callable[[], None]:
        vs = self.state.view_state
        refs = reference_lines(self.cfg)
        rows = trainer.history.merged()
        with self.summary:
            _summary(trainer)
        if not trainer.images:
            s, sl = plf.plane(trainer), plf.slices(trainer)
            entropy = trainer.dist.entropy

            def show_plane() -> None:
                with self.top[0]:
                    common.plot(lambda: plf.target(s), key="ar.target")
                with self.bottom[1]:
                    common.plot(lambda: plf.conditionals(sl), key="ar.conditionals")
                with self.curves:
                    common.plot(lambda: arf.nll_curves(rows, refs, entropy, per="point"), key="ar.nll")

            return show_plane
        if self.state.playing and vs.get("cursor", 0) >= SIDE * SIDE + HOLD_FRAMES * PIXELS_PER_FRAME:
            self._new_record(trainer)  # the next batch, drawn here so that a frame stays cheap
        dep = imf.dependency_data(trainer, self.k)
        with self.timing:
            _timing(vs)

        def show() -> None:
            with self.dep[0]:
                common.plot(lambda: imf.dependency_figure(dep["dep"], dep["pos"], self.pixel), key="ar.dependency")
            with self.dep[1]:
                common.plot(lambda: imf.matrix_figure(dep["dep"], dep["pos"]), key="ar.matrix")
            with self.curves:
                common.plot(lambda: arf.nll_curves(rows, refs), key="ar.nll")
                if not refs and self.cfg.data == DIGITS:
                    st.caption("Play the VAE page (digits, categorical17 decoder) in this browser session and its "
                               "−ELBO and −IWAE on the same test digits appear here as reference lines.")

        return show
