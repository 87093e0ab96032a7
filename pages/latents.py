"""Latent variables: the density network without an encoder, and discrete latents (Gumbel-softmax)."""

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import latents as ui

exp = get("latents")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
view.loop(exp, cfg, ui.LatentsView())
ui.estimator_panel(exp, cfg)
common.theory(exp)
