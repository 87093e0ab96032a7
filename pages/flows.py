"""Normalizing flows: watch each invertible layer warp space and density, trained live."""

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import flows as ui

exp = get("flow")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
cfg = ui.check(cfg)
ui.direction_note(cfg)
view.loop(exp, cfg, ui.FlowView())
common.theory(exp)
