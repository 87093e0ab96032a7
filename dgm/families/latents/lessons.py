"""The latents page's text, its lessons and the Experiment record."""

from __future__ import annotations

import torch

from dgm.core.registry import Experiment, Lesson, PageText, Watch, evaluated
from dgm.families.latents.figures import figures
from dgm.families.latents.trainer import GumbelTrainer, LatentsConfig, make_trainer, samples

INTRO = (
    "A latent-variable model draws a code z from a prior p(z) and an observation from a decoder p(x|z). "
    "The **density network** has no encoder at all: it scores an x by averaging p(x|z) over K codes drawn "
    "from the prior, and trains the decoder on that estimate. Press **Play** and watch the estimate against "
    "K: with few samples it is far below what an encoder's importance-weighted bound (IWAE) finds for the "
    "**same decoder**. **Discrete latents** replace z by categorical variables: the **Gumbel-softmax** VAE "
    "trains through a relaxed, differentiable sample; the **VQ-VAE** snaps each encoder output to the "
    "nearest vector of a learned codebook. Likelihoods are in nats per image on the test digits "
    "(17 grey levels per pixel) or nats per point on 2D data."
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
    "**Gumbel-softmax.** A categorical sample is the argmax of the logits plus Gumbel noise (the Gumbel-max "
    "trick). The argmax has no useful gradient, so it is relaxed to a softmax at temperature τ: a point "
    "inside the simplex that tends to the one-hot sample as τ → 0.",
    r"$$y = \operatorname{softmax}\big((\theta + g)/\tau\big),\quad g_c = -\log(-\log u_c),\ "
    r"u_c \sim U(0, 1)",
    "Training on relaxed samples optimises a slightly different model (the decoder sees points between "
    "the corners): the gradient is **biased**, by more as τ grows, and its **variance** grows as τ "
    "shrinks. **Straight-through** uses the one-hot sample in the forward pass and the relaxed sample's "
    "gradient backwards. The **score function** (REINFORCE) needs no relaxation and is unbiased, "
    "(f(y) − b) ∇ log q(y); a baseline b that does not depend on y lowers its variance. For one "
    "categorical variable the exact gradient is a sum over its categories, so each estimator's bias and "
    "variance can be measured (the panel at the bottom):",
    r"$$\nabla_\theta \mathbb{E}_{q_\theta}[f(y)] = \sum_c \nabla_\theta \pi_c(\theta)\, f(e_c),\qquad "
    r"\frac{\partial}{\partial \theta_j} = \pi_j\big(f(e_j) - \textstyle\sum_c \pi_c f(e_c)\big)",
    "**VQ-VAE.** The encoder outputs vectors z_e; each is replaced by its nearest codebook vector e, and the "
    "decoder sees only the codes. The nearest-neighbour step has no gradient, so the decoder's gradient "
    "is copied straight through to z_e. The codebook is pulled towards the encoder outputs (by the loss, or "
    "by moving averages of the outputs assigned to each code, EMA), and a **commitment** term with weight β "
    "keeps the encoder close to its codes (sg: stop-gradient):",
    r"$$\mathcal L = -\log p(x|z_q) + \|\mathrm{sg}[z_e] - e\|^2 + \beta\,\|z_e - \mathrm{sg}[e]\|^2,"
    r"\qquad z_q = e_{k^*},\ k^* = \arg\min_k \|z_e - e_k\|",
    "**Codebook collapse.** A code that no encoder output picks gets no update and stays where it is: a "
    "**dead code**. Often only a handful of codes carry the whole data set. The **perplexity** of the "
    "code frequencies, exp(entropy), counts the codes in effective use. **Dead-code restarts** move unused "
    "codes onto random encoder outputs, where they start to be picked. With a uniform prior over the "
    "codes, samples are poor: a VQ-VAE is usually paired with a learned (autoregressive) prior over its codes.",
)

ESTIMATOR_NOTE = (
    "For the first categorical variable of the current model at 32 test digits (the others held at their "
    "most likely class), f(y) = log p(x | y) and the exact gradient of E_q f(y) with respect to the "
    "variable's logits is a sum over its categories. Each estimator is drawn 400 times: **bias²** is the "
    "squared distance of their mean from the exact gradient, **variance** their scatter. The mean of 400 "
    "draws is itself noisy, so an unbiased estimator's measured bias² sits at the **noise floor** "
    "(variance / 400). The score function's baseline is f at the mean of y, softmax(θ), which does not "
    "depend on the sample."
)


