"""The live training loop every page uses.

    trainer = live.loop(exp, cfg, draw)

Play / Pause / Step / Reset are buttons with callbacks. While playing, a fragment with
``run_every`` trains a short burst (about 0.1 s of work, or a fixed number of steps) and redraws.
The trainer lives in ``st.session_state`` under a per-page key, so every browser session has its
own. A change of settings or seed starts a new run. A link with ``?steps=N`` replays: the page
trains exactly N steps on the CPU and stops. Divergence (NaN) shows a message with Reset and
"back to the last good state"; no traceback ever reaches the page.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from dgm import config as cfglib
from dgm import experiments
from dgm.experiments import Experiment
from dgm.train import Trainer, TrainingDiverged
from dgm.ui import common, share
from dgm.ui.controls import STEPS

log = logging.getLogger(__name__)

BURST_SECONDS = 0.1  # target work per frame while playing (with drawing, about 5 frames/s)
FRAME_INTERVAL = 0.02  # seconds between fragment reruns (work time comes on top)
SPEEDS = ["auto", 1, 10, 100, 1000]


@dataclass
class LiveState:
    trainer: Trainer
    fingerprint: str
    playing: bool = False
    error: str | None = None
    steps_per_s: float = 0.0
    burst: int = 1  # steps per frame in auto mode, adapted to BURST_SECONDS
    frames: list[float] = field(default_factory=list)  # recent frame times, for the fps readout


def _key(exp: Experiment) -> str:
    return f"_live.{exp.name}"


def state(exp: Experiment) -> LiveState | None:
    return st.session_state.get(_key(exp))


def _fingerprint(cfg: Any, seed: int, device: str, replay: int | None) -> str:
    return json.dumps([cfglib.to_dict(cfg), seed, device, replay], sort_keys=True, default=str)


def _replay_steps() -> int | None:
    raw = st.query_params.get(STEPS)
    return int(float(raw)) if raw is not None else None


def _train(s: LiveState, n: int) -> None:
    """n steps, timed; divergence becomes a message, not an exception."""
    t0 = time.perf_counter()
    try:
        s.trainer.step(n)
    except TrainingDiverged as e:
        s.error, s.playing = str(e), False
        return
    except Exception as e:  # any other failure is shown the same way, never as a traceback
        log.exception("training failed")
        s.error, s.playing = f"Training stopped with an error: {e}", False
        return
    dt = max(time.perf_counter() - t0, 1e-6)
    rate = n / dt
    s.steps_per_s = rate if s.steps_per_s == 0 else 0.7 * s.steps_per_s + 0.3 * rate
    s.burst = int(min(max(BURST_SECONDS * s.steps_per_s, 1), 5000))


def _speed_key(exp: Experiment) -> str:
    return f"{exp.name}.speed"


def _steps_per_frame(exp: Experiment, s: LiveState) -> int:
    v = st.session_state.get(_speed_key(exp), "auto")
    return s.burst if v == "auto" else int(v)


# -- button callbacks (they run before the script reruns) -----------------------------------------

def _play(exp: Experiment) -> None:
    s = state(exp)
    s.playing = not s.playing and s.error is None


def _step(exp: Experiment) -> None:
    s = state(exp)
    s.playing = False
    v = st.session_state.get(_speed_key(exp), "auto")
    _train(s, 10 if v == "auto" else int(v))


def _reset(exp: Experiment) -> None:
    s = state(exp)
    s.trainer.reset()
    s.playing, s.error, s.frames = False, None, []


def _restore(exp: Experiment) -> None:
    s = state(exp)
    s.trainer.restore_last_good()
    s.error = None


@st.cache_resource(max_entries=32, show_spinner=False)
def _pretrained(exp_name: str, cfg_json: str, seed: int, steps: int) -> dict:
    """The state after ``steps`` steps of a run, shared read-only by every session that opens the
    same lesson or replay link: thirty students opening one link cost one training. Sessions copy
    it (``restore_last_good`` deep-copies), so nothing mutable is shared."""
    exp = experiments.get(exp_name)
    trainer = exp.make(exp.config(**json.loads(cfg_json)), seed=seed, device="cpu")
    trainer.step(steps)
    return trainer._last_good


def ensure(exp: Experiment, cfg: Any, *, autoplay: bool = False, warm_steps: int = 0) -> LiveState:
    """The page's LiveState, built anew when the settings, seed or device change."""
    replay = _replay_steps()
    device = "cpu" if replay is not None else common.device()
    fp = _fingerprint(cfg, common.seed(), device, replay)
    s = state(exp)
    if s is None or s.fingerprint != fp:
        trainer = exp.make(cfg, seed=common.seed(), device=device)
        s = LiveState(trainer=trainer, fingerprint=fp, playing=autoplay and replay is None)
        st.session_state[_key(exp)] = s
        n = replay if replay is not None else warm_steps
        if n and trainer.device.type != "cpu":
            _train(s, n)  # the shared cache holds CPU runs only
        elif n:
            cfg_json = json.dumps(cfglib.to_dict(cfg), sort_keys=True)
            t0 = time.perf_counter()
            try:
                with st.spinner(f"Training {n:,} steps…"):
                    good = _pretrained(exp.name, cfg_json, common.seed(), n)
            except TrainingDiverged as e:
                s.error = str(e)
                return s
            trainer._last_good = good
            trainer.restore_last_good()  # deep copies: this session owns its state
            trainer._last_good = trainer._capture()
            s.steps_per_s = 0.0 if time.perf_counter() - t0 < 1e-2 else n / (time.perf_counter() - t0)
    return s


