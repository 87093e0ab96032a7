"""VAE: the ELBO taken apart, the 2D latent manifold, posterior collapse."""

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui import vae as vui

exp = get("vae")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
common.theory(exp)
pair = vui.pair_picker(cfg)
view.loop(exp, cfg, vui.VaeView(pair))
vui.gradient_panel(exp)