@torch.no_grad()
def _modes_on_the_curve(t) -> float | None:
    """Density network, one-dimensional z on a 2D mixture: how many of the mixture's modes the decoder's mean
    curve f(z) passes within five of their standard deviations of (z on 2,001 points of the prior's central
    99.9%: where the page's red prior samples fall). None for other models, data or latent sizes."""
    if getattr(t, "dist", None) is None or t.dist.centers is None or t.config.latent != 1 or t.images:
        return None
    p = torch.linspace(5e-4, 1 - 5e-4, 2001, dtype=torch.float64)
    z = torch.special.ndtri(p).to(device=t.device, dtype=torch.float32).unsqueeze(1)
    m = t.decoder.gaussian(z)[0]
    gap = torch.cdist(t.dist.centers.to(m), m).min(1).values
    return float((gap <= 5 * t.dist.std).sum())


def _variance_ratio(top: tuple[str, float], bottom: tuple[str, float]):
    """A watch's metric: in the latest estimator table (measured on request), the variance of estimator ``top``
    (name, τ) over that of ``bottom``. None before a measurement."""
    def metric(t) -> float | None:
        if getattr(t, "estimators", None) is None:
            return None
        var = {(r["estimator"], r["tau"]): r["variance"] for r in t.estimators[1]}
        return var[top] / var[bottom]

    return metric


def _measured_at(t) -> int | None:
    """The step of the latest estimator table (None before a measurement)."""
    est = getattr(t, "estimators", None)
    return None if est is None else est[0]


def _codes_in_use(t) -> float | None:
    """VQ-VAE: how many of the codebook's codes the latest evaluation's encoder outputs pick."""
    used = (t.latest_eval or {}).get("used")
    return None if used is None else round(used * t.config.codes)


