"""Live loop demo: a Gaussian fitted by maximum likelihood, to show the training controls."""

import streamlit as st

from dgm.core.registry import get
from dgm.ui import common, controls, view

exp = get("demo")
cfg = controls.config_sidebar(exp)
common.page_header(exp)


class DemoView(view.View):
    """The fit at every frame, the loss curve once a second."""

    def layout(self, trainer):
        self.fit, self.loss = st.columns(2)

    def main(self, trainer):
        fig = exp.figures(trainer)["fit"]
        with self.fit:
            common.plot(fig, key="demo.fit")

    def panels(self, trainer):
        fig = exp.figures(trainer)["loss"]
        with self.loss:
            common.plot(fig, key="demo.loss")


view.loop(exp, cfg, DemoView())
