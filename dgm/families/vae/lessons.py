"""The VAE page's text, its lessons and the Experiment record."""

from __future__ import annotations

import torch

from dgm.core import quality
from dgm.core.registry import Arena, Experiment, Lesson, PageText, Watch, evaluated
from dgm.families.vae.model import iwae_bound
from dgm.families.vae.figures import figures, manifold_grid
from dgm.families.vae.seeds import VAESeeds
from dgm.families.vae.trainer import BINARISED, VAEConfig, VAETrainer, samples

INTRO = (
    "A variational autoencoder learns two networks at once: an **encoder** that maps an image to a "
    "Gaussian cloud q(z|x) in a small latent space, and a **decoder** p(x|z) that maps a latent point"
    " back to an image. It is trained on the **ELBO**, a lower bound on log p(x) that trades "
    "reconstruction against a KL penalty pulling every cloud towards the prior. With a 2-dimensional "
    "z you can watch the whole latent space: press **Play** and see the grid of decoded digits "
    "organise itself. Every likelihood below is in **nats per image** on held-out digits, each pixel one of "
    "17 grey levels. The **binarised digits** (a pixel is 1 where its grey level is at least 8, else 0) are a "
    "different data set with a Bernoulli decoder: their figures are in nats per binarised image and are "
    "not comparable with the grey-level ones."
)

THEORY_TITLE = "Theory: the ELBO, the reparameterisation trick, IWAE, and why posteriors collapse"
THEORY = (
    "**The bound.** For any distribution q over z, Jensen's inequality turns the intractable "
    "log-evidence into a bound; the gap is how far q is from the true posterior:",
    r"$$\log p_\theta(x) = \underbrace{\mathbb{E}_{q_\phi(z|x)}\big[\log p_\theta(x|z)\big] - "
    r"\mathrm{KL}\big(q_\phi(z|x)\,\|\,p(z)\big)}_{\text{ELBO}(x)} + "
    r"\mathrm{KL}\big(q_\phi(z|x)\,\|\,p_\theta(z|x)\big)",
    "The first term rewards faithful reconstructions; the second charges for every nat of information"
    " the code carries about x. For a diagonal Gaussian q and a N(0, I) prior it has a closed form, "
    "one term per latent dimension:",
    r"$$\mathrm{KL}\big(\mathcal N(\mu,\sigma^2)\,\|\,\mathcal N(0,1)\big) = \tfrac12\left(\mu^2 + "
    r"\sigma^2 - 1 - \log\sigma^2\right)",
    "**Reparameterisation.** To differentiate the expectation with respect to the encoder, write the "
    "sample as a deterministic function of noise, so gradients flow through it. The alternative, the "
    "score-function (REINFORCE) estimator, only multiplies the score of q by the reconstruction "
    "value; it is unbiased but far noisier (see the panel at the bottom).",
    r"$$z = \mu_\phi(x) + \sigma_\phi(x)\odot\varepsilon,\ \varepsilon\sim\mathcal "
    r"N(0,I)\qquad\text{vs}\qquad \nabla_\phi\mathbb{E}_q[f(z)] = "
    r"\mathbb{E}_q\big[f(z)\,\nabla_\phi\log q_\phi(z|x)\big]",
    "**Importance weighting (IWAE).** Averaging k importance weights inside the logarithm gives a "
    "family of bounds that starts at the ELBO (k = 1), never decreases with k, and reaches log p(x) "
    "as k grows. The page reports it on the test digits with k = 10 (recomputed as training goes), the "
    "curve below for k from 1 to 50, and the command line's final figure with k = 100, the tightest "
    "of them; training on it (objective = iwae) pushes the model further.",
    r"$$\mathcal L_k(x) = \mathbb{E}\Big[\log \frac1k\sum_{i=1}^k \frac{p_\theta(x, "
    r"z_i)}{q_\phi(z_i|x)}\Big],\quad z_i\sim q_\phi(z|x)\qquad \text{ELBO} = \mathcal L_1 \le "
    r"\mathcal L_2 \le \dots \le \log p_\theta(x)",
    "**Taking the KL apart (ELBO surgery).** Averaged over the data set, the KL term splits into the "
    "information that z carries about *which* x it came from, and a mismatch between the prior and "
    "the aggregated posterior q(z), the mixture of all the encoder's clouds:",
    r"$$\frac1N\sum_n \mathrm{KL}\big(q(z|x_n)\,\|\,p(z)\big) = I_q(x;z) + "
    r"\mathrm{KL}\big(q(z)\,\|\,p(z)\big),\qquad q(z) = \frac1N\sum_n q(z|x_n)",
    "Only the second part can be removed without losing information: the best prior is q(z) itself. A"
    " learned prior (a mixture of Gaussians, or a VampPrior built from the encoder at learned "
    "pseudo-inputs) moves towards it. With N held-out images the mutual information estimate cannot "
    "exceed log N.",
    r"**β, warm-up, free bits, collapse.** Weighting the KL by β > 1 squeezes the code: blurrier "
    r"images, a smoother latent space. If the decoder can explain the data without z (here: a Gaussian"
    r" decoder whose variance grows to cover the digits), the cheapest solution early in training is "
    r"q(z|x) = p(z) for every x: the KL drops to 0, the units go **inactive** and never come back "
    r"(**posterior collapse**). A **warm-up** that starts the KL weight at 0 lets the code become "
    r"useful before it is charged for; **free bits** stop charging below a few nats per dimension. A "
    r"unit counts as active when its posterior mean varies across the data: "
    r"$\mathrm{Cov}_x\big(\mathbb{E}_{q(z|x)}[z_d]\big) > 0.01$.",
    "**Overfitting.** With 1,197 (or fewer) training digits the ELBO on the training data keeps "
    "rising while the validation ELBO turns down. The test figures shown come from the checkpoint "
    "with the best validation ELBO, so they do not get worse as training goes on.",
)

