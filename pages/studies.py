"""Studies: one experiment over a grid of settings and several seeds, with the spread over the seeds."""

from dgm.ui import common, controls
from dgm.ui.studies import page

controls.sanitize_page_without_knobs()
common.header("Studies", "Which loss is best, how often a setting collapses, which learning rate: one run cannot "
              "say, because the same settings on another seed can end elsewhere. A **study** trains every "
              "combination of the values you choose on several seeds, at the same budget, and shows each "
              "setting's median with a bootstrap interval beside every seed's result.")
page()
