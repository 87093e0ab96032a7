"""The diffusion page's text, its lessons and the Experiment record."""

from __future__ import annotations

import torch

from dgm.core.registry import Arena, Experiment, Lesson, PageText, Watch, evaluated
from dgm.families.diffusion.samplers import log_likelihood
from dgm.families.diffusion.trainer import NLL_STEPS
from dgm.families.diffusion.figures import field_snapshot, figures
from dgm.families.diffusion.seeds import DiffusionSeeds
from dgm.families.diffusion.trainer import DiffusionConfig, DiffusionTrainer, split

INTRO = (
    "Add noise to the data until nothing is left, then learn to undo it step by step. A **diffusion model** "
    "learns, at every noise level t, which way the noisy data came from: the **score** ∇log p_t(x), or "
    "equivalently the noise ε that was added. **Flow matching** learns instead a velocity that carries noise "
    "to data along straight lines. Our data sets are Gaussian mixtures, so the noisy data is again a Gaussian "
    "mixture at every t and the **true score and velocity are known exactly**: below, the learned field sits "
    "beside the exact one at the time t you pick, with the error between them. Press **Play**."
)

THEORY_TITLE = "Theory: forward process, ε-prediction and the score, samplers, flow matching, guidance, likelihood"
THEORY = (
    "**The forward process.** Every model here blurs a data point x₀ with Gaussian noise whose strength "
    "grows with t from 0 (data) to 1 (noise):",
    r"$$x_t = \alpha_t\, x_0 + \sigma_t\, \varepsilon,\qquad \varepsilon \sim \mathcal N(0, I)",
    "DDPM keeps the variance fixed (α² + σ² = 1; the *linear* schedule is Ho et al.'s β from 10⁻⁴ to 0.02 over "
    "1,000 steps, the *cosine* one spends more of them at low noise); the score model keeps α = 1 and lets σ "
    "grow geometrically (*variance exploding*); flow matching takes the straight line α = 1 − t, σ = t.",
    "**Why Gaussian mixtures are special.** If x₀ comes from a mixture of Gaussians N(μ_k, Σ_k), then x_t is "
    "again such a mixture, with every component moved and widened:",
    r"$$p_t(x) = \sum_k w_k\, \mathcal N\!\left(x;\ \alpha_t \mu_k,\ \alpha_t^2 \Sigma_k + \sigma_t^2 I\right),\qquad "
    r"\nabla_x \log p_t(x) = -\sum_k r_k(x)\, C_k^{-1}(x - \alpha_t\mu_k)",
    "with C_k = α²Σ_k + σ²I and r_k(x) the posterior probability of component k. That is the exact score "
    "drawn in green; everything the network should learn is known in closed form.",
    "**Learning the noise is learning the score.** DDPM trains a network ε_θ(x_t, t) to guess the noise that "
    "was added, with a plain squared error. Its best possible answer is the posterior mean E[ε | x_t], and "
    "Tweedie's formula ties that to the score:",
    r"$$\mathcal L = \mathbb E_{t, x_0, \varepsilon}\,\big\|\varepsilon_\theta(x_t, t) - \varepsilon\big\|^2,\qquad "
    r"\mathbb E[\varepsilon\mid x_t] = -\sigma_t \nabla_x \log p_t(x_t),\qquad "
    r"\mathbb E[x_0 \mid x_t] = \frac{x_t + \sigma_t^2 \nabla \log p_t(x_t)}{\alpha_t}",
    "So the loss is denoising score matching (Vincent 2011) with the weight σ_t²: it exceeds its floor by "
    "exactly σ²‖s_θ − ∇log p_t‖², averaged over p_t. That excess is the **score error** measured on this page, "
    "and the heatmap shows where it comes from. Weighted by p_t, errors where there is no data cost nothing; "
    "unweighted, you see how wrong the network is there.",
    "**Samplers.** *Ancestral* sampling (DDPM) steps from t to an earlier s by drawing from the Gaussian "
    "q(x_s | x_t, x₀) with x₀ replaced by the network's guess. *DDIM* takes the same step without the fresh "
    "noise, x_s = α_s x̂₀ + σ_s ε̂. Both equal, step by step, a discretisation of one of two processes with "
    "the right marginals p_t: the reverse SDE or the **probability-flow ODE**",
    r"$$\frac{dx}{dt} = u_t(x) = \dot\alpha_t\, \mathbb E[x_0\mid x] + \dot\sigma_t\, \mathbb E[\varepsilon\mid x]",
    "which *Euler* and *Heun* integrate directly. *Annealed Langevin dynamics* (Song & Ermon) needs only the "
    "score: at each of a decreasing sequence of noise levels it takes a few steps x ← x + rσ²∇log p_t + "
    "√(2r) σ z. Each evaluation of the network is one **NFE**; fewer NFE means larger steps, and the samples "
    "blur (each large step lands on an average of the modes it cannot tell apart). Near the data the ODE is "
    "stiff (the field changes over distances of order σ): with too few steps Heun's corrector, evaluated "
    "there, overshoots, and it needs some twenty NFE before it beats Euler.",
    "**Flow matching** (Lipman et al., Liu et al.) regresses a velocity on straight paths between a data point "
    "and a noise sample, x_t = (1 − t)x₀ + t x₁:",
    r"$$\mathcal L = \mathbb E\,\big\|v_\theta(x_t, t) - (x_1 - x_0)\big\|^2,\qquad v^*(x, t) = "
    r"\mathbb E[x_1 - x_0 \mid x_t = x]",
    "Each pair travels in a straight line, but the learned field averages over all the pairs that pass through "
    "x, so the marginal paths still bend. Pairing data and noise by **optimal transport** inside each batch "
    "(Tong et al.) makes crossing paths rare; **reflow** (Liu et al.) trains again on pairs (x₀, x₁) that the "
    "first model's ODE connects, which do not cross at all: the new paths are nearly straight, and one Euler "
    "step, x₀ = x₁ − v(x₁, 1), is already a good sample.",
    "**Classifier-free guidance** (Ho & Salimans) trains one network with and without the class label (the "
    "label is dropped with probability p_uncond) and samples with",
    r"$$\hat\varepsilon = \varepsilon_\theta(x, t, \varnothing) + w\,\big(\varepsilon_\theta(x, t, c) - "
    r"\varepsilon_\theta(x, t, \varnothing)\big)",
    "w = 1 is the conditional model; w > 1 pushes each sample further from the other classes. Quality per "
    "class rises at first, then the samples leave the data distribution: the MMD grows and the modes are "
    "filled unevenly. Here each mixture component is a class, and the exact conditional scores are known too.",
    "**Exact likelihood.** Along the ODE, the log density changes by minus the divergence of the velocity, so",
    r"$$\log p_0(x_0) = \log p_1(x_1) + \int_0^1 \nabla\!\cdot u_t(x_t)\, dt",
    "In 2D the divergence is the trace of a 2×2 Jacobian: two backward passes give it exactly (no Hutchinson "
    "estimate needed). The page integrates it with Heun's method and compares the held-out NLL with the data's "
    "entropy, the floor any model's NLL can reach.",
)


