"""The autoregressive page's text, its lessons and the Experiment record."""

from __future__ import annotations

import functools

import torch

from dgm.core import registry
from dgm.core.registry import Arena, Experiment, Lesson, PageText, Watch, evaluated
from dgm.families.autoregressive.figures import figures
from dgm.families.autoregressive.trainer import ARConfig, ARTrainer, samples

INTRO = (
    "An autoregressive model writes the probability of an image as a chain: the first pixel's "
    "distribution, then the second's given the first, and so on to the last. Each link is a small "
    "classifier over the 17 grey levels, so the product is an **exact, normalised likelihood**, "
    "trained by plain maximum likelihood. The price comes at sampling time: a pixel can only be drawn "
    "once every pixel before it is known, so an image of 64 pixels takes 64 passes of the network. "
    "Press **Play**: the samples build up pixel by pixel, the curves give the held-out likelihood in "
    "**nats per image** on the same split and the same categorical likelihood as the VAE page."
)

THEORY_TITLE = "Theory: the chain rule, FVSBN, NADE, MADE, PixelCNN, and why sampling is slow"
THEORY = (
    "**The chain rule.** Any distribution over D variables factorises in any order o = (o₁, …, o_D):",
    r"$$p(x) = \prod_{t=1}^{D} p\big(x_{o_t} \,\big|\, x_{o_1}, \dots, x_{o_{t-1}}\big)",
    "A model that gives each factor its own normalised distribution (here a softmax over the grey "
    "levels) is normalised as a whole: summing over the last variable removes the last factor, then "
    "the next, and so on. Training maximises the log of the product, the sum of D cross-entropies, all"
    " computed in **one pass** because the whole training image is known. The only rule the network "
    "must obey: the output for pixel o_t may not look at pixel o_t itself or at any later pixel. The "
    "dependency panels check this rule by gradients, ∂ log p(x_i | ·)/∂ x_j, for every pair (i, j).",
    "**FVSBN** (fully visible sigmoid belief net) makes each factor a logistic regression, here a "
    "softmax regression on the levels of the earlier pixels: D separate models, about D²L weights.",
    "**NADE** shares one hidden layer among all the factors. Pixel o_t's hidden units see the earlier "
    "pixels through the same weight matrix W, so their pre-activations are running sums:",
    r"$$a_{t+1} = a_t + W_{:,o_t}\, x_{o_t},\quad a_1 = c,\qquad h_t = \sigma(a_t),\qquad p(x_{o_t}\,|\,x_{<t}) "
    r"= \mathrm{softmax}(V_{o_t} h_t + b_{o_t})",
    "All D hidden vectors cost O(D·H) instead of O(D²·H): a cumulative sum in training, and when "
    "sampling one update of a per pixel rather than a new pass of the network.",
    "**MADE** masks the weights of an ordinary MLP. Each hidden unit gets a degree m (the number of "
    "earlier pixels it may see); a weight survives when the unit's degree is at least the input's step,"
    " and an output at step t keeps only units of degree below t. Every path from input j to output i "
    "then runs through degrees that forbid j ≥ i. With several orderings (and connectivities), one "
    "used per batch in turn, the same weights learn K different chains; at test time their equal "
    "mixture is still an exact likelihood, and usually a better one than any single chain:",
    r"$$p(x) = \frac1K \sum_{k=1}^{K} p_k(x),\qquad \log p(x) = \mathrm{logsumexp}_k \log p_k(x) - \log K",
    "**PixelCNN** uses convolutions on the image, masked so that each output only sees the pixels above "
    "it and to its left (raster order). The first layer's mask (A) also hides the centre pixel; later "
    "layers (mask B) may see the centre, which by then only carries information about earlier pixels. "
    "Stacking 3×3 masked convolutions leaves a **blind spot**: pixels above and to the right that no "
    "path reaches, however deep the stack. The gated version splits the network into a vertical stack "
    "(everything in the rows above, passed down one row) and a horizontal stack (the pixels to the left"
    " in the same row), with gated units tanh(a)·σ(b); together they see every earlier pixel.",
    "**Sampling is sequential.** x₁ is drawn, then x₂ from p(x₂ | x₁), and so on: D network passes per "
    "batch of images, each waiting for the previous one. A VAE's decoder or a flow produces an image in "
    "one pass. The page measures both; the ratio grows with the number of pixels (a 256×256 colour "
    "image has 196,608 of them).",
    "**2D data.** p(x₁, x₂) = p(x₁)·p(x₂ | x₁) with a learned 1D Gaussian mixture for p(x₁) and a "
    "mixture density network for p(x₂ | x₁) (an MLP that outputs the mixture's weights, means and "
    "spreads as functions of x₁). The density is exact on the whole plane, so it is drawn beside the "
    "target, and each vertical slice of it is one conditional.",
    "**Numbers.** Likelihoods are nats per image on the 300 held-out test digits, from the checkpoint "
    "with the best validation NLL (so overfitting does not leak into them); bits per dimension divide "
    "by 64·ln 2. Binarised digits are another data set (one bit per pixel): their nats do not compare "
    "with the grey-level ones.",
)

