"""GAN lottery: the same settings on several seeds at once, trained as one batched model."""

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui.gan_seeds import SeedsView

exp = get("gan_seeds")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
view.loop(exp, cfg, SeedsView())
common.theory(exp)
