"""Arena: every family on the same data and budget, the taxonomy table measured."""

from dgm.core.registry import get
from dgm.ui import common, controls, view
from dgm.ui.arena import ArenaView, contrasts

exp = get("arena")
cfg = controls.config_sidebar(exp)
common.page_header(exp)
view.loop(exp, cfg, ArenaView())
contrasts()
common.theory(exp)