def _mmd_over_floor(t: DiffusionTrainer) -> float | None:
    """The latest evaluation's MMD² to the held-out data over the MMD² of as many true samples (its floor)."""
    ev = t.latest_eval or {}
    if "mmd" not in ev or not ev.get("mmd_floor"):
        return None
    return ev["mmd"] / ev["mmd_floor"]


def _off_data_error(t: DiffusionTrainer) -> float | None:
    """At t = 0.05, the error map's mean over the whole plane over its mean under p_t (the weighted error the
    loss sees): how much worse the network is where no noisy data lies. About 80 for the untrained network
    (the exact score is steep off the data); None without an exact score."""
    if t.mixture is None:
        return None
    f = field_snapshot(t, 0.05)
    return float(f["error"].mean()) / max(f["error_at_t"], 1e-30)


LESSONS = (
    Lesson(
        "diffusion does not drop modes",
        {"data": "ring8", "model": "ddpm"},
        "ring8's eight narrow modes, all found, none favoured: compare with the GAN page",
        "The same ring of eight narrow Gaussians on which the GAN page's generator collapses. A denoiser is "
        "trained by regression at every noise level: there is no adversary to chase, so nothing pulls the "
        "model towards one mode. Press Play and watch the **modes captured** curve reach 8 within the first "
        "evaluations (every 500 steps) and the **high-quality** share climb past 95%, with a mode KL near 0 "
        "(every mode equally often). Then pick grid25 as the data: all 25 modes appear just as evenly.",
        look='all eight modes filled, none favoured',
        watch=Watch("modes captured", evaluated("modes"), lambda v: v == 8, "= 8", every=100, max_steps=2000),
    ),
    Lesson(
        "25 modes, none dropped",
        {"data": "grid25", "model": "ddpm"},
        "grid25: all 25 modes within a thousand steps",
        "Twenty-five narrow modes on a square grid, the GAN's hardest case on this site. Press Play: by the "
        "second evaluation (step 1,000) all 25 are found, and the share of high-quality samples passes 90% soon "
        "after. Look at the exact field at a small t: 25 sinks, each one pulling the noisy points to its mode.",
        look='modes captured reaching 25',
        watch=Watch("modes captured", evaluated("modes"), lambda v: v == 25, "= 25", every=100, max_steps=2000),
    ),
    Lesson(
        "few steps, blurry samples",
        {"data": "ring8", "model": "ddpm", "sampler": "ddim", "nfe": 4},
        "four network evaluations per sample: every step averages the modes it cannot resolve",
        "The network is the same as in the first lesson; only the sampler changed: DDIM with **4 NFE**. Press "
        "Play and watch the samples: they gather on the ring but smeared between the modes, because each large "
        "step jumps to the average of every mode still compatible with the noisy point. Raise the NFE in the "
        "sidebar (the run goes on: sampling settings never restart training), or press **Measure against NFE** "
        "below for the whole curve of every sampler, with the exact denoiser's curve beside it: what remains at "
        "few NFE is the sampler's error, not the network's.",
        look='samples smeared between the modes with only four steps',
        # 1-5% from step 500 to 3,000 (seeds 0-4), with 7-8 modes captured; the first lesson's 100 NFE: 89-99%
        watch=Watch("high quality (%)", evaluated("high_quality", scale=100), lambda v: v <= 10,
                    "≤ 10% (100 NFE: ≥ 89%)", every=100, max_steps=2000, after=500),
    ),
    Lesson(
        "guidance sharpens and forgets",
        {"data": "8gaussians", "model": "ddpm", "conditional": True, "guidance": 4.0},
        "classifier-free guidance on the mixture's components: sharper at first, then off the data",
        "Each of the eight Gaussians is a class; one network learns the conditional and the unconditional score "
        "at once. The samples here use guidance scale 4: look how each mode's cloud is squeezed and pushed "
        "outwards, away from its neighbours. Train for a few seconds and press **Sweep the guidance scale**: from "
        "0 (unconditional) to 1 or 2 the high-quality share rises, but the MMD to the data grows with the scale, "
        "by an order of magnitude at 8, and at large scales the network's errors are amplified too: quality "
        "falls and the modes are filled unevenly. The dashed curves use the exact conditional scores: even a "
        "perfect network's guided samples leave the data distribution. The number under the figure is the "
        "run's own: its samples' MMD² to the data over what true samples get, 6-10 at step 2,000 with scale 4 "
        "on seeds 0-5 (and more before), where scale 1 stays at about 1.",
        look='samples tightening on the modes, then leaving the data as guidance grows',
        # after 250 steps: at step 0 the untrained network's samples are off the data whatever the scale
        watch=Watch("MMD² ÷ true samples' MMD²", _mmd_over_floor, lambda v: v >= 4, "≥ 4 (scale 1: about 1)",
                    every=250, max_steps=2000, after=250),
    ),
    Lesson(
        "straight paths sample in one step",
        {"data": "8gaussians", "model": "flow", "reflow_at": 2000, "sampler": "euler", "nfe": 1},
        "flow matching with one reflow round: one Euler step from noise lands on the modes",
        "Flow matching on FFJORD's eight Gaussians, sampled with a **single Euler step** (1 NFE). For the first "
        "2,000 steps the paths of the reverse process bend, and one straight step lands on the average of the "
        "modes: the samples form a blurred ring, few of them of high quality. At step 2,000 the model draws "
        "8,192 pairs (noise, sample) with its own ODE and trains on them from then on (**reflow**): these pairs "
        "never cross, the paths straighten, and the one-step samples snap onto the modes. The lesson opens at "
        "step 1,800, the ring still blurred: the reflow comes 200 steps after Play. Press **Measure "
        "against NFE** after step 3,000: with Euler or Heun, quality at 1 NFE is within a few points of quality "
        "at 100. The stochastic samplers fall behind: the reflowed network is a transport map, no longer a score.",
        look='one Euler step from noise landing on the modes',
        # 0-0.5% before the reflow at step 2,000, 87-91% at 2,500 (seeds 0-4)
        watch=Watch("high quality (%)", evaluated("high_quality", scale=100), lambda v: v >= 80, "≥ 80%", every=100,
                    max_steps=4000),
        start=1800,  # the blurred ring on screen, the reflow 200 steps after Play (from step 0: 22.5 s to the point)
    ),
    Lesson(
        "the score is wrong where there is no data",
        {"data": "ring8", "model": "ddpm"},
        "switch the error map to unweighted: the network is wrong far from the data, and it does not matter",
        "Train for a few seconds and pause. Set the time t to 0.05 and switch **weight the error by p_t** off: "
        "the error map lights up everywhere away from the ring, and the learned arrows there point anywhere "
        "(compare them with the exact field). The network was never trained where p_t has no mass. Switch the "
        "weighting back on: the same error, weighted by where noisy data actually is, nearly vanishes, and that "
        "weighted error is what the loss measures. Samplers only visit those regions at large t, where p_t is "
        "wide; raise t to see the error shrink as the noise covers the plane. The number under the figure "
        "divides the two at t = 0.05, the unweighted mean error over the plane by the weighted one: about 80 "
        "before training (the exact score is steep away from the data, the untrained network's is not), "
        "840-1,860 at step 250 and 2,500-7,500 at step 500 on seeds 0-6: training fixes the score only where "
        "the data is.",
        look='the error map large far from the data, where no sample goes',
        watch=Watch("error over the plane ÷ where p_t is (t = 0.05)", _off_data_error, lambda v: v >= 1000,
                    "≥ 1,000", every=250, max_steps=2000),
    ),
    Lesson(
        "digits",
        {"data": "digits", "model": "ddpm", "width": 256, "fourier": 0.0},
        "the same DDPM on the 8x8 digits with an MLP: digits appear from noise",
        "The same DDPM, now in 64 dimensions: the 8×8 digits, pixels scaled to [−1, 1], and an MLP of width 256. "
        "There is no exact score here; the page shows test digits noised at t and the network's guess of the "
        "clean image instead, and a grid of samples. After a couple of thousand steps most samples are "
        "recognisable digits; press **Measure against NFE** to see them form as the NFE grows. The curve beside "
        "the samples measures it: how far the samples lie from their nearest training digit, against how far "
        "the test digits do (3.7 times as far for the untrained network's noise, about 1.5 after 250 steps, "
        "1.4 by 1,000; a value under 1 would mean copies of the training digits).",
        look='digits appearing from noise',
        watch=Watch("nearest training digit: samples ÷ test digits", evaluated("nearest"), lambda v: v <= 1.4,
                    "≤ 1.4", every=500, max_steps=4000),
    ),
)


