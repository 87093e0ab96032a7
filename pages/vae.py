"""VAE: the ELBO taken apart, the 2D latent manifold, posterior collapse."""

import streamlit as st

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import vae as vui

exp = get("vae")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
live = st.container()  # the figure first: the options below are drawn into the page after it
pair = vui.pair_picker(cfg)
with live:
    view.loop(exp, cfg, vui.VaeView(pair))
vui.gradient_panel(exp)
common.theory(exp)
