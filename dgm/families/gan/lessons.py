"""The GAN page's text, its lessons and the Experiment record."""

from __future__ import annotations

from dgm.core.metrics import mode_stats
from dgm.core.registry import Arena, Experiment, Lesson, PageText, Watch, evaluated
from dgm.families.gan.figures import figures
from dgm.families.gan import seeds_figures
from dgm.families.gan.seeds import GANSeeds, GANSeedsConfig, make as make_seeds
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import GANTrainer

INTRO = (
    "Two networks play a game on 2D data. The **discriminator** D learns to tell data points (black) "
    "from the generator's samples (orange); the **generator** G moves its samples wherever D says "
    "they look real. The heatmap is D's current opinion, the arrows show where G's loss pushes each "
    "sample, and the grey lines are a square grid of latent codes after G has warped it. Below, mode "
    "collapse is *measured*: how many of the modes G hits, how many of its samples are close to a "
    "mode, and how unevenly it spreads over them. The page opens on a GAN that captures every mode on the "
    "typical seed (two of the remedies below at work: packing and an R1 penalty); the lessons show the plain "
    "game and what goes wrong in it."
)

THEORY_TITLE = "Theory: the game, the optimal D, the log D trick, Lipschitz critics, mode collapse"
THEORY = (
    "**The minimax game.** D outputs the probability that x is real; G maps noise z to points. D "
    "maximises, and G minimises, the same value:",
    r"$$\min_G \max_D \; V(G,D) = \mathbb{E}_{x\sim p}\,[\log D(x)] + \mathbb{E}_{z\sim "
    r"p(z)}\,[\log(1-D(G(z)))]",
    "**The optimal discriminator.** For a fixed G with sample density q, maximising the integrand "
    "point by point gives",
    r"$$D^*(x) = \frac{p(x)}{p(x)+q(x)}",
    "which is the right-hand panel. Putting D* back into V turns the game into a divergence:",
    r"$$V(G, D^*) = 2\,\mathrm{JS}(p\,\|\,q) - \log 4, \qquad \mathrm{JS}(p\|q) = \tfrac12 "
    r"\mathrm{KL}\!\left(p \,\middle\|\, \tfrac{p+q}{2}\right) + \tfrac12 \mathrm{KL}\!\left(q "
    r"\,\middle\|\, \tfrac{p+q}{2}\right)",
    "so a generator facing a perfect discriminator minimises JS, which is 0 only when q = p (and then"
    " D* = 1/2 everywhere). The page estimates q from 2,500 samples of G with a Gaussian kernel, and "
    "smooths p with the same kernel, so that both sides are seen alike: a perfect G then gives D* ≈ 1/2 "
    "and JS ≈ 0 (the dashed line on the JS curve is what true samples of p get, the floor set by "
    "finitely many samples). The JS curve is the divergence between the two smoothed densities, a "
    "little below the JS between p and q themselves.",
    "**Why the log D trick.** Write D = σ(l) with l the logit. The saturating generator loss and its "
    "gradient are",
    r"$$\log(1-\sigma(l)),\quad \frac{\partial}{\partial l} = -\sigma(l) \qquad\text{vs.}\qquad -\log "
    r"\sigma(l),\quad \frac{\partial}{\partial l} = -(1-\sigma(l))",
    "Early on D rejects the samples easily, so σ(l) ≈ 0: the saturating gradient vanishes exactly "
    "when G most needs a signal, while the non-saturating one is close to its largest value. Both "
    "push in the same direction (∇l); only the weight differs (Johnson & Zhang read this as a "
    "step-size factor s(x) in front of ∇D).",
    "**Wasserstein critics need a Lipschitz bound.** WGAN replaces the classifier by a critic f and "
    "the game by the Kantorovich–Rubinstein dual of the earth mover's distance:",
    r"$$W(p,q) = \sup_{\|f\|_L \le 1} \mathbb{E}_{p}[f(x)] - \mathbb{E}_{q}[f(x)]",
    "The page shows both sides of this equation: W1 between G's samples and data points by exact "
    "optimal transport, and, for the WGAN losses, the critic's own estimate E_p f − E_q f. "
    "Without the constraint the supremum is infinite. *Weight clipping* keeps every weight in [−c, "
    "c]; a network of bounded weights has a bounded slope, so f is K-Lipschitz for some K (crude: it "
    "also limits what f can express). The *gradient penalty* adds λ E(‖∇f(x̂)‖ − 1)² at points "
    "between data and samples, where an optimal 1-Lipschitz critic has slope exactly 1. *Spectral "
    "normalisation* divides each layer by its largest singular value, so each layer, and with "
    "1-Lipschitz activations the whole net, is at most 1-Lipschitz.",
    "**Composite functional gradient (CFG).** Trained by logistic regression, D(x) ≈ log p(x)/q(x). "
    "Moving every sample a little uphill,",
    r"$$x \leftarrow x + \eta\, \nabla D(x)",
    "decreases KL(p‖q) to first order (Johnson & Zhang, 2018). Repeating it T times builds a deeper "
    "and deeper generator; xICFG keeps G a fixed network by regressing it onto the moved points, "
    "½‖G(z) − x_T‖². That is what the CFG loss here does, with one discriminator per outer step.",
    "**Mode collapse.** G is rewarded for samples D cannot reject, not for covering p. If all samples"
    " sit on one mode, D learns to reject that mode, and G can jump to another one instead of "
    "spreading out: the pair chases each other from mode to mode. The symptom is measurable: few "
    "modes captured, a high mode KL, while each sample still looks sharp (high quality).",
)


