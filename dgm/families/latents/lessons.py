"""The latents page's text, its lessons and the Experiment record."""

from __future__ import annotations

from dgm.core.registry import Experiment, Lesson, PageText
from dgm.families.latents.figures import figures
from dgm.families.latents.trainer import LatentsConfig, make_trainer, samples

INTRO = (
    "A latent-variable model draws a code z from a prior p(z) and an observation from a decoder p(x|z). "
    "The **density network** has no encoder at all: it scores an x by averaging p(x|z) over K codes drawn "
    "from the prior, and trains the decoder on that estimate. Press **Play** and watch the estimate against "
    "K: with few samples it is far below what an encoder's importance-weighted bound (IWAE) finds for the "
    "**same decoder**. Likelihoods are in nats per image on the test digits (17 grey levels per pixel) or "
    "nats per point on 2D data."
)

THEORY_TITLE = "Theory: the Monte Carlo marginal likelihood, and why an encoder helps"
THEORY = (
    "**The estimate.** The marginal likelihood is an expectation over the prior, so K prior samples give "
    "an unbiased estimate of p(x). In logarithms the sum must be taken with log-sum-exp: the terms "
    "log p(x|z_k) of a digit are around −100 nats, and their exponentials underflow.",
    r"$$\log p(x) \approx \log \frac1K \sum_{k=1}^K p(x|z_k) = \operatorname{logsumexp}_k "
    r"\log p(x|z_k) - \log K,\qquad z_k \sim p(z)",
    "**Bias and variance.** The logarithm of an unbiased estimate is biased low (Jensen), and the "
    "bias shrinks only as the estimate's relative variance does. A prior sample rarely lands where "
    "p(z|x) has its mass; the fewer land there, the noisier the estimate. The region shrinks "
    "exponentially with the dimension of z, so the K needed grows exponentially too.",
    "**An encoder fixes it.** Importance sampling from q(z|x) close to the posterior puts the samples "
    "where they count. IWAE with k = 100 samples from a fitted encoder bounds log p(x) of the same "
    "decoder from below, and is usually much tighter than thousands of prior samples:",
    r"$$\log p(x) \ge \mathbb{E}\Big[\log \frac1k \sum_{i=1}^k \frac{p(x|z_i)\,p(z_i)}{q(z_i|x)}\Big],"
    r"\qquad z_i \sim q(z|x)",
    "On this page the encoder is fitted alongside the density network to the current decoder (its "
    "gradients never reach the decoder), so both numbers measure one model. With **train the decoder "
    "with = encoder** the decoder is trained as a VAE instead, on the ELBO.",
)

LESSONS = (
    Lesson(
        "the density network needs thousands of samples",
        {"model": "density_net", "latent": 4, "k": 100},
        "a 4-dimensional z: the prior's Monte Carlo estimate is still climbing at K = 1000, far under IWAE",
        "Press **Play** and watch the K figure: each tenfold K raises the estimate and narrows its bars, "
        "yet at K = 1000 it stays below the dashed IWAE line, which uses 100 samples from an encoder. "
        "Raise the latent dimension to see the gap widen.",
    ),
    Lesson(
        "an encoder fixes it",
        {"model": "density_net", "latent": 4, "fit": "encoder"},
        "the same decoder trained as a VAE: the encoder's samples land where p(z|x) is, prior samples do not",
        "With an encoder the decoder learns to use z, and IWAE(100) rises well above the density network's "
        "figures. The prior's Monte Carlo estimate of this better model is worse still: the posteriors are "
        "narrow and prior samples miss them.",
    ),
    Lesson(
        "density network on ring8",
        {"model": "density_net", "data": "ring8", "latent": 1, "k": 100},
        "a 1-dimensional z pushed through the decoder traces a curve through the eight modes",
        "Watch the prior's samples pushed through the decoder (red): one closed curve has to visit all "
        "eight modes, and the learned density shows the bridges between them.",
    ),
)

EXPERIMENT = Experiment(
    name="latents",
    help="latent variables without an encoder and discrete latents: density network (digits or 2D data)",
    config=LatentsConfig,
    trainer=make_trainer,
    figures=figures,
    samples=samples,
    lessons=LESSONS,
    text=PageText("Latent variables", INTRO, THEORY_TITLE, THEORY),
)