LESSONS = (
    Lesson(
        "the density network needs thousands of samples",
        {"model": "density_net", "latent": 4, "k": 100},
        "a 4-dimensional z: one prior sample misses by tens of nats; the estimate settles only at K in the hundreds",
        "Press **Play** and watch the K figure. With K = 1 the estimate is tens of nats too low and its bars "
        "(the spread of repeated estimates) are huge; each tenfold K raises it and narrows them, and it "
        "settles only between K = 100 and 1,000. The dashed line is IWAE with 100 samples from an encoder "
        "fitted to the same decoder. Raise the latent dimension and watch K = 1 and 10 fall further.",
        look='the estimate of log p(x) settling only at hundreds of prior samples',
        # 5.3-7.8 nats at step 400 and rising (seeds 0-4); the first evaluations jump about (5.9 once at step 16)
        watch=Watch("K = 1,000 − K = 10 (nats)", evaluated("mc_1000", minus="mc_10"), lambda v: v >= 5, "≥ 5",
                    every=200, max_steps=2000, after=300),
    ),
    Lesson(
        "an encoder fixes it",
        {"model": "density_net", "latent": 4, "fit": "encoder"},
        "the same decoder trained as a VAE: as its posteriors narrow, few prior samples miss them; the encoder's do not",
        "The decoder is trained with an encoder, on the ELBO. Once it starts to use z, its posteriors "
        "narrow: the prior's estimate with few samples drops further and further (watch K = 1 and 10 on the "
        "curves fall while the others rise), and IWAE with 100 samples from the encoder keeps up with the "
        "best the prior reaches with 1,000. The encoder is what lets a decoder have narrow posteriors and "
        "still be scored and trained.",
        look="the encoder's few samples matching what thousands of prior samples give",
        # under 1 nat to step 600, then rising as the posteriors narrow: ≥ 5 at steps 1,000-1,400 (seeds 0-4)
        watch=Watch("IWAE − prior's K = 10 (nats)", evaluated("iwae", minus="mc_10"), lambda v: v >= 5, "≥ 5",
                    every=200, max_steps=3000, after=600),
    ),
    Lesson(
        "density network on ring8",
        {"model": "density_net", "data": "ring8", "latent": 1, "k": 1000, "noise": 0.1},
        "a 1-dimensional z pushed through the decoder: one curve through the eight modes",
        "The decoder's mean f(z) is a continuous function of one number, so the prior's samples pushed "
        "through it (red) lie on a single curve that must pass through all eight modes; watch where the "
        "learned density leaks along it between them. The number under the figure counts the modes the curve "
        "passes (within five of their standard deviations): 8 by step 500 on seeds 0-9. The decoder's noise is "
        "fixed at σ = 0.1 here: with a learned σ it tends to grow over the whole ring first, and on most seeds "
        "z then stays unused or draws a line through two modes only (3 of 10 seeds bend it through all eight "
        "by step 3,000). K = 1,000 prior samples per point, as a curve through eight narrow modes needs.",
        look='one curve through the eight modes',
        watch=Watch("modes the curve passes", _modes_on_the_curve, lambda v: v == 8, "= 8", every=250,
                    max_steps=3000),
    ),
    Lesson(
        "temperature trades bias for variance",
        {"model": "gumbel", "tau": 1.0, "anneal": 1e-3, "tau_min": 0.1},
        "a Gumbel-softmax VAE with τ annealed from 1 to 0.1; the estimator panel measures bias and variance",
        "Press **Play** for a few hundred steps, then **Measure the estimators now**: at small τ the relaxed "
        "estimators are nearly unbiased but scatter widely; at τ = 1 they are steady but off the exact "
        "gradient. The score function with a baseline is unbiased at any τ, and noisier than the relaxation "
        "at large τ. The number under the figure comes from that measurement: the Gumbel-softmax estimator's "
        "variance at τ = 0.1 over its variance at τ = 1 (41-45 at step 300 on seeds 0-4, where the bias² at "
        "τ = 1 is 36-43 times its noise floor and at τ = 0.1 at the floor).",
        look='bias falling and variance rising in the estimator panel as τ drops',
        watch=Watch("Gumbel-softmax variance, τ = 0.1 ÷ τ = 1", _variance_ratio(("Gumbel-softmax", 0.1),
                    ("Gumbel-softmax", 1.0)), lambda v: v >= 10, "≥ 10", every=100, max_steps=1000,
                    press="Measure the estimators now", measure=GumbelTrainer.measure_estimators,
                    measured=_measured_at),
    ),
    Lesson(
        "hard samples (straight-through)",
        {"model": "gumbel", "hard": True, "tau": 0.5},
        "one-hot codes forward, relaxed gradients backward: the decoder only ever sees true codes",
        "The forward pass uses one-hot codes, so the decoder is trained on the codes it is sampled with. The "
        "lesson opens at step 300: press **Measure the estimators now** before **Play**. In the first few hundred "
        "steps straight-through scatters about twice as much as the soft Gumbel-softmax at the same τ and is no "
        "closer to the exact gradient; what it buys is a decoder that never sees a code between the corners. "
        "The number under the figure comes from that measurement: straight-through's variance over the soft "
        "estimator's at τ = 0.5, on seeds 0-4 1.6-2.1 at step 100, 1.6-2.3 at 300 and 1.6-2.2 at 600. It is not "
        "a constant of the estimators: at step 0, where the untrained decoder hardly tells one code from another, "
        "it is 0.93-1.07 (a measurement from before step 100 does not count); and at step 300 the model hardly "
        "uses its code yet (test KL on seeds 0-1: 0.01 nats or less, 1 by step 1,000, 4-5 by 3,000). As the code "
        "comes into use the two come close (1.08-1.17 at step 1,000) and part again on some seeds only (1.0-2.5 at "
        "4,000): play on and measure again to see it.",
        look='one-hot codes going into the decoder while the gradients stay relaxed',
        watch=Watch("straight-through variance ÷ Gumbel-softmax's (τ = 0.5)", _variance_ratio(
                    ("straight-through", 0.5), ("Gumbel-softmax", 0.5)), lambda v: v >= 1.2, "≥ 1.2", every=100,
                    max_steps=1000, after=100, press="Measure the estimators now",
                    measure=GumbelTrainer.measure_estimators, measured=_measured_at),
        start=300,
    ),
    Lesson(
        "codebook collapse",
        {"model": "vqvae", "codes": 64, "update": "loss", "restarts": False},
        "a 64-code book updated by the loss: at first a handful of codes take every assignment, and the loss "
        "recruits the others only slowly",
        "Watch the codebook among the encoder outputs: a few red codes sit in the cloud and take every "
        "assignment, the dead ones (×) stay where they started, since a code that is never picked gets no "
        "gradient. The usage histogram is a long run of zeros and the perplexity far below 64. The loss brings "
        "the dead codes in only slowly, as the encoder's outputs spread and happen to land near one (seeds 0-4: "
        "4-12 of the 64 codes in use at 500 steps, 32-61 at 1,500, nearly all by 4,000); the next lesson's "
        "restarts have 51-63 in use by step 500.",
        look='most of the 64 codes never picked, never moving, for the first few hundred steps',
        watch=Watch("codes in use", _codes_in_use, lambda v: v <= 16, "≤ 16 of 64", every=100, max_steps=1000,
                    after=200),
    ),
    Lesson(
        "dead-code restarts",
        {"model": "vqvae", "codes": 64, "update": "loss", "restarts": True},
        "the same book with dead codes moved onto encoder outputs: nearly every code is in use",
        "Every 20 steps, codes that almost no encoder output picks are moved onto random encoder outputs. The "
        "dead codes disappear, the histogram flattens, the perplexity climbs, and the reconstruction improves.",
        look='nearly every code in use',
        watch=Watch("codes in use", _codes_in_use, lambda v: v >= 48, "≥ 48 of 64", every=100, max_steps=2000),
    ),
)

EXPERIMENT = Experiment(
    name="latents",
    help="latent variables without an encoder and discrete latents: density network (digits or 2D data), "
         "Gumbel-softmax VAE, VQ-VAE",
    config=LatentsConfig,
    trainer=make_trainer,
    figures=figures,
    samples=samples,
    lessons=LESSONS,
    text=PageText("Latent variables", INTRO, THEORY_TITLE, THEORY),
)