GRADIENT_NOTE = (
    "On the **same model and the same batch** (64 validation digits), we draw 64 independent "
    "single-sample estimates of the gradient of the ELBO with respect to the encoder's weights with "
    "three estimators, and measure how much they scatter (the sum of the per-weight variances). All "
    "three are unbiased; the score function ignores how the decoder's output changes with z and pays "
    "for it in variance; subtracting a baseline b helps, but the reparameterised gradient stays far less "
    "noisy. The baseline is f at the posterior mean, b = log p(x | z = μ(x)) (with a learned prior, plus "
    "log p(μ) − log q(μ | x)): computed per image and not from the sample itself, so it leaves the "
    "estimator unbiased."
)


def _kl_to_prior_over_standard(t: VAETrainer) -> float | None:
    """The marginal KL, KL(q(z) || p(z)), over the same codes' KL to N(0, I) (the ELBO surgery of the latest
    evaluation, on the test digits): how much of the gap the learned prior closes. None before an evaluation."""
    sg = (t.analysis or {}).get("surgery")
    if not sg or sg["marginal_kl_standard"] <= 0:
        return None
    return sg["marginal_kl"] / sg["marginal_kl_standard"]


@torch.no_grad()
def _grid_digits(t: VAETrainer) -> int | None:
    """How many of the ten digits the latent manifold's grid (the page's 15 × 15 decoded means) shows: the
    classes the digits classifier (dgm.core.quality) gives its cells with probability at least
    ``quality.CONFIDENT``. None off the digits, or with a latent of one dimension."""
    if not t.images or t.config.latent < 2:
        return None
    cells = t.model.mean(t.model.decode(manifold_grid(t, 15)[0])).float().cpu().clamp(0, 1)
    top = torch.softmax(quality.digits_classifier()(cells), 1).max(1)
    return len(set(top.indices[top.values >= quality.CONFIDENT].tolist()))


_COLLAPSE = {"decoder": "gaussian", "learn_var": True, "latent": 8, "beta": 4.0, "lr": 0.005}

