"""Autoregressive models: an exact likelihood one pixel at a time, and why sampling is slow."""

from dgm.core.registry import get
from dgm.ui import autoregressive as ui
from dgm.ui import common, controls, view

exp = get("autoregressive")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
view.loop(exp, cfg, ui.ARView(cfg))
common.theory(exp)