#: the plain PixelCNN's blind spot with kernel 5 and 6 layers: earlier pairs (output pixel, input pixel) outside
#: the stack's receptive field (tests/test_autoregressive.py counts them from the masks alone)
BLIND_PAIRS = 210


def _dependency_counts(t: ARTrainer) -> tuple[int, int, int]:
    """The page's latest dependency check of the first ordering (made here when there is none yet)."""
    if not t.images:
        raise ValueError("2D data: no pixels")
    return t.dependency_counts(0, current=False)


def _sampling_ratio(t: ARTrainer) -> float | None:
    """The latest sampled batch's time ÷ one pass of its exact likelihood (None before the page samples)."""
    s = t.sampling
    return s["seconds"] / s["likelihood_seconds"] if s is not None else None


def _below_the_bound(t: ARTrainer) -> float | None:
    """How far the exact test NLL lies below the VAE page's bound on the same digits (nats per image)."""
    if t.vae_bound is None or "nll" not in t.latest_eval:
        return None
    return t.vae_bound - t.latest_eval["nll"]


VAE_STEPS = 1000  # the VAE page's default run, headless: its -ELBO settles by then (99 nats on seeds 0-1)


@functools.cache
def _vae_bound(seed: int) -> float:
    vae = registry.get("vae")
    v = vae.make(seed=seed, device="cpu")
    v.step(VAE_STEPS)
    return -float(v.latest_eval["elbo"])


def _a_vae_run_beside(t: ARTrainer) -> None:
    """What playing the VAE page first gives the lesson, headless: that page's default run's bound."""
    t.vae_bound = _vae_bound(t.seed)


