"""Share and export: the link to this experiment, a replay link, and downloads of the run. Every
download is bounded and stops with the server (``dgm.core.export``); a GIF replays the run from its seed,
so it is offered for runs that are their seed's (not resumed from weights) of at most GIF_MAX_STEPS."""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit, urlunsplit

import streamlit as st

from dgm.core import export as X
from dgm.core.userdata import CUSTOM
from dgm.core.registry import Experiment
from dgm.ui import common, persist, scheduling, session, shutdown, userdata

WEIGHTS_UPLOAD = "weights_upload"
log = logging.getLogger(__name__)


def page_link(extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> str:
    """The address of this page with its current settings (plus ``extra``)."""
    try:
        parts = urlsplit(st.context.url or "")
    except Exception:  # noqa: BLE001 - no browser context (AppTest)
        parts = urlsplit("")
    params = {k: v for k, v in st.query_params.to_dict().items() if k not in drop and k != persist.PARAM}
    if params.get("data") == CUSTOM and (name := userdata.active()):
        params["data"] = name  # the session's own data, by its name: the server keeps it for links (persist)
    params.update(extra or {})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def _load_weights(exp: Experiment) -> None:
    f = st.session_state.get(WEIGHTS_UPLOAD)
    s = session.state(exp)
    if f is None or s is None:
        return
    name = common.plain(f.name, 80)
    try:
        it = session.resume(exp, s, f.getvalue())
    except X.WeightsError as e:
        st.session_state["_weights.msg"] = ("error", f"{name}: {common.plain(e)} The run is as it was, paused.")
        return
    except Exception:  # a failure of ours: a message, never a traceback
        log.exception("loading weights failed")
        st.session_state["_weights.msg"] = ("error", f"{name}: these weights could not be loaded. The run is as "
                                                     "it was, paused.")
        return
    st.session_state["_weights.msg"] = ("ok", f"Resumed from {name} at step {it:,} (the optimiser starts afresh).")


def _gif_unavailable(s: session.LiveState) -> str | None:
    """Why the GIF (a replay of the run from its seed) is not offered, or None."""
    limit = scheduling.REPLAY_SECONDS
    if s.resumed:
        return "A GIF replays the run from its seed; this run was resumed from a weights file."
    if s.trainer.iteration > X.GIF_MAX_STEPS:
        return f"A GIF replays the run from its seed: at most {X.GIF_MAX_STEPS:,} steps."
    if s.steps_per_s and s.trainer.iteration / s.steps_per_s > limit:
        return (f"A GIF replays the run from its seed: at {s.steps_per_s:,.1f} steps/s that would take over "
                f"{limit / 60:g} minutes here.")
    return None


def bar(exp: Experiment, s: session.LiveState, cols=None) -> None:
    """Share / export / resume, in popovers, in three slots of the control bar (``cols``, e.g. one row three
    times; a row of their own if None), each as wide as its label."""
    t = s.trainer
    a, b, c = cols or [st.container(horizontal=True, vertical_alignment="center", gap="small")] * 3
    with a.popover("Link", icon=":material/link:", width="content", help="Copy a link to this page or run"):
        st.caption("This page with all its settings (copy with the icon on the right):")
        st.code(page_link(drop=("steps",)), language=None, wrap_lines=True)
        st.caption(f"A replay link: opens this run trained for exactly {t.iteration:,} steps on the CPU and stopped."
                   + (" This run was resumed from a weights file, so the link replays its seed's run, not this one."
                      if s.resumed else ""))
        st.code(page_link({"seed": str(common.seed()), "steps": str(t.iteration)}), language=None, wrap_lines=True)
    make = lambda: exp.make(t.config, seed=t.seed, device=t.device)  # noqa: E731
    with b.popover("Export", icon=":material/download:", width="content",
                   help="Metric history, figures, an animated GIF, model weights"):
        st.download_button("Metric history (CSV)", data=lambda: X.history_csv(t), file_name=f"{exp.name}_history.csv",
                           mime="text/csv", on_click="ignore", width="stretch")
        if exp.figures:
            st.download_button("Figures (PNG and SVG, zipped)",
                               data=lambda: X.figures_zip(exp.figures(X.frozen_copy(make, t)), exp.name),
                               file_name=f"{exp.name}_figures.zip", mime="application/zip", on_click="ignore",
                               width="stretch")
            steps, why = max(t.iteration, 1), _gif_unavailable(s)
            st.download_button("The run as an animated GIF", file_name=f"{exp.name}_run.gif", mime="image/gif",
                               data=lambda: X.animation_gif(make, lambda tr: next(iter(exp.figures(tr).values())),
                                                            steps=steps, should_stop=shutdown.stopping,
                                                            max_seconds=scheduling.REPLAY_SECONDS),
                               on_click="ignore", width="stretch", disabled=why is not None,
                               help=why or "Replays this run from its seed and draws 16 frames from step 0 to now.")
        st.download_button("Model weights (safetensors)", data=lambda: X.weights_bytes(t, exp.name),
                           file_name=f"{exp.name}_step{t.iteration}.safetensors", mime="application/octet-stream",
                           on_click="ignore", width="stretch")
    with c.popover("Resume", icon=":material/upload:", width="content",
                   help="Continue from a weights file"):
        st.file_uploader("Model weights (.safetensors) saved from this page with the same settings",
                         type=["safetensors"], key=WEIGHTS_UPLOAD, on_change=_load_weights, args=(exp,))
    msg = st.session_state.pop("_weights.msg", None)
    if msg:
        (st.success if msg[0] == "ok" else st.error)(msg[1])
