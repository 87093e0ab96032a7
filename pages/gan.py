"""GAN dynamics: the two-player game made visible, mode collapse measured (issue 4)."""

import streamlit as st

from dgm.experiments import get
from dgm.ui import common, controls, live
from dgm.ui import gan as ui

exp = get("gan")
cfg = controls.config_sidebar(exp)
common.header("GAN dynamics", ui.INTRO)
ui.lesson_note(exp)

left, right = st.columns([1, 1.6], vertical_alignment="bottom")
with left:
    mode = ui.mode_radio()
with right:
    opts = ui.view_options()

live.loop(exp, cfg, ui.GameView(exp, opts), runtime={"mode": mode})
ui.theory()
