"""Divergences: a simple q fitted to a fixed mixture p under seven divergences at once, live."""

import streamlit as st

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import divergences as ui

exp = get("divergence")
cfg = controls.config_sidebar(exp)
common.page_header(exp)

state = view.loop(exp, cfg, ui.DivergenceView(cfg), warm_steps=ui.WARM_STEPS)

st.divider()
ui.restarts_panel(cfg, state.trainer)
st.divider()
ui.separation_panel(cfg)
common.theory(exp)
