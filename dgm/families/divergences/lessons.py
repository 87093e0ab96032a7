"""The Divergences page's text, its lessons and the Experiment record."""

from __future__ import annotations

import math

import torch

from dgm.core.registry import Experiment, Lesson, PageText, Watch
from dgm.families.divergences.figures import figures
from dgm.families.divergences.trainer import DivergenceConfig, DivergenceTrainer

INTRO = (
    "A fixed mixture **p** and a simpler **q** (one Gaussian, or a few) fitted to it by minimising a "
    "divergence, one q per divergence, all at once. Minimising the forward KL(p‖q), which is maximum "
    "likelihood, stretches q over every mode; the reverse KL(q‖p) pulls it onto a single mode; the "
    "others fall in between. Every value is a quadrature on a grid (stated below the figures, with the "
    "estimated error of each value); MMD is fitted from samples, as an integral probability metric would "
    "be, and reported exactly, beside W1. Press **Play**"
    " to watch, move the modes in the sidebar, or try a lesson preset."
)

THEORY_TITLE = "Theory: the divergences, and why they cover or seek modes"
THEORY = (
    "For densities p (the target) and q (the model) on the same space:",
    r"$$\mathrm{KL}(p\,\|\,q)=\int p(x)\log\frac{p(x)}{q(x)}\,dx \quad\text{(forward)}\qquad "
    r"\mathrm{KL}(q\,\|\,p)=\int q(x)\log\frac{q(x)}{p(x)}\,dx \quad\text{(reverse)}",
    r"$$\mathrm{JS}(p,q)=\tfrac12\,\mathrm{KL}\!\left(p\,\middle\|\,m\right)+\tfrac12\,\mathrm{KL}\!\left(q\,\middle\|\,m\right),\quad"
    r" m=\tfrac12(p+q),\qquad 0\le \mathrm{JS}\le\log 2",
    r"$$D_\alpha(p\,\|\,q)=\frac{1-\int p(x)^{\alpha}\,q(x)^{1-\alpha}\,dx}{\alpha(1-\alpha)},\qquad "
    r"\lim_{\alpha\to1}D_\alpha=\mathrm{KL}(p\|q),\ \ \lim_{\alpha\to0}D_\alpha=\mathrm{KL}(q\|p)",
    r"$$H^2(p,q)=1-\int\sqrt{p(x)\,q(x)}\,dx=\tfrac14 D_{1/2},\qquad "
    r"\mathrm{TV}(p,q)=\tfrac12\int|p(x)-q(x)|\,dx",
    r"$$\mathrm{MMD}^2(p,q)=\mathbb{E}\,k(x,x')+\mathbb{E}\,k(y,y')-2\,\mathbb{E}\,k(x,y),\quad "
    r"x,x'\sim p,\ y,y'\sim q,\quad k(a,b)=e^{-\|a-b\|^2/2h^2}",
    "**Why forward KL covers.** The forward KL averages log(p/q) over *p*. Wherever p has mass and q "
    "is tiny, the log ratio is huge, so any mode that q leaves out costs without limit. The cheapest "
    "answer for a single Gaussian is to be wide enough to reach every mode, even if it puts mass in "
    "the empty space between them. For a Gaussian q the optimum is exact moment matching: q takes p's"
    " mean and covariance.\n\n**Why reverse KL seeks.** The reverse KL averages log(q/p) over *q*. Now "
    "q pays for mass it puts where p is nearly zero, and pays nothing for the modes it ignores. So q "
    "shrinks onto one mode (which one depends on where it starts; see the restarts) and fits that "
    "mode snugly. This is the direction of variational inference, which is why a variational "
    "posterior is often too narrow.\n\n**In between.** The Amari α-divergence moves from reverse KL (α "
    "= 0) to forward KL (α = 1) as α grows: small α seeks, large α covers, and α = ½ is four times "
    "the squared Hellinger distance. JS, Hellinger and total variation are bounded, so an ignored "
    "mode costs only a finite amount: once the modes are far enough apart they side with one mode, "
    "and below that they cover both. The switch comes late: for two equal modes of equal width, "
    "reverse KL seeks from about 6 standard deviations apart, α = ¼ from 7, TV from 8, JS from 9 and "
    "Hellinger from 10, while forward KL always covers (the scan at the bottom of the page measures "
    "it for the 1D p of the sidebar); so on the default page and in the 1D lesson (modes about 6 and "
    "8 standard deviations apart) JS and Hellinger still cover both modes. MMD compares the two distributions through a kernel of bandwidth h,"
    " from samples only: a wide kernel sees mostly the mean and the spread, a narrow one sees the "
    "modes.\n\n**The link to GANs.** For a fixed generator density q, the discriminator that maximises "
    "E_p[log D] + E_q[log(1 − D)] is D*(x) = p(x) / (p(x) + q(x)). Putting it back in gives",
    r"$$\max_D\ \mathbb{E}_{p}\log D(x)+\mathbb{E}_{q}\log\bigl(1-D(x)\bigr)=2\,\mathrm{JS}(p,q)-\log "
    r"4",
    "so a generator trained against an optimal discriminator minimises the Jensen-Shannon divergence;"
    " its JS column in the table is what such a GAN would see. Replacing JS by another f-divergence "
    "or by an integral probability metric (MMD, Wasserstein) gives the f-GAN, MMD-GAN and WGAN "
    "families.\n\n**How this page computes.** Each divergence is an integral of a function of p(x) and "
    "q(x) that is never negative (for the KL, p log(p/q) − p + q). The page evaluates the exact densities "
    "at the centres of the cells of a grid over a box wider than the plot, and adds up value times cell "
    "area (the midpoint rule). Near a mode narrower than the cells, the cells are cut into sub-cells of "
    "3/4 of the mode's standard deviation, so every mode gets its exact mass however narrow it is. Beside "
    "each value is its estimated error: the change when every cell is twice as wide, over 3 (the rule's "
    "error shrinks with the square of the cell); a value whose estimate exceeds 1% of it is not shown. "
    "MMD with a Gaussian kernel between Gaussian mixtures has a closed form, so it is exact. Adam follows "
    "the exact gradient of the quadrature. The reverse KL can instead be estimated from reparameterised "
    "samples x = μ + Lε of q, as variational inference does in high dimension, to show the noise this "
    "brings.",
)


