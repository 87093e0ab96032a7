"""The demo page's text and its Experiment record."""

from __future__ import annotations

from dgm.core.registry import Experiment, PageText
from dgm.families.demo.figures import figures
from dgm.families.demo.trainer import DemoConfig, DemoTrainer

INTRO = (
    "The smallest model in the app: a full-covariance Gaussian **q** fitted to samples of **p** by "
    "maximum likelihood with the optimiser below. Its optimum is known in closed form (the mean and "
    "covariance of p), so it shows the training controls at work on a model whose answer you can check. "
    "Try a learning rate of 100 with SGD to see what divergence looks like."
)

EXPERIMENT = Experiment(
    name="demo",
    help="fit a Gaussian to 2D data by maximum likelihood (the live-loop demonstration)",
    config=DemoConfig,
    trainer=DemoTrainer,
    figures=figures,
    samples=lambda t, n: t.model.sample(n, t.eval_generator()).detach().cpu().numpy(),
    text=PageText("Live loop demo", INTRO),
)
