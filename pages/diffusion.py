"""Diffusion and flow matching: learned scores against exact ones, samplers, guidance, reflow."""

from dgm.core.registry import get
from dgm.families.diffusion.trainer import sampling_of, training_config
from dgm.ui import common, controls, view
from dgm.ui import diffusion as ui

exp = get("diffusion")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
cfg = ui.check(cfg)
opts = ui.view_options(cfg)
# sampling settings are runtime settings: changing them never restarts the run
state = view.loop(exp, training_config(cfg), ui.DiffusionView(opts), runtime=sampling_of(cfg))
ui.measurements(exp, state.trainer)
common.theory(exp)