def _spread(t: DivergenceTrainer, name: str) -> float:
    """How wide the q fitted by ``name`` is (its best start, as the page draws it): the square root of its
    covariance's trace, the whole mixture's."""
    cov = t.params(t.exact(refine=False))[name]["cov"]
    return math.sqrt(sum(cov[i][i] for i in range(len(cov))))


def _covers_over_seeks(t: DivergenceTrainer) -> float:
    """The forward-KL fit's width over the reverse-KL fit's: above 1 when one covers and the other seeks."""
    return _spread(t, "forward_kl") / _spread(t, "reverse_kl")


def _widest_over_narrowest(t: DivergenceTrainer) -> float:
    """The widest fit's width over the narrowest's, over every objective: near 1 when all fits agree."""
    widths = [_spread(t, name) for name in t.row]
    return max(widths) / min(widths)


def _modes_left_out(t: DivergenceTrainer, name: str = "reverse_kl") -> float:
    """How many of p's modes the q fitted by ``name`` leaves out: where its density at the mode's centre is
    under a tenth of p's."""
    i = t.exact(refine=False)[1][name]
    centres = t.target.means.to(t.q.loc.dtype)
    with torch.no_grad():
        ratio = t.q.log_prob(centres, rows=slice(i, i + 1))[0] - t.target.log_prob(centres)
    return float((ratio < math.log(0.1)).sum())


def _curve_jitter(t: DivergenceTrainer, name: str = "reverse_kl", n: int = 50) -> float | None:
    """How much the objective's curve jumps from one recorded step to the next over its last ``n`` points (the
    standard deviation of the differences, nats): a Monte Carlo estimate's noise, about 0 for a quadrature."""
    ys = [r[f"fit_{name}"] for r in t.history.rows[-n:] if r.get(f"fit_{name}") is not None]
    if len(ys) < n:
        return None
    d = torch.tensor(ys, dtype=torch.float64).diff()
    return float(d.std())


#: the Monte Carlo reverse KL's curve jumps by 0.2-2.6 nats from step to step over steps 50-2,000 (2 samples per
#: step, seeds 0-9); the quadrature's by under 1e-6
JITTER = 0.1

#: the fits settle within about a hundred steps; the first fifty are not yet a fit (at step 0 the best start
#: may already differ in width by chance: the broad start against a narrow one)
FITTED = 50