def _samples(trainer: DiffusionTrainer, n: int):
    return trainer.generate(n)[0].cpu().numpy()  # (n, 2), or (n, 64) digits in [-1, 1]


def _arena_samples(t: DiffusionTrainer, n: int):
    x = t.generate(n)[0].cpu()
    return ((x + 1) / 2).clamp(0, 1).numpy() if t.images else x.numpy()  # the digits back to [0, 1]


def _diffusion_nll(t: DiffusionTrainer, x) -> float | None:
    """The probability-flow ODE's NLL (nats per point, Heun steps), on 2D data; None on the digits (there it
    is a density of continuous pixels, not a likelihood of grey levels)."""
    if t.images:
        return None
    den = t.denoiser()
    null = t.n_classes or None
    f = (lambda z, s: den(z, s, torch.full((z.shape[0],), null, dtype=torch.long, device=z.device))) if null \
        else (lambda z, s: den(z, s))
    return float(-log_likelihood(f, t.schedule, x.to(t.device), NLL_STEPS).mean())


ARENA = Arena("diffusion", samples=_arena_samples, latent=lambda t: t.dim, likelihood=_diffusion_nll,
              kind="exact (ODE)")


EXPERIMENT = Experiment(
    name="diffusion",
    help="train DDPM, a denoising score model or flow matching on 2D mixtures (exact scores) or digits; samplers, "
         "NFE, guidance, reflow and the probability-flow likelihood measured",
    config=DiffusionConfig,
    trainer=DiffusionTrainer,
    figures=figures,
    samples=_samples,
    lessons=LESSONS,
    text=PageText("Diffusion and flow matching", INTRO, THEORY_TITLE, THEORY),
    seeds=DiffusionSeeds,
    arena=ARENA,
    split=split,
)
