"""Diffusion and flow matching: learned scores against exact ones, samplers, guidance, reflow."""

import streamlit as st

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import diffusion as ui

exp = get("diffusion")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
cfg = ui.check(cfg)
live = st.container()  # the figure first: the view options are drawn into the page after it
opts = ui.view_options(cfg)
with live:  # the sampling knobs are runtime settings (exp.split): changing them never restarts the run
    state = view.loop(exp, cfg, ui.DiffusionView(opts))
ui.measurements(exp, state.trainer)
common.theory(exp)