LESSONS = (
    Lesson(
        "mode covering vs seeking",
        {"target": "bimodal", "family": "gaussian"},
        "forward KL spreads one Gaussian over both modes; reverse KL locks onto one",
        text=(
            'The target p has two Gaussian modes; each coloured ellipse is one Gaussian q fitted under a '
            'different divergence. Forward KL(p‖q) pays wherever p has mass that q misses, so its q stretches '
            'over both modes. Reverse KL(q‖p) pays wherever q puts mass that p lacks, so its q sits on one mode '
            'and ignores the other. The page opens fitted; press Reset, then Play, to watch the fits move.'
        ),
        look='the red ellipse (forward KL) spans both modes; the blue one (reverse KL) sits on one',
        watch=Watch("forward-KL width ÷ reverse-KL width", _covers_over_seeks, lambda v: v >= 2, "≥ 2", every=25,
                    max_steps=500, after=FITTED),
    ),
    Lesson(
        "1D: two humps, one Gaussian",
        {"target": "mix1d", "sep": 5.0, "sd1": 0.6, "sd2": 0.6, "w1": 0.5},
        "the lecture's picture: p and every fitted q as curves on one axis",
        text=(
            'The same contest on one axis, as in the lecture: p has two humps 5 apart, and every curve is a '
            'Gaussian q fitted under one divergence. Forward KL puts one wide bump between the humps, reverse KL '
            'a narrow bump on one hump, and the others fall in between.'
        ),
        look='the wide forward-KL curve between the humps against the narrow reverse-KL curve on one hump',
        watch=Watch("forward-KL width ÷ reverse-KL width", _covers_over_seeks, lambda v: v >= 3, "≥ 3", every=25,
                    max_steps=500, after=FITTED),
    ),
    Lesson(
        "merging modes",
        {"target": "mix1d", "sep": 1.5, "sd1": 0.6, "sd2": 0.6, "w1": 0.5},
        "when the modes overlap, every divergence agrees on a single broad Gaussian",
        text=(
            'The humps are now only 1.5 apart, so p itself is nearly one broad bump. There is nothing to choose '
            'between: every divergence fits almost the same Gaussian, and the curves lie on top of one another. '
            'Raise the separation in the sidebar to see them part.'
        ),
        look='all fitted curves nearly coincide',
        watch=Watch("widest fit ÷ narrowest", _widest_over_narrowest, lambda v: v <= 1.2, "≤ 1.2", every=25,
                    max_steps=500, after=FITTED),
    ),
    Lesson(
        "three modes, two components",
        {"target": "trimodal", "family": "mixture", "k": 2},
        "a two-component q facing three modes must choose which mode to drop; the table shows which fits "
        "stop in a local optimum",
        text=(
            'q is now a mixture of two Gaussians facing three modes: it cannot cover all of them. Reverse KL '
            'drops a mode and fits the other two sharply; forward KL merges two modes into one wide component. '
            'The restarts table below shows how often each divergence lands in which solution from different '
            'starting points.'
        ),
        look='which mode each fit drops, and the restarts table',
        watch=Watch("modes the reverse-KL fit leaves out", _modes_left_out, lambda v: v == 1, "= 1", every=25,
                    max_steps=500, after=FITTED),
    ),
    Lesson(
        "ring of eight",
        {"target": "ring8", "width": 5.0},
        "eight modes, one Gaussian: reverse KL picks one mode, forward KL fills the ring",
        text=(
            'Eight modes on a ring and a single Gaussian q. Forward KL must cover every mode, so its q becomes a '
            'wide disc over the whole ring; reverse KL settles on one mode and ignores the other seven.'
        ),
        look='a wide disc (forward KL) against a small ellipse on one mode (reverse KL)',
        watch=Watch("forward-KL width ÷ reverse-KL width", _covers_over_seeks, lambda v: v >= 2.5, "≥ 2.5",
                    every=25, max_steps=500, after=FITTED),
    ),
    Lesson(
        "noisy reverse KL",
        {"target": "bimodal", "mc": True, "mc_n": 2},
        "reverse KL from 2 reparameterised samples per step: the same target, a noisy path",
        text=(
            'Reverse KL is estimated here from only two reparameterised samples of q per step instead of an exact'
            ' integral. The fit heads to the same place, but its path and its curve jitter: this is the noise '
            'every Monte Carlo objective (an ELBO too) trains with.'
        ),
        look='the jittery reverse-KL curve and ellipse, compared with the smooth exact ones',
        watch=Watch("reverse-KL curve's jitter (nats)", _curve_jitter, lambda v: v >= JITTER, f"≥ {JITTER}", every=25,
                    max_steps=500, after=FITTED),
    ),
)

EXPERIMENT = Experiment(
    name="divergence",
    help="fit a Gaussian (or a small mixture) q to a fixed mixture p under forward KL, reverse KL, JS, "
         "alpha, Hellinger, TV and MMD at once",
    config=DivergenceConfig,
    trainer=DivergenceTrainer,
    figures=figures,
    lessons=LESSONS,
    text=PageText("Divergences: mode covering vs mode seeking", INTRO, THEORY_TITLE, THEORY),
)
