"""The arena's page text and its experiment (``python -m dgm arena`` has its own CLI: dgm/arena/cli.py)."""

from __future__ import annotations

from dgm.arena.figures import figures
from dgm.arena.trainer import ArenaConfig, ArenaTrainer
from dgm.core.registry import Experiment, PageText

INTRO = (
    "Every model family of this app on the same data, each with its own page's default settings and the same "
    "budget of steps, trained in turn so that all of them advance together. The home page's taxonomy table "
    "(likelihood, sample quality, sampling speed, compression, stability) is typed in from the lectures; here it "
    "is measured. Families added later join by registering."
)

THEORY_TITLE = "Likelihood and samples can disagree"
THEORY = (
    "A model's held-out log-likelihood and the quality of its samples answer different questions (Theis, van "
    "den Oord and Bethge 2016). Mix a perfect model with weight 1% and noise with weight 99%: since",
    "$$\\log\\big(0.01\\,p(x) + 0.99\\,u(x)\\big) \\ge \\log p(x) - \\log 100,$$",
    "the mixture's NLL is at most log 100 ≈ 4.6 nats worse per example, yet 99 samples in 100 are noise. The other "
    "way round, a kernel density estimate with a tiny bandwidth on the training set draws samples that look "
    "perfect (they are the training points) while held-out points fall between its kernels: a poor likelihood.",
    "Sample quality itself has two sides (Naeem et al. 2020): precision (the share of samples near the data) and "
    "recall (the share of the data near some sample); density and coverage are their versions that resist "
    "outliers. A GAN tends to sharp samples on part of the data (high precision, lower coverage); a flow trained "
    "by maximum likelihood covers everything, with blur between the modes (high recall, lower precision). On "
    "the digits, a small classifier's features give the Fréchet distance (Digits-FID) and an Inception-style "
    "score (Digits-IS), in the manner of FID and IS (Heusel et al. 2017; Salimans et al. 2016).",
)

EXPERIMENT = Experiment(
    name="arena",
    help="every family on the same data and budget: the taxonomy table measured (likelihood, sample quality, "
         "sampling speed, compression, stability)",
    config=ArenaConfig,
    trainer=ArenaTrainer,
    figures=figures,
    text=PageText("Arena: every family, measured", INTRO, THEORY_TITLE, THEORY),
)
