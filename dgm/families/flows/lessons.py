"""The flows page's text, its lessons and the Experiment record."""

from __future__ import annotations

import torch

from dgm.core.registry import Arena, Experiment, Lesson, PageText, Watch, evaluated
from dgm.families.flows.figures import figures
from dgm.families.flows.seeds import FlowSeeds
from dgm.families.flows.trainer import FlowConfig, FlowTrainer, true_entropy

INTRO = (
    "A flow turns a standard Gaussian into the target by a chain of **invertible** maps. Because "
    "every map can be undone, the model's density at any point is exact: pull the point back to the "
    "Gaussian and correct for how much each layer stretched or squeezed space on the way (its "
    "**log-determinant**). Below, the learned density sits beside the target; the row of small panels"
    " follows the Gaussian through every layer, with a square grid bent along; pick a layer to see "
    "where it expands (red) or compresses (blue) space. Press **Play**."
)

THEORY_TITLE = "Theory: change of variables, log-determinants, couplings, MAF and IAF"
THEORY = (
    "**Change of variables.** Draw z from a simple base density (here a standard 2D Gaussian) and set"
    " x = f(z) with f invertible. The probability in a small patch around z is carried to the image "
    "patch around x, whose area is |det J| times larger, so the density divides by it:",
    r"$$\log q(x) = \log p_Z\big(f^{-1}(x)\big) + \log\left|\det \frac{\partial f^{-1}(x)}{\partial "
    r"x}\right| = \log p_Z(z) - \log\left|\det \frac{\partial f(z)}{\partial z}\right|",
    "**Stacking layers.** For f = f_K ∘ … ∘ f_1 the Jacobian is a product, so the log-determinants "
    "add up along the chain z₀ → z₁ → … → z_K = x:",
    r"$$\log q(x) = \log p_Z(z_0) - \sum_{k=1}^{K} \log\left|\det \frac{\partial z_k}{\partial "
    r"z_{k-1}}\right|",
    "The heatmap of one layer shows the k-th term: where it is positive the layer spreads mass out "
    "(density drops), where negative it piles mass up.",
    "**Planar and radial layers** (Rezende & Mohamed) bend space along one direction or around one "
    "point; the matrix determinant lemma gives their determinant in closed form:",
    r"$$x = z + u\,h(w^\top z + b),\qquad \det J = 1 + h'(w^\top z + b)\, u^\top w",
    "Both are easy to run forwards. Going back differs: a planar layer has no closed-form inverse, so "
    "evaluating q at given data needs a numerical root search along w in every layer; a radial layer "
    "moves each point along the ray from its centre z₀, and the distance to the centre before the "
    "layer is the root of a quadratic, so its inverse is in closed form (one pass, like the forward "
    "direction).",
    "**Coupling layers** (NICE, RealNVP, splines) leave half the coordinates alone and transform the "
    "other half with parameters computed from the untouched half. The Jacobian is triangular, so its "
    "determinant is the product of its diagonal, and inverting only needs the same network once more:",
    r"$$x_a = z_a,\quad x_b = z_b \odot e^{s(z_a)} + t(z_a),\qquad J = \begin{pmatrix} I & 0 \\ \ast &"
    r" \operatorname{diag}(e^{s(z_a)}) \end{pmatrix},\quad \log|\det J| = \textstyle\sum_i s_i(z_a)",
    "NICE is the case s = 0 (volume-preserving, with one scaling at the end); a rational-quadratic "
    "spline replaces the affine map of x_b by a flexible monotone curve. The swap or rotation between"
    " layers lets every coordinate be transformed in turn.",
    "**Autoregressive layers.** MAF computes each coordinate's shift and scale from the *data* "
    "coordinates before it; IAF from the *noise* coordinates before it:",
    r"$$\text{MAF: } z_i = \big(x_i - \mu_i(x_{<i})\big)\, e^{-\alpha_i(x_{<i})}\qquad\text{IAF: } x_i"
    r" = z_i\, e^{\alpha_i(z_{<i})} + \mu_i(z_{<i})",
    "Both have triangular Jacobians. MAF gets z from x in one masked-network pass (cheap likelihood, "
    "so cheap **forward KL** = maximum likelihood on data), but sampling must build x one coordinate "
    "at a time. IAF is the mirror image: one pass to sample x together with its log q (cheap "
    "**reverse KL**), but the density of a given data point needs the sequential inversion. In 2D "
    "'one coordinate at a time' is only two passes; in an image it is thousands.",
    "**The two objectives.**",
    r"$$\mathrm{KL}(p\,\|\,q) = -H(p) - \mathbb{E}_{x\sim p}[\log q(x)]\qquad\mathrm{KL}(q\,\|\,p) = "
    r"\mathbb{E}_{x\sim q}[\log q(x) - \log \tilde p(x)] + \log Z",
    "Forward KL only needs samples of p, and the held-out NLL can approach the entropy H(p) but never"
    " go below it; missing a mode is expensive, so q spreads to cover all of them. Reverse KL needs "
    "p's density up to its constant Z, and samples of q; q is punished for putting mass where p has "
    "none, but not for ignoring a mode, so it tends to lock onto some modes. Annealing (weighting log"
    " p̃ by β rising from 0.01 to 1) lets q spread before the target's full sharpness kicks in.",
)

