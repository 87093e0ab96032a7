"""Normalizing flows: watch each invertible layer warp space and density, trained live."""

from dgm.experiments import get
from dgm.ui import common, controls, live
from dgm.ui import flows as ui

exp = get("flow")
cfg = controls.config_sidebar(exp)
common.header("Normalizing flows", ui.INTRO)
cfg = ui.check(cfg)
ui.direction_note(cfg)
live.loop(exp, cfg, ui.FlowView())
ui.theory()
