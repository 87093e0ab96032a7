"""Live loop demo: a Gaussian fitted by maximum likelihood, to show the training controls."""

import streamlit as st

from dgm.experiments import get
from dgm.ui import common, controls, live

exp = get("demo")
cfg = controls.config_sidebar(exp)
common.header(
    "Live loop demo",
    "The smallest model in the app: a full-covariance Gaussian **q** fitted to samples of **p** by "
    "maximum likelihood with the optimiser below. Its optimum is known in closed form (the mean and "
    "covariance of p), so it shows the training controls at work on a model whose answer you can check. "
    "Try a learning rate of 100 with SGD to see what divergence looks like.",
)


class DemoView(live.View):
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


live.loop(exp, cfg, DemoView())
