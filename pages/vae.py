"""VAE: the ELBO taken apart, the 2D latent manifold, posterior collapse (issue 6)."""

from dgm.experiments import get
from dgm.ui import common, controls, live
from dgm.ui import vae as vui

exp = get("vae")
cfg = controls.config_sidebar(exp)
common.header("VAE", vui.INTRO)
vui.theory()
pair = vui.pair_picker(cfg)
live.loop(exp, cfg, vui.VaeView(pair))
vui.gradient_panel(exp)
