"""GAN dynamics: the two-player game made visible, mode collapse measured."""

import streamlit as st

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import gan as ui

exp = get("gan")
cfg = controls.config_sidebar(exp)
common.page_header(exp)

live = st.container()  # the figure first: the step mode and view options are drawn into the page after it
left, right = st.columns([1, 1.6], vertical_alignment="bottom")
with left:
    mode = ui.mode_radio()
with right:
    opts = ui.view_options()

with live:
    view.loop(exp, cfg, ui.GameView(exp, opts), runtime={"mode": mode})
common.theory(exp)