def _entropy(t: FlowTrainer) -> float:
    return true_entropy(t.config.data)


#: the held-out NLL's gap to the target's entropy (KL(p||q) plus the estimate's noise)
_GAP = evaluated("nll", minus=_entropy)

LESSONS = (
    Lesson(
        "RealNVP learns 8gaussians",
        {},
        "twelve affine coupling layers pull a Gaussian apart into 8 blobs; the held-out NLL falls to the "
        "entropy line",
        text=(
            'Twelve affine coupling layers, each followed by a learned invertible linear map that mixes the two '
            'coordinates, start as the identity, so q is a Gaussian blob. Each step bends them a little, and the '
            'blob is pulled apart into eight separate modes. The held-out NLL curve falls towards'
            " the dashed line, the data's true entropy, the best any model can reach (within 0.1 nats by 4,000 "
            "steps on the typical seed: README, the seed tables)."
        ),
        look='q splitting into eight blobs, and the NLL curve approaching the entropy line',
        watch=Watch("NLL − entropy (nats)", _GAP, lambda v: v <= 0.15, "≤ 0.15", every=250, max_steps=4000),
        start=1000,
    ),
    Lesson(
        "planar flow on U1-U4",
        {"data": "U3", "objective": "reverse_kl", "flow": "planar", "layers": 32, "lr": 0.01, "batch": 512, "halflife": 0, "anneal": True, "anneal_steps": 2000},
        "32 planar layers fitted by reverse KL to Rezende & Mohamed's U3; switch the target among U1-U4",
        text=(
            'Thirty-two planar layers, each a single bend of the plane, fitted by reverse KL to Rezende and '
            "Mohamed's energy U3 (the target is known up to a constant, so no data are needed). The KL weight is "
            'annealed over the first 2,000 steps. Change the target among U1 to U4 in the sidebar.'
        ),
        look="the samples of q taking the shape of the target's bands",
        # exact, by quadrature against the normalised target: 0.32-0.36 at step 1,000, 0.14-0.19 at 1,500 (seeds 0-4)
        watch=Watch("reverse KL (nats)", evaluated("reverse_kl"), lambda v: v <= 0.3, "≤ 0.3", every=100,
                    max_steps=3000),
        start=500,  # (0.84-1.15 nats there)
    ),
    Lesson(
        "reverse KL misses a mode, forward KL covers it",
        {"data": "8gaussians", "objective": "reverse_kl", "flow": "realnvp", "layers": 2, "mixing": "swap", "hidden": 64, "batch": 512, "lr": 0.005, "halflife": 0, "anneal": False},
        "two coupling layers cannot shape eight modes, so the fit must give something up; reverse KL gives up "
        "modes; switch the objective to forward_kl",
        text=(
            'Two coupling layers are too few to pull a Gaussian apart into eight blobs, so the fit has to '
            'compromise, and the objective decides how. Trained by reverse KL, the flow only sees its own '
            'samples: a mode where q has no samples sends no signal, so q settles on five or six of the modes and '
            'leaves the others empty (under 1% of its samples each), and they stay empty. Read the two KLs in the '
            'metrics line: KL(q‖p), the one being minimised, falls below 1 nat, while KL(p‖q) is tens of nats, '
            "the price of p's mass where q has none. Switch the objective to forward_kl: trained on data, every "
            'mode pulls, and the same two layers cover all eight, with bridges of mass between them; now KL(p‖q) '
            'is below 1 and KL(q‖p) the larger one. (Seeds 0-14: 5-6 modes covered at step 500, at most 7 by '
            '3,000; forward KL covers 8 on every seed.)'
        ),
        look="empty modes in q's samples that never fill in, and KL(p‖q) far above KL(q‖p)",
        watch=Watch("modes covered", evaluated("modes"), lambda v: v <= 6, "≤ 6 of 8", every=250, max_steps=3000,
                    after=500),
    ),
    Lesson(
        "too few layers",
        {"data": "8gaussians", "flow": "realnvp", "layers": 2, "mixing": "swap"},
        "two coupling layers cannot separate 8 modes: bridges of mass remain",
        text=(
            'With only two coupling layers the flow cannot bend a Gaussian into eight separate blobs: thin '
            'bridges of mass remain between the modes however long it trains, and the NLL stays above the entropy'
            ' line. Compare with the twelve-layer default.'
        ),
        look='the bridges of mass between the modes, and the NLL gap to the entropy line',
        watch=Watch("NLL − entropy (nats)", _GAP, lambda v: v >= 0.5, "≥ 0.5, and it stays", every=250,
                    max_steps=3000, after=1000),
    ),
    Lesson(
        "spline flow on checkerboard",
        {"data": "checkerboard", "flow": "spline", "layers": 6, "mixing": "swap"},
        "monotone spline couplings carve sharp-edged squares that affine couplings blur; switch the flow "
        "layer to realnvp to compare",
        text=(
            'Monotone rational-quadratic spline couplings can make sharp edges, which is what a checkerboard '
            "needs: the lesson opens at step 300; watch the held-out NLL's gap to the entropy line fall below 0.25 "
            "nats within a few hundred steps. "
            'Switch the flow layer to realnvp to compare: affine couplings only scale and shift, so their '
            'squares stay blurred and the gap stays wider.'
        ),
        look='the squares of log q(x) sharpening at their edges',
        watch=Watch("NLL − entropy (nats)", _GAP, lambda v: v <= 0.25, "≤ 0.25", every=100, max_steps=3000),
        start=300,
    ),
)

def _flow_samples(t: FlowTrainer, n: int):
    return t.model.sample(n, t.eval_generator(2)).detach().cpu().numpy()


def _flow_nll(t: FlowTrainer, x) -> float:
    with torch.no_grad():
        return float(-t.model.log_prob(x.to(t.device)).mean())


ARENA = Arena("flow", samples=_flow_samples, latent=lambda t: 2, likelihood=_flow_nll, kind="exact")


EXPERIMENT = Experiment(
    name="flow",
    help="fit a normalizing flow (planar, radial, NICE, RealNVP, spline, MAF, IAF) to a 2D target",
    config=FlowConfig,
    trainer=FlowTrainer,
    figures=figures,
    samples=_flow_samples,
    lessons=LESSONS,
    text=PageText("Normalizing flows", INTRO, THEORY_TITLE, THEORY),
    seeds=FlowSeeds,
    arena=ARENA,
)