LESSONS = (
    Lesson(
        "2D manifold of digits",
        {},
        "a 2D latent space: watch the grid of decoded digits organise itself",
        text=(
            'A VAE with a two-dimensional latent space on 8×8 digits. The left panel decodes a grid of latent '
            'points: at first every cell shows the same grey blur, then regions for different digits form and '
            'sharpen. On the right, the test digits, encoded, spread out in z and group by class.'
        ),
        look='the grid of decoded digits organising itself into regions of different digits',
        watch=Watch("digits in the grid", _grid_digits, lambda v: v >= 9, "≥ 9 of 10", every=200, max_steps=3000),
    ),
    Lesson(
        "beta = 4: blurry but disentangled",
        {"beta": 4.0},
        "a heavier KL: smoother, blurrier digits and a latent space closer to the prior",
        text=(
            'The KL term now weighs four times as much as the reconstruction. The encoder is pushed harder '
            'towards the prior, so the latent codes crowd towards N(0, I) and the decoded digits are smoother and'
            ' blurrier. The held-out ELBO is worse than with β = 1.'
        ),
        look='blurrier decoded digits, and latent codes packed closer to the prior',
        # held-out KL from step 1,000 on: 0.4-2.0 nats here against 3.9-5.1 with β = 1 (seeds 0-4, to step 2,000)
        watch=Watch("KL to the prior (nats)", evaluated("val_kl"), lambda v: v <= 2.5, "≤ 2.5 (β = 1: 4-5)",
                    every=200, max_steps=3000, after=1000),
    ),
    Lesson(
        "posterior collapse",
        {"decoder": "gaussian", "learn_var": True, "latent": 8, "beta": 4.0, "lr": 0.005},
        "a decoder that learns its own variance, with β = 4: the KL wins early, most latent units switch "
        "off and stay off",
        text=(
            'The decoder learns its own variance and the KL weighs four times as much. Early in training the '
            'cheapest way to lower the loss is to make q(z|x) equal the prior for every x: the KL of those latent'
            ' units drops to zero, they go inactive, and with a decoder that explains the data as noise they '
            'never come back. The page opens shortly before the units switch off.'
        ),
        look='the active units dropping to 2 or fewer (the KL-per-unit bars going grey)',
        watch=Watch("active units", lambda t: t.latest_eval.get("active_units"), lambda v: v <= 2, "≤ 2", every=200,
                    max_steps=3000, after=400),  # at step 0 no unit is active yet: collapse comes after use
        start=800,
    ),
    Lesson(
        "warm-up fixes it",
        {"decoder": "gaussian", "learn_var": True, "latent": 8, "beta": 4.0, "lr": 0.005, "warmup": 2000},
        "the same model with the KL weight ramped up over 2,000 steps: more units stay active and the "
        "held-out ELBO is far better",
        text=(
            'The same model, but the KL weight is ramped from 0 up to its full value over the first 2,000 steps. '
            'While it is small, the latent units become useful for reconstruction, and they stay active when the '
            'full penalty arrives. Compare the active units and the held-out ELBO with the posterior-collapse '
            'lesson.'
        ),
        look='more active units than in the posterior-collapse lesson, and a better held-out ELBO',
        watch=Watch("active units", evaluated("active_units"), lambda v: v >= 4, "≥ 4", every=200, max_steps=3000,
                    after=1000),
    ),
    Lesson(
        "learned prior",
        {"prior": "vamp", "components": 20},
        "a VampPrior moves towards the aggregated posterior: a smaller marginal KL than the standard prior's",
        text=(
            "A VampPrior: the prior is a mixture of the encoder's posteriors at 20 learned pseudo-inputs, so it "
            'can move towards the aggregated posterior instead of forcing the codes onto N(0, I). Watch the '
            'marginal KL, the gap between the aggregated posterior and the prior: it grows as the codes spread out, '
            'with either prior, but stays about 30% below the standard prior\'s (0.39-0.49 nats against '
            '0.55-0.64 at 2,000 steps on seeds 0-4; the first lesson has the standard prior). Nothing pulls the '
            'codes towards the origin any more: the same codes would sit 2-4 nats from N(0, I) at 1,000 steps '
            '(6-10 at 2,000), and the number under the figure divides the two, the learned prior\'s gap over '
            'the one N(0, I) would leave. With two latent dimensions the held-out ELBO is about the same either way.'
        ),
        look="the prior's contours following the codes: a marginal KL far below what N(0, I) would leave them",
        watch=Watch("marginal KL ÷ the same codes' KL to N(0, I)", _kl_to_prior_over_standard, lambda v: v <= 0.2,
                    "≤ 0.2", every=100, max_steps=3000, after=500),
    ),
)

ARENA_IWAE_K = 100  # importance samples of the arena's held-out bound


def _vae_nll(t: VAETrainer, x) -> float | None:
    """-IWAE(k = 100), an upper bound on the NLL in nats, on the 2D data or the grey-level digits (the
    binarised digits are another data set)."""
    if t.config.data == BINARISED:
        return None
    with torch.no_grad():
        return float(-iwae_bound(t.model, x.to(t.device), ARENA_IWAE_K, t.eval_generator(21)).mean())


ARENA = Arena("VAE", samples=samples, latent=lambda t: t.config.latent, likelihood=_vae_nll,
              kind=f"bound (IWAE, k = {ARENA_IWAE_K})")


EXPERIMENT = Experiment(
    name="vae",
    help="variational autoencoder on the 8x8 digits or 2D data: ELBO, IWAE, beta, learned priors",
    config=VAEConfig,
    trainer=VAETrainer,
    figures=figures,
    samples=samples,
    lessons=LESSONS,
    text=PageText("VAE", INTRO, THEORY_TITLE, THEORY),
    seeds=VAESeeds,
    arena=ARENA,
)