LESSONS = (
    Lesson(
        "an ordering matters",
        {"model": "made", "ordering": "random", "orderings": 8},
        "one MADE trained over 8 orderings: their ensemble beats one ordering of the same weights",
        "One network learns 8 chains, one per batch in turn. Play for 20 s and compare the validation "
        "curve of the ensemble (red) with the dotted one of its first ordering alone: the NLL of the "
        "mixture of the 8 exact likelihoods is lower (better). In the samples each digit is drawn in "
        "its own order. Then set MADE orderings to 1 and compare the natural and random orderings.",
        look="the ensemble's NLL below every single ordering's",
        watch=Watch("one ordering − ensemble (nats)", evaluated("val_nll_one", minus="val_nll"), lambda v: v >= 1,
                    "≥ 1", every=100, max_steps=3000),
    ),
    Lesson(
        "the blind spot",
        {"model": "pixelcnn", "stack": "plain", "kernel": 5, "layers": 6},
        "stacked masked convolutions never see a triangle of pixels above-right; the gated two-stack sees them",
        "Look at the dependency map of pixel (row 5, col 2) before pressing Play: the orange pixels come "
        "before it but no gradient reaches it from them, and the matrix counts 210 such pairs over all "
        "pixels. More layers do not help. Switch the PixelCNN stack to gated: the count drops to 0.",
        look='the triangle of pixels above-right that the plain stack never sees',
        watch=Watch("earlier pairs no gradient reaches", lambda t: _dependency_counts(t)[1], lambda v: v == BLIND_PAIRS,
                    f"= {BLIND_PAIRS}", every=100, max_steps=500),
    ),
    Lesson(
        "exact likelihood beats the ELBO",
        {"model": "pixelcnn"},
        "the same digits, the same categorical likelihood: an exact NLL below the VAE's bound",
        "First play the VAE page with its default settings (z = 2) for 10-30 s, then come back through the "
        "sidebar: its −ELBO and −IWAE on the same test digits appear as lines on the curves, and the status "
        "line measures the gap. Play here: the PixelCNN's test NLL (dashed) falls below them within a few "
        "hundred steps (headless, with the VAE's −ELBO of 98.6-99.5 nats after 1,000 steps: 7-8 nats below "
        "it at step 200, 9-10 by 500 on seeds 0-4). A VAE only bounds its likelihood; here it is computed "
        "exactly.",
        look="the exact NLL ending below the VAE's bound on the same digits",
        watch=Watch("the VAE's −ELBO − this exact NLL (nats)", _below_the_bound, lambda v: v >= 5, "≥ 5",
                    every=100, max_steps=3000, first="vae", measure=_a_vae_run_beside),
    ),
    Lesson(
        "slow sampling",
        {"model": "pixelcnn", "stack": "gated"},
        "one image takes 64 network passes; the VAE and a flow need one",
        "Watch the samples appear one pixel at a time, each pixel a full pass of the network. Under them the "
        "page times both directions on the same images: 64 passes to draw them, one pass for their exact "
        "likelihood (the status line gives the ratio: 65-70 on seeds 0-4 here), and beside them a VAE decoder's "
        "and a flow's one-pass sampling. Training is fast here (one pass per batch); sampling is what is slow.",
        look='the 64 network passes one image takes, against one for a VAE or a flow',
        watch=Watch("sampling time ÷ the same images' likelihood time", _sampling_ratio, lambda v: v >= 30, "≥ 30",
                    every=100, max_steps=500, measure=lambda t: t.measure_sampling(36, t.eval_generator(20))),
    ),
    Lesson(
        "small data overfits",
        {"model": "made", "train_size": 200},
        "200 training digits: the training NLL keeps falling while the validation NLL turns up",
        "Play for 20 s. The training curve (blue) keeps falling while the validation curve turns up "
        "within a few hundred steps: the model memorises its 200 digits. The test figure comes from the "
        "best validation checkpoint, so it stops improving instead of getting worse.",
        look='the validation NLL turning up while the training NLL keeps falling',
        watch=Watch("validation NLL above its best (nats)", evaluated("val_nll", minus="best_val_nll"),
                    lambda v: v >= 5, "≥ 5", every=100, max_steps=3000),
    ),
    Lesson(
        "2D: p(x1) p(x2|x1)",
        {"data": "8gaussians", "batch": 256},
        "a 1D mixture and a mixture density network give an exact 2D density, slice by slice",
        "Play for 15 s. The density is drawn exactly beside the target; the dashed lines are the slices "
        "whose conditionals p(x2 | x1) appear below, the model's solid and the target's dashed. The validation "
        "NLL is exact, so its gap to the target's entropy is KL(p‖q) itself (plus sampling noise): it falls "
        "below 0.15 nats within about 500 steps. Switch the first coordinate to x2 for the other chain of the "
        "same joint.",
        look="the density slices p(x2|x1) taking the target's shape",
        watch=Watch("NLL − entropy (nats)", evaluated("val_nll", minus=lambda t: t.dist.entropy),
                    lambda v: v <= 0.15, "≤ 0.15", every=100, max_steps=3000),
    ),
)

def _ar_nll(t: ARTrainer, x) -> float | None:
    """The exact NLL in nats: of 2D points, or of grey-level digits (levels 0..16)."""
    if t.images and t.levels != 17:
        return None  # the binarised digits: another data set
    with torch.no_grad():
        x = x.to(t.device)
        return float(-t.model.log_prob(x.round().long() if t.images else x).mean())


ARENA = Arena("autoregressive", samples=samples, latent=lambda t: None, likelihood=_ar_nll, kind="exact")


EXPERIMENT = Experiment(
    name="autoregressive",
    help="autoregressive models (FVSBN, NADE, MADE, PixelCNN) on the 8x8 digits, or p(x1)p(x2|x1) on 2D data",
    config=ARConfig,
    trainer=ARTrainer,
    figures=figures,
    samples=samples,
    lessons=LESSONS,
    text=PageText("Autoregressive models", INTRO, THEORY_TITLE, THEORY),
    arena=ARENA,
)