def _modes_now(t) -> float:
    """A watch's metric: the modes G's samples capture now (the evaluation's own samples and test, at any step)."""
    return float(mode_stats(t.generate(), t.data.centers, t.data.std)["modes"])


#: the plain game: no remedy, the former default rates. Every lesson that shows a phenomenon of the game itself
#: (or one remedy alone) starts from it, so that the page's robust default (packing and R1) does not hide it.
PLAIN = {"pack": 1, "r1": 0.0, "lr_d": 1e-3, "lr_g": 1e-3}

LESSONS = (
    Lesson(
        "vanilla GAN collapses",
        {**PLAIN, "loss": "nonsaturating", "d_steps": 1, "lr_d": 0.0001, "lr_g": 0.001, "decay": 1.0},
        "a plain GAN whose G learns faster than D: all samples move as one blob, mode to mode",
        "A plain GAN (the log D trick, one D step per G step) whose generator learns ten times faster "
        "than its discriminator. Press Play and watch the orange cloud: instead of spreading over the "
        "ring it stays one tight blob that D keeps rejecting, so it jumps from one place to the next. The"
        " **modes** curve stays low and the **mode KL** high (its maximum, log 8, when every sample sits "
        "on one mode). Set the "
        "two learning rates equal, or use WGAN-GP, to see the blob spread out.",
        look='one orange blob jumping between modes: modes captured stays at 2 or fewer',
        watch=Watch("modes captured", _modes_now, lambda v: v <= 2, "≤ 2", every=100, max_steps=2000,
                    after=300),  # at step 0 G's samples sit at the origin, on no mode: not yet a collapse
    ),
    Lesson(
        "saturating loss stalls early",
        {**PLAIN, "loss": "minimax", "d_steps": 5, "lr_d": 0.001, "lr_g": 0.0001, "decay": 1.0},
        "log(1 - D(G(z))) is flat where D easily rejects fakes, so G barely moves",
        "Here D trains five times per G step, so it quickly rejects the generator's first samples with "
        "great confidence. With the saturating loss log(1 − D(G(z))) that is exactly where the loss is "
        "flat: the arrows are tiny and the orange cloud hardly moves, although it is nowhere near the "
        "data. Switch the loss to *nonsaturating* (the log D trick) and the arrows come back at once.",
        look='tiny arrows and an orange cloud that barely moves',
        watch=Watch("modes captured", _modes_now, lambda v: v == 0, "= 0, still", every=100, max_steps=2000, after=500),
    ),
    Lesson(
        "WGAN-GP covers every mode",
        {**PLAIN, "loss": "wgan_gp", "gp": 0.1, "d_steps": 5, "lr_d": 0.001, "lr_g": 0.001, "beta1": 0.0, "beta2": 0.9},
        "a critic kept 1-Lipschitz by a gradient penalty keeps pulling every part of G's cloud towards a mode",
        "The critic is no longer a classifier: it scores points, and a gradient penalty keeps its slope "
        "near 1 everywhere between data and samples. Its gradient therefore never vanishes, even far from"
        " the data, so every part of the generated cloud keeps being pulled towards some mode. Watch the "
        "modes fill in.",
        look='modes captured reaching 8',
        watch=Watch("modes captured", _modes_now, lambda v: v == 8, "= 8", every=100, max_steps=4000),
        start=900,
    ),
    Lesson(
        "CFG particles",
        {**PLAIN, "loss": "cfg", "eta": 0.1, "T": 5},
        "Johnson & Zhang's functional gradient: generated points flow up grad D, then G follows",
        "Johnson & Zhang's composite functional gradient. The purple paths are generated points moved T "
        "times uphill on D (D estimates log p/q, so uphill means 'towards the data, away from the "
        "samples'); then G is fitted by least squares to land on the moved points. The generator follows "
        "its own particles. Watch the paths early on, when they fan out to every mode (5-8 modes captured "
        "at step 250 on seeds 0-4: the status line ticks there); in these settings the run then drifts into "
        "collapse (0-3 modes by step 3,000; η = 0.5, T = 15 or five D steps left 0-4 at step 2,000 on seeds "
        "0-1): the particles follow D's gradient, and where D has stopped telling the modes apart they all go "
        "the same way.",
        look='the purple particle paths running uphill on D, and G following them',
        # the fan-out, early: the collapse that follows is the text's, not the point's
        watch=Watch("modes captured", _modes_now, lambda v: v >= 5, "≥ 5, early", every=50, max_steps=500),
    ),
    Lesson(
        "PacGAN: D judges packs",
        {**PLAIN, "loss": "nonsaturating", "d_steps": 1, "lr_d": 0.0001, "lr_g": 0.001, "decay": 1.0, "pack": 4},
        "the collapsing GAN again, but D sees 4 samples at a time: a pack from one blob is easy to reject",
        "The settings of *vanilla GAN collapses*, with one change: D no longer judges one point but a **pack** of "
        "4, side by side (Lin et al., PacGAN). Four data points usually come from four different modes; four "
        "samples of a collapsed generator sit together, and D can see that at once. Collapse becomes expensive "
        "for G. Watch the **modes** curve against the collapse lesson's, and set *PacGAN packing m* back to 1 to "
        "compare. The heatmap shows D's verdict on a point packed with 3 of G's current samples.",
        look="modes captured, against the collapse lesson's 2 or fewer",
        watch=Watch("modes captured", _modes_now, lambda v: v >= 5, "≥ 5", every=100, max_steps=3000, after=300),
    ),
    Lesson(
        "unrolled GAN: G looks ahead",
        {**PLAIN, "loss": "nonsaturating", "d_steps": 1, "lr_d": 0.0001, "lr_g": 0.001, "decay": 1.0, "unroll": 5},
        "the collapsing GAN again, but G's loss is taken where D will be 5 steps later, so jumping to one mode "
        "does not pay",
        "The settings of *vanilla GAN collapses*, but G's update **unrolls** D: G's loss is taken at D's parameters "
        "after 5 more (differentiable) steps of D's optimiser (Metz et al.). A collapsed G would win for one step "
        "and lose as soon as D reacts; looking ahead, G sees the reaction coming and keeps its samples spread. "
        "Each G step now costs about six D steps, so the run is slower: compare the **modes** curve with the "
        "collapse lesson's at the same step, not the same second. The lesson opens at step 1,000: with D this slow "
        "the cloud takes 300-1,000 steps to reach the ring at all, and from there 5-8 modes are captured at most "
        "steps, against 0-1 in the collapse lesson (seeds 0-19).",
        look="modes captured at the same step as in the collapse lesson",
        watch=Watch("modes captured", _modes_now, lambda v: v >= 5, "≥ 5", every=50, max_steps=2000, after=300),
        start=1000,
    ),
    Lesson(
        "R1 penalty: D flat on the data",
        {**PLAIN, "loss": "nonsaturating", "d_steps": 1, "lr_d": 0.0002, "lr_g": 0.0002, "decay": 1.0, "r1": 1.0},
        "a gradient penalty on the data points (R1) damps the chase between G and D: the samples reach every "
        "mode and keep them",
        "Without a penalty, D keeps sharpening its verdict around the data, G overshoots, and the two circle "
        "each other. **R1** (Mescheder et al.) adds γ/2 E‖∇D(x)‖² at data points: D must stay flat where the data"
        " is, so once G's samples sit on a mode D has nothing left to push them with, and the game settles. Watch"
        " **modes captured** reach 8 and stay there (the cloud first spreads along the ring through all eight modes,"
        " then slowly gathers on them), then set *R1 weight γ* to 0 (a new run) to compare: on "
        "seeds 0-9, with γ = 1 all eight modes are captured by step 500-1,000 and at most checks after, and "
        "10-27% of the samples are high quality over steps 1,000-2,000; with γ = 0 four seeds of ten never "
        "capture all eight by step 2,000 and 0-14% are high quality. R2 is the same penalty at G's samples.",
        look="modes captured reaching 8 and staying there",
        watch=Watch("modes captured", _modes_now, lambda v: v == 8, "= 8", every=100, max_steps=3000, after=300),
    ),
    Lesson(
        "minibatch std: D sees the spread",
        {**PLAIN, "loss": "nonsaturating", "d_steps": 1, "lr_d": 0.0001, "lr_g": 0.001, "decay": 1.0, "mbstd": 4},
        "the collapsing GAN again, but D's last layer also sees how spread out each group of 4 samples is",
        "The settings of *vanilla GAN collapses*, plus one feature for D (Karras et al.): for each group of 4 "
        "samples, the standard deviation of D's features over the group, averaged. Real points are spread over "
        "the ring, a collapsed cloud is not, so D can reject a whole group for being too alike and G gains by "
        "spreading out. Watch the **modes** curve; set *minibatch-std group* to 0 to compare.",
        look="modes captured, against the collapse lesson's 2 or fewer",
        watch=Watch("modes captured", _modes_now, lambda v: v >= 5, "≥ 5", every=100, max_steps=4000, after=300),
        start=1000,
    ),
    Lesson(
        "two-timescale learning rates",
        {**PLAIN, "loss": "nonsaturating", "d_steps": 1, "lr_d": 0.001, "lr_g": 0.00025, "beta1": 0.0, "decay": 1.0},
        "the collapse lesson's learning rates the other way round: D learns 4 times faster than G",
        "The collapse lesson gave G ten times D's learning rate, so G outran a discriminator that was never "
        "close to optimal. A two-timescale update (Heusel et al.) does the opposite: D learns faster (here 4×, "
        "with Adam's momentum off, β1 = 0), so at each moment G follows the gradient of a nearly optimal D, which "
        "points at the modes G is missing. Compare the **modes** curve with the collapse lesson's, then set the "
        "two rates equal (0.001; a new run): the count swings between 2 and 8 (on seeds 0-9 it is 7 or 8 at "
        "26% of the checks over steps 1,000-2,000, against 94% here); swap them and G collapses as in the first "
        "lesson.",
        look="the modes curve climbing to 7-8 and staying there, against the collapse lesson's 0-1",
        watch=Watch("modes captured", _modes_now, lambda v: v >= 7, "≥ 7", every=100, max_steps=3000, after=300),
    ),
    Lesson(
        "grid25",
        {**PLAIN, "data": "grid25", "loss": "wgan_gp", "gp": 0.1, "d_steps": 2, "lr_d": 0.003, "lr_g": 0.003, "beta1": 0.0, "beta2": 0.9, "g_width": 128, "d_width": 128, "decay": 0.8, "ema": 0.999},
        "25 narrow modes on a grid: a wider WGAN-GP finds all of them, then sharpens as its rates decay; "
        "the samples come from an average of G's recent weights, which sits tighter on the modes",
        "Twenty-five narrow modes on a square grid, 2 apart. A WGAN-GP with wider networks (128 units) "
        "and a learning-rate decay: watch *modes captured* climb to 25 first (the critic's gradient "
        "reaches every empty mode), then the high-quality fraction rise as the decaying rates let G "
        "settle onto them. The orange samples come from a running average of G's weights (*G weight "
        "average* in the sidebar): G itself keeps circling the equilibrium a little, and its average sits"
        " tighter on the modes. Set it to 0 to compare.",
        look='modes captured climbing towards 25, then the high-quality fraction rising',
        watch=Watch("modes captured", _modes_now, lambda v: v == 25, "= 25", every=100, max_steps=5000),
        start=2000,
    ),
)


