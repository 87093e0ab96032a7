"""Divergences: a simple q fitted to a fixed mixture p under seven divergences at once, live."""

import streamlit as st

from dgm.experiments import get
from dgm.ui import common, controls, live
from dgm.ui import divergences as ui

exp = get("divergence")
cfg = controls.config_sidebar(exp)
common.header("Divergences: mode covering vs mode seeking", ui.INTRO)

state = live.loop(exp, cfg, ui.DivergenceView(cfg), warm_steps=ui.WARM_STEPS)

st.divider()
ui.restarts_panel(cfg, state.trainer)
ui.theory()
