"""Normalizing flows: watch each invertible layer warp space and density, trained live."""

import streamlit as st

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import flows as ui

exp = get("flow")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
cfg = ui.check(cfg)
live = st.container()  # the figure first: the note on the layers' costs goes below it
ui.direction_note(cfg)
with live:
    view.loop(exp, cfg, ui.FlowView())
common.theory(exp)