def _samples(trainer: GANTrainer, n: int):
    return trainer.generate(n).cpu().numpy()


ARENA = Arena("GAN", samples=_samples, latent=lambda t: t.config.z_dim)


EXPERIMENT = Experiment(
    name="gan",
    help="train a GAN (7 losses, incl. WGAN-GP and CFG) on 2D data; mode coverage, MMD and JS measured",
    config=GANConfig,
    trainer=GANTrainer,
    figures=figures,
    samples=_samples,
    lessons=LESSONS,
    seeds=GANSeeds,
    text=PageText("GAN dynamics", INTRO, THEORY_TITLE, THEORY),
    arena=ARENA,
)


SEEDS_LESSONS = (
    Lesson("Same settings, different seeds", {**PLAIN, "runs": 8},
           "eight runs of the plain GAN (no remedy), identical but for the seed: some capture every mode, some do not",
           "Eight plain GANs (no remedy against mode collapse) with the same settings, data and schedule; only the "
           "seed differs (initial weights, "
           "samples, latent codes). Press Play and watch the small multiples part ways: within a few thousand "
           "steps some runs sit on all eight modes and others keep circling or leave a mode empty. The table "
           "counts how many capture every mode. One run of a GAN is one draw from this lottery; a claim about a "
           "loss or a setting needs the fraction, not the lucky seed.",
           look="the table's mode counts: same settings, different outcomes",
           watch=Watch("modes captured: best run − worst run", evaluated("modes_max", minus="modes_min"),
                       lambda v: v >= 2, "≥ 2", every=50, max_steps=2000, after=200),
           start=100),
    Lesson("WGAN-GP across seeds", {**PLAIN, "runs": 8, "loss": "wgan_gp", "gp": 0.1},
           "the gradient penalty's runs, eight at once: how much less of a lottery is it?",
           "The same eight seeds with the Wasserstein loss and a gradient penalty. Compare the spread of the "
           "mode counts in the table with the plain loss's: a remedy for mode collapse should narrow the "
           "spread, not only move the best run. The lesson opens after 2,800 steps (a fast-forward, trained once "
           "and kept): the runs' evaluation at step 3,000 comes a few seconds after Play.",
           look="the spread of the mode counts over the eight seeds: 1 or less, the plain loss's 3 or more",
           # the best run minus the worst is 1 or less first at step 3,000, 3,000, 3,000, 2,000, 2,000 on seeds 0-4
           # (seed 0: 2 at 2,000, where the lesson opened until the twentieth session, 52 s of play from its point),
           # where the plain loss's is 3-4 (the first lesson); after the early schedule the runs are evaluated
           # every 1,000 steps
           watch=Watch("modes captured: best run − worst run", evaluated("modes_max", minus="modes_min"),
                       lambda v: v <= 1, "≤ 1", every=500, max_steps=3000, after=2000),
           start=2800),
    Lesson("PacGAN across seeds", {**PLAIN, "runs": 8, "pack": 4},
           "packing four samples per judgement, eight seeds at once: does the remedy work on every seed?",
           "The same eight seeds, now with PacGAN's packing: D judges four samples side by side, all real or all "
           "generated, so a pack of near-copies gives a collapsed generator away. Compare the mode counts with the "
           "first lesson's: on ring8 at step 6,000 packing has seven or all eight of the eight runs on every mode, "
           "where the plain loss has two or three (this page's seeds 0-4; seed s runs seeds s to s + 7). Packing "
           "is not a guarantee either: a run can lose a mode for a while and find it again. The lesson opens after "
           "6,000 steps (a fast-forward, trained once and kept).",
           look="the mode counts: how many runs on all eight, against the plain loss's two or three?",
           # runs on every mode at step 6,000 on seeds 0-4: 8, 8, 7, 7, 7 (seeds 2-4: 8 at 5,000 and 7,000; one
           # run, seed 9, loses a mode in between); the plain loss's 3, 3, 3, 2, 2
           watch=Watch("runs on every mode", evaluated("every_mode"), lambda v: v >= 7, "7 or 8 of 8 (plain loss: 2-3)",
                       every=500, max_steps=8000),
           start=6000),
)

SEEDS_INTRO = (
    "A GAN's result depends on its seed: the same settings can capture every mode on one run and collapse on "
    "the next. This page trains several runs at once, identical but for the seed, as one batched model (each "
    "layer one batched matrix product over the runs, so they cost little more than one), and shows them side "
    "by side with their metrics. Run k is exactly the GAN page's run of its seed; a run that diverges stops "
    "and the others go on."
)

SEEDS_EXPERIMENT = Experiment(
    name="gan_seeds",
    help="train a GAN on several seeds at once (batched): each run's samples and metrics, and the fraction "
         "that captures every mode",
    config=GANSeedsConfig,
    trainer=make_seeds,
    figures=seeds_figures.figures,
    lessons=SEEDS_LESSONS,
    text=PageText("GAN lottery: many seeds at once", SEEDS_INTRO),
)