def controls(exp: Experiment, s: LiveState) -> None:
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1.4, 3], vertical_alignment="bottom")
    c1.button("⏸ Pause" if s.playing else "▶ Play", key=f"{exp.name}.play", on_click=_play, args=(exp,),
              type="primary", use_container_width=True, disabled=s.error is not None)
    v = st.session_state.get(_speed_key(exp), "auto")
    c2.button(f"Step ×{10 if v == 'auto' else v}", key=f"{exp.name}.step", on_click=_step, args=(exp,),
              use_container_width=True, disabled=s.error is not None)
    c3.button("↺ Reset", key=f"{exp.name}.reset", on_click=_reset, args=(exp,), use_container_width=True)
    c4.selectbox("Steps per frame", SPEEDS, key=_speed_key(exp),
                 help="auto: as many steps as fit in about 0.1 s; Step does this many (10 in auto).")


def _status(s: LiveState) -> None:
    fps = ""
    if s.playing and len(s.frames) > 2:
        span = s.frames[-1] - s.frames[0]
        fps = f" · {(len(s.frames) - 1) / span:.1f} frames/s" if span > 0 else ""
    rate = f" · {s.steps_per_s:,.0f} steps/s" if s.steps_per_s else ""
    st.caption(f"**Iteration {s.trainer.iteration:,}**{rate}{fps} · {'playing' if s.playing else 'paused'}"
               f" · {s.trainer.device.type.upper()}")


def _error_panel(exp: Experiment, s: LiveState) -> None:
    st.error(s.error, icon=":material/warning:")
    a, b, _ = st.columns([1, 2, 3])
    a.button("↺ Reset", key=f"{exp.name}.reset_err", on_click=_reset, args=(exp,), type="primary")
    last = s.trainer._last_good["iteration"]
    b.button(f"Back to the last good state (step {last:,})", key=f"{exp.name}.restore", on_click=_restore,
             args=(exp,))


def loop(exp: Experiment, cfg: Any, draw: Callable[[Trainer], None], *, autoplay: bool = False,
         warm_steps: int = 0, runtime: dict[str, Any] | None = None) -> LiveState:
    """Controls, status line and the live figures for ``exp`` with config ``cfg``.

    ``draw(trainer)`` renders the page's figures from ``trainer.snapshot()`` and ``history``;
    it runs after every burst while playing. ``warm_steps`` trains that many steps when a run
    starts, so the page opens on a fitted model. ``runtime`` holds settings that change how the
    next steps run without restarting the run (e.g. the GAN's "train only D"): each is set as an
    attribute of the trainer before every burst."""
    s = ensure(exp, cfg, autoplay=autoplay, warm_steps=warm_steps)
    for k, v in (runtime or {}).items():
        setattr(s.trainer, k, v)
    controls(exp, s)
    share.bar(exp, s, _key(exp))

    @st.fragment(run_every=FRAME_INTERVAL if s.playing else None)
    def frame() -> None:
        cur = state(exp)
        if cur is None:
            return
        if cur.playing and cur.error is None:
            _train(cur, _steps_per_frame(exp, cur))
            cur.frames = (cur.frames + [time.perf_counter()])[-20:]
            if cur.error is not None:
                st.rerun(scope="app")  # stop the timer and show the message
        if cur.error:
            _error_panel(exp, cur)
        _status(cur)
        try:
            draw(cur.trainer)
        except Exception as e:  # a figure must never take the page down
            log.exception("drawing failed")
            st.error(f"Could not draw the figures: {e}", icon=":material/warning:")

    frame()
    return s
