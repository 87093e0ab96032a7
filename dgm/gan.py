"""GANs on 2D data: every loss of the lectures, one stepped trainer, and the composite functional
gradient (CFG) of Johnson & Zhang (2018).

    from dgm.gan import GANConfig, GANTrainer
    t = GANTrainer(GANConfig(data="ring8", loss="wgan_gp"), seed=0)
    t.step(2000); t.final()   # {"d_loss", "g_loss", "modes", "high_quality", "mode_kl", "mmd", "js"}

The discriminator D is an MLP that outputs one real number per point, ``l = D(x)``. For the
classifier losses (minimax, non-saturating, CFG) ``l`` is a logit and sigmoid(l) is the probability
that x is real; for WGAN and hinge it is a critic value; for least squares a regression score.
Losses are written in terms of the logits (softplus), which is exact and never takes log(0):
log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l).

Speed (see bench/bench_gan.py): real samples and latent codes are drawn for many steps at once
(one call to the sampler per 32 batches, from ``self.gen``); the generator's forward pass is shared
by the last D step and the G step; the G step back-propagates to G's parameters only (D's weight
gradients are not computed); Adam runs fused; nothing syncs with the host inside a step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dgm.data
from dgm import nets
from dgm.config import knob
from dgm.experiments import Experiment
from dgm.metrics import EVAL_SAMPLES, Grid, grid_js, mode_stats
from dgm.train import Trainer

LOSSES = ("minimax", "nonsaturating", "wgan", "wgan_gp", "lsgan", "hinge", "cfg")
#: losses whose D output is a logit, so that sigmoid(D(x)) is a probability of "real"
PROB_LOSSES = ("minimax", "nonsaturating", "cfg")
LOSS_NAMES = {
    "minimax": "minimax (saturating, GAN0)",
    "nonsaturating": "non-saturating (log D trick, GAN1)",
    "wgan": "WGAN (weight clipping)",
    "wgan_gp": "WGAN-GP (gradient penalty)",
    "lsgan": "least squares (LSGAN)",
    "hinge": "hinge",
    "cfg": "CFG (composite functional gradient)",
}
JS_RESOLUTION = 200  # grid for JS and D*: 200 x 200 cells over the data's box
POOL = 32  # batches of real samples / latent codes drawn per call to the sampler


def _is(*names):
    return lambda c: c.loss in names


@dataclass
class GANConfig:
    data: str = knob("ring8", "the 2D data set (p)", choices=(*dgm.data.names(), "custom"), group="Data")
    loss: str = knob("nonsaturating", "the game the two players play", choices=LOSSES, group="Loss",
                     label="loss")
    clip: float = knob(0.01, "WGAN: clip every D parameter to [-c, c] after each D step", lo=0.001, hi=1.0,
                       log=True, group="Loss", label="clip c", show=_is("wgan"))
    gp: float = knob(0.1, "WGAN-GP: weight of the gradient penalty (||grad D|| - 1)^2", lo=0.01, hi=100.0,
                     log=True, group="Loss", label="gradient penalty λ", show=_is("wgan_gp"))
    eta: float = knob(0.1, "CFG: particle step size, x <- x + eta grad D(x)", lo=0.01, hi=5.0, log=True,
                      group="Loss", label="CFG step η", show=_is("cfg"))
    T: int = knob(5, "CFG: particle steps per generator update", lo=1, hi=50, group="Loss",
                  label="CFG particle steps T", show=_is("cfg"))
    sn: bool = knob(False, "spectral normalisation of every layer of D (bounds its Lipschitz constant)",
                    group="Loss", label="spectral norm on D")
    d_steps: int = knob(2, "discriminator steps per generator step", lo=1, hi=10, group="Training",
                        label="D steps per G step (k)")
    lr_d: float = knob(1e-3, "discriminator learning rate", lo=1e-5, hi=1e-1, log=True, group="Training",
                       label="D learning rate")
    lr_g: float = knob(1e-3, "generator learning rate", lo=1e-5, hi=1e-1, log=True, group="Training",
                       label="G learning rate")
    optimizer: str = knob("adam", "optimiser of both players", choices=("adam", "sgd", "rmsprop"),
                          group="Training")
    beta1: float = knob(0.5, "Adam's beta1 (momentum)", lo=0.0, hi=0.99, step=0.01, group="Training",
                        label="Adam β1", show=lambda c: c.optimizer == "adam")
    beta2: float = knob(0.9, "Adam's beta2", lo=0.5, hi=0.999, step=0.001, group="Training", label="Adam β2",
                        show=lambda c: c.optimizer == "adam")
    batch: int = knob(256, "real and generated samples per step", lo=16, hi=2048, step=16, group="Training")
    decay: float = knob(0.85, "learning rates are multiplied by this every 1,000 steps (1: no decay); a decay "
                        "lets G settle precisely on narrow modes", lo=0.5,
                        hi=1.0, step=0.01, group="Training", label="LR decay per 1k steps")
    ema: float = knob(0.0, "the samples shown and measured come from an exponential moving average of G's weights "
                      "with this decay (0: G itself; 0.999 averages over about the last 1,000 steps). Averaging "
                      "smooths out G's oscillation around the equilibrium, so the samples sit tighter on the modes",
                      choices=(0.0, 0.99, 0.999, 0.9999), group="Training", label="G weight average (EMA)")
    g_width: int = knob(64, "hidden units per layer of G", lo=8, hi=512, step=8, group="Networks",
                        label="G width")
    g_depth: int = knob(4, "hidden layers of G", lo=1, hi=6, group="Networks", label="G depth")
    d_width: int = knob(64, "hidden units per layer of D", lo=8, hi=512, step=8, group="Networks",
                        label="D width")
    d_depth: int = knob(3, "hidden layers of D", lo=1, hi=6, group="Networks", label="D depth")
    z_dim: int = knob(2, "latent dimension", lo=1, hi=16, group="Networks", label="latent dim")
    prior: str = knob("gaussian", "latent prior: N(0, I) or uniform on [-1, 1]^d", choices=("gaussian", "uniform"),
                      group="Networks")


# ---- the losses, as formulas of the D outputs ---------------------------------------------------

def d_loss(loss: str, real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's loss (to minimise) from its outputs on real (B,) and generated (B,) points.

    minimax / nonsaturating / cfg: -E log D(x) - E log(1 - D(G(z))), D = sigmoid(l) (cross entropy)
    wgan / wgan_gp:               E l(G(z)) - E l(x)                 (minus the critic's gap)
    lsgan:                        1/2 E (l(x) - 1)^2 + 1/2 E l(G(z))^2
    hinge:                        E max(0, 1 - l(x)) + E max(0, 1 + l(G(z)))"""
    if loss in PROB_LOSSES:
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss in ("wgan", "wgan_gp"):
        return fake.mean() - real.mean()
    if loss == "lsgan":
        return 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean()
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"unknown loss {loss!r}")


def g_loss_per_sample(loss: str, fake: Tensor) -> Tensor:
    """The generator's loss for each generated point (B,), from D's outputs on them.

    minimax:       log(1 - D(G(z)))      (saturating: flat where D(G(z)) is near 0)
    nonsaturating: -log D(G(z))          (the log D trick)
    wgan, hinge:   -l(G(z))
    lsgan:         1/2 (l(G(z)) - 1)^2
    cfg:           -l(G(z)): the direction the particles move (the generator itself is fitted by regression)"""
    if loss == "minimax":
        return -F.softplus(fake)
    if loss == "nonsaturating":
        return F.softplus(-fake)
    if loss in ("wgan", "wgan_gp", "hinge", "cfg"):
        return -fake
    if loss == "lsgan":
        return 0.5 * (fake - 1).pow(2)
    raise ValueError(f"unknown loss {loss!r}")


def g_loss(loss: str, fake: Tensor) -> Tensor:
    return g_loss_per_sample(loss, fake).mean()


def gradient_penalty(D: nn.Module, real: Tensor, fake: Tensor, eps: Tensor, create_graph: bool = True) -> Tensor:
    """WGAN-GP: E (||grad_x D(x_hat)|| - 1)^2 at x_hat = eps x + (1 - eps) G(z), eps (B, 1) in [0, 1]."""
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)  # (B, 2)
    out = D(x_hat).sum()
    (grad,) = torch.autograd.grad(out, x_hat, create_graph=create_graph)
    return (grad.norm(dim=1) - 1).pow(2).mean()


@torch.no_grad()
def clip_(module: nn.Module, c: float) -> None:
    """WGAN: clamp every parameter of ``module`` to [-c, c], in place."""
    for p in module.parameters():
        p.clamp_(-c, c)


def grad_d(D: nn.Module, x: Tensor) -> Tensor:
    """grad_x of D summed over points, i.e. each point's own gradient (N, 2)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x)
    return g


def cfg_move(D: nn.Module, x: Tensor, eta: float, T: int, trajectory: bool = False):
    """CFG particle steps: x <- x + eta grad D(x), T times (D is the logit, about log p*(x)/p_gen(x)).
    Returns the moved points (N, 2), or every position (T+1, N, 2) with ``trajectory``."""
    path = [x.detach()]
    for _ in range(int(T)):
        path.append(path[-1] + eta * grad_d(D, path[-1]))
    return torch.stack(path) if trajectory else path[-1]


# ---- the trainer ---------------------------------------------------------------------------------

def sample_prior(prior: str, n: int, dim: int, generator: torch.Generator, device) -> Tensor:
    if prior == "uniform":
        return torch.rand(n, dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, dim, generator=generator, device=device)


def make_optimizer(name: str, params, lr: float, betas: tuple[float, float], device: torch.device):
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    raise ValueError(f"unknown optimiser {name!r}")


def binned_kde(samples: Tensor, grid: Grid, bandwidth: float) -> Tensor:
    """A Gaussian KDE of ``samples`` (N, 2) on ``grid``, by linear binning and a separable Gaussian blur
    (exact up to the binning, which moves mass by at most one cell). Returns the density (R*R,),
    normalised on the grid (mass outside the box is dropped)."""
    r = grid.resolution
    xmin, xmax, ymin, ymax = grid.box
    s = samples[torch.isfinite(samples).all(1)].double()
    # continuous cell coordinates of each sample (cell centres at integers)
    u = (s[:, 0] - xmin) / (xmax - xmin) * r - 0.5
    v = (s[:, 1] - ymin) / (ymax - ymin) * r - 0.5
    i0, j0 = u.floor(), v.floor()
    fu, fv = u - i0, v - j0
    hist = torch.zeros(r * r, dtype=torch.float64, device=s.device)
    for di, wu in ((0, 1 - fu), (1, fu)):
        for dj, wv in ((0, 1 - fv), (1, fv)):
            ii, jj = (i0 + di).long(), (j0 + dj).long()
            ok = (ii >= 0) & (ii < r) & (jj >= 0) & (jj < r)
            hist.index_add_(0, (jj * r + ii)[ok], (wu * wv)[ok])
    img = hist.view(1, 1, r, r)
    for axis, cell in ((3, (xmax - xmin) / r), (2, (ymax - ymin) / r)):
        h = bandwidth / cell
        rad = max(1, math.ceil(4 * h))
        t = torch.arange(-rad, rad + 1, dtype=torch.float64, device=s.device)
        k = torch.exp(-0.5 * (t / h) ** 2)
        k = (k / k.sum()).view(1, 1, *((1, -1) if axis == 3 else (-1, 1)))
        img = F.conv2d(img, k, padding=(0, rad) if axis == 3 else (rad, 0))
    dens = img.reshape(-1)
    total = dens.sum()
    return dens / (total * grid.cell_area) if total > 0 else torch.full_like(dens, 1.0 / (r * r * grid.cell_area))


class MMD:
    """``dgm.metrics.mmd2`` (biased, Gaussian kernels of bandwidths 0.1, 0.3, 1, 3) against a fixed
    reference set y, faster: the y-y term is computed once, and the kernels in float32 with float64 sums
    (it agrees with mmd2 to about 1e-6; tests/test_gan.py checks it)."""

    BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)
    MODE = "donot_use_mm_for_euclid_dist"  # exact distances: small ones matter for the 0.1 bandwidth

    def __init__(self, y: Tensor):
        self.y = y.float()
        self.kyy: float | None = None  # computed on first use (building a trainer stays cheap)

    def _kmean(self, a: Tensor, b: Tensor, chunk: int = 256) -> float:
        """Mean of the summed kernels over all pairs, a chunk of rows at a time (cache-sized buffers)."""
        total = 0.0
        for part in a.split(chunk):
            d = torch.cdist(part, b, compute_mode=self.MODE).pow_(2)  # (c, M) squared distances
            buf = torch.empty_like(d)
            for s in self.BANDWIDTHS:
                torch.mul(d, -0.5 / (s * s), out=buf)
                total += float(buf.exp_().sum(dtype=torch.float64))
        return total / (a.shape[0] * b.shape[0])

    def mmd2(self, x: Tensor) -> float:
        x = x.float()
        if self.kyy is None:
            self.kyy = self._kmean(self.y, self.y)
        return self._kmean(x, x) + self.kyy - 2 * self._kmean(x, self.y)


class Timeline:
    """A bounded record of (iteration, snapshot) pairs for scrubbing back through a run.
    When full, every other entry is dropped (the newest is always kept), so it spans the whole run."""

    def __init__(self, max_len: int = 60):
        self.max_len = max_len
        self.items: list[tuple[int, dict]] = []

    def add(self, iteration: int, snap: dict) -> None:
        if self.items and self.items[-1][0] == iteration:
            self.items[-1] = (iteration, snap)
            return
        self.items.append((iteration, snap))
        if len(self.items) > self.max_len:
            last = self.items[-1]
            self.items = self.items[:-1][::2] + [last]

    def iterations(self) -> list[int]:
        return [i for i, _ in self.items]

    def get(self, iteration: int) -> dict | None:
        for i, s in self.items:
            if i == iteration:
                return s
        return None

    def __len__(self) -> int:
        return len(self.items)


class GANTrainer(Trainer):
    """Alternating GAN training on a 2D distribution (or CFG, with ``loss="cfg"``).

    ``mode`` (a runtime setting, not a knob): "both" trains k D steps then one G step; "d" trains only
    D; "g" trains only G. Changing it does not restart the run."""

    eval_every = 1000

    def build(self):
        c = self.config
        dev = self.device
        self.data = dgm.data.get(c.data)
        self.mode = "both"
        self.G = nets.mlp(c.z_dim, 2, c.g_width, c.g_depth, act="leaky_relu").to(dev)
        self.D = nets.mlp(2, 1, c.d_width, c.d_depth, act="leaky_relu", spectral_norm=c.sn).to(dev)
        # the weight average that samples are drawn from (None: G itself)
        self.G_avg = copy.deepcopy(self.G).requires_grad_(False) if c.ema > 0 else None
        betas = (c.beta1, c.beta2)
        self.opt_g = make_optimizer(c.optimizer, self.G.parameters(), c.lr_g, betas, dev)
        self.opt_d = make_optimizer(c.optimizer, self.D.parameters(), c.lr_d, betas, dev)
        if c.decay < 1.0:
            gamma = c.decay ** (1 / 1000)
            self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma)
            self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma)
        self._g_params = list(self.G.parameters())
        self._real_pool: Tensor | None = None
        self._z_pool: Tensor | None = None
        self._real_i = self._z_i = POOL
        # fixed evaluation material, drawn once from the evaluation stream
        ge = self.eval_generator()
        self.real_eval = self.data.sample(EVAL_SAMPLES, ge, device=dev)  # (N, 2)
        self.z_eval = sample_prior(c.prior, EVAL_SAMPLES, c.z_dim, ge, dev)  # (N, z)
        self._mmd = MMD(self.real_eval)
        self.js_grid = Grid.over(self.data.box, JS_RESOLUTION, device=dev)
        self.log_p_grid = None
        if self.data.has_unnormalized:
            with torch.no_grad():
                self.log_p_grid = self.js_grid.normalize(self.data.unnormalized_log_prob(self.js_grid.points))
        self.timeline = Timeline()

    # -- batches: drawn POOL steps at a time, from self.gen ---------------------------------------
    def _real(self) -> Tensor:
        if self._real_i >= POOL:
            b = self.config.batch
            self._real_pool = self.data.sample(POOL * b, self.gen).view(POOL, b, 2)
            self._real_i = 0
        x = self._real_pool[self._real_i]
        self._real_i += 1
        return x

    def _z(self) -> Tensor:
        if self._z_i >= POOL:
            c = self.config
            self._z_pool = sample_prior(c.prior, POOL * c.batch, c.z_dim, self.gen, self.device).view(
                POOL, c.batch, c.z_dim)
            self._z_i = 0
        z = self._z_pool[self._z_i]
        self._z_i += 1
        return z

    def _capture(self):
        s = super()._capture()
        s["pools"] = (self._real_pool, self._real_i, self._z_pool, self._z_i)
        return s

    def _restore(self, s, copy_=True):
        super()._restore(s, copy_)
        self._real_pool, self._real_i, self._z_pool, self._z_i = s["pools"]

    # -- one step --------------------------------------------------------------------------------
    def _d_step(self, x: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """One D update on real x (B, 2) and generated ``fake`` (B, 2, detached); returns
        (D loss, D's outputs on the generated points, detached)."""
        c = self.config
        out = self.D(torch.cat([x, fake]))[:, 0]  # (2B,)
        real_out, fake_out = out[: x.shape[0]], out[x.shape[0]:]
        loss = d_loss(c.loss, real_out, fake_out)
        total = loss
        if c.loss == "wgan_gp":
            eps = torch.rand(x.shape[0], 1, generator=self.gen, device=self.device)
            total = loss + c.gp * gradient_penalty(self.D, x, fake, eps)
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        if c.loss == "wgan":
            clip_(self.D, c.clip)
        return loss.detach(), fake_out.detach()

    def train_step(self) -> dict[str, Tensor]:
        c = self.config
        train_d, train_g = self.mode != "g", self.mode != "d"
        if c.loss == "cfg":
            return self._cfg_step(train_d, train_g)
        # D steps; the last one shares the generator's forward pass with the G step
        dl = fake_out = None
        for i in range(c.d_steps if train_d else 0):
            last = i == c.d_steps - 1
            z = self._z()
            if last and train_g:
                fake = self.G(z)  # (B, 2), keeps its graph for the G step
            else:
                with torch.no_grad():
                    fake = self.G(z)
            dl, fake_out = self._d_step(self._real(), fake.detach())
        if train_g:
            if not train_d:
                fake = self.G(self._z())
            gl = g_loss(c.loss, self.D(fake)[:, 0])
            self.opt_g.zero_grad(set_to_none=True)
            gl.backward(inputs=self._g_params)  # G's gradients only: D's weight gradients are not needed
            self.opt_g.step()
            gl = gl.detach()
            if dl is None:  # G only: report D's loss on this batch without training it
                with torch.no_grad():
                    x = self._real()
                    dl = d_loss(c.loss, self.D(x)[:, 0], self.D(fake.detach())[:, 0])
        else:
            gl = g_loss(c.loss, fake_out)  # D only: the generator's loss at the current D
        self._decay()
        return {"d_loss": dl, "g_loss": gl}

    def _cfg_step(self, train_d: bool, train_g: bool) -> dict[str, Tensor]:
        """xICFG, simplified: k logistic-regression steps of D (real vs G(z)); then move the generated
        points along grad D for T steps; then fit G to the moved points by one regression step."""
        c = self.config
        dl = None
        for _ in range(c.d_steps if train_d else 0):
            with torch.no_grad():
                fake = self.G(self._z())
            dl, _ = self._d_step(self._real(), fake)
        if train_g:
            z = self._z()
            fake = self.G(z)
            target = cfg_move(self.D, fake.detach(), c.eta, c.T)  # (B, 2)
            gl = 0.5 * (fake - target).pow(2).sum(1).mean()
            self.opt_g.zero_grad(set_to_none=True)
            gl.backward()
            self.opt_g.step()
            gl = gl.detach()
            if dl is None:
                with torch.no_grad():
                    dl = d_loss(c.loss, self.D(self._real())[:, 0], self.D(fake.detach())[:, 0])
        else:
            gl = torch.zeros((), device=self.device)
        self._decay()
        return {"d_loss": dl, "g_loss": gl}

    def _decay(self) -> None:
        """End of a step: learning-rate decay, and G's weight average."""
        if self.config.decay < 1.0:
            self.sched_d.step()
            self.sched_g.step()
        if self.G_avg is not None:
            # the decay ramps up from 0.1, so the average does not hold on to the initial weights
            beta = min(self.config.ema, (1 + self.iteration) / (10 + self.iteration))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.G_avg.parameters()), self._g_params, 1 - beta)

    @property
    def sampler(self) -> nn.Module:
        """The generator whose samples are shown and measured: G's weight average, or G."""
        return self.G if self.G_avg is None else self.G_avg

    # -- evaluation and figures --------------------------------------------------------------------
    def _frozen(self):
        """Evaluation mode for D (spectral norm must not advance its power iteration)."""
        trainer = self

        class _Ctx:
            def __enter__(self):
                self.modes = (trainer.G.training, trainer.D.training)
                trainer.G.eval()
                trainer.D.eval()

            def __exit__(self, *exc):
                trainer.G.train(self.modes[0])
                trainer.D.train(self.modes[1])

        return _Ctx()

    @torch.no_grad()
    def generate(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Samples of G: the fixed evaluation codes (default) or n fresh ones."""
        with self._frozen():
            if n is None:
                return self.sampler(self.z_eval)
            z = sample_prior(self.config.prior, n, self.config.z_dim, generator or self.eval_generator(2), self.device)
            return self.sampler(z)

    def kde_bandwidth(self, samples: Tensor) -> float:
        """The KDE bandwidth for q: the modes' std for mixtures with one, else Scott's rule;
        never below one grid cell."""
        cell = (self.data.box[1] - self.data.box[0]) / JS_RESOLUTION
        if self.data.std is not None:
            h = float(self.data.std)
        else:
            s = samples[torch.isfinite(samples).all(1)]
            h = float(s.std(0).mean()) * s.shape[0] ** (-1 / 6) if s.shape[0] > 1 else 1.0
        return max(h, cell)

    def q_grid(self, samples: Tensor) -> tuple[Tensor, float]:
        h = self.kde_bandwidth(samples)
        return binned_kde(samples, self.js_grid, h), h

    def evaluate(self) -> dict[str, float]:
        x = self.generate()  # (N, 2)
        out: dict[str, float] = {}
        if self.data.centers is not None and self.data.std is not None:
            out.update(mode_stats(x, self.data.centers, self.data.std))
        finite = x[torch.isfinite(x).all(1)]
        out["mmd"] = self._mmd.mmd2(finite) if finite.shape[0] > 1 else float("nan")
        if self.log_p_grid is not None:
            q, _ = self.q_grid(x)
            out["js"] = grid_js(self.js_grid, self.log_p_grid, q.log())
        return out

    def d_output(self, x: Tensor) -> Tensor:
        """What the heatmap shows: sigmoid(l) for the classifier losses, else D's raw output."""
        with torch.no_grad(), self._frozen():
            out = self.D(x)[:, 0]
        return torch.sigmoid(out) if self.config.loss in PROB_LOSSES else out

    def snapshot(self, n_points: int = 600, n_arrows: int = 150, resolution: int = 80) -> dict[str, Any]:
        c = self.config
        with torch.no_grad(), self._frozen():
            fake = self.sampler(self.z_eval[:n_points])  # (n, 2): fixed codes, so the cloud moves smoothly
        grid = Grid.over(self.data.box, resolution, device=self.device)
        snap: dict[str, Any] = {
            "iteration": self.iteration,
            "loss": c.loss,
            "real": self.real_eval[:n_points].cpu(),
            "fake": fake.cpu(),
            "d_grid": grid,
            "d_values": self.d_output(grid.points).cpu(),
            "d_kind": "probability" if c.loss in PROB_LOSSES else ("score" if c.loss == "lsgan" else "critic"),
        }
        # the generator's gradient field: -grad_x of its loss at generated points
        pts = fake[:n_arrows]
        with self._frozen(), torch.enable_grad():
            xg = pts.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(g_loss_per_sample(c.loss, self.D(xg)[:, 0]).sum(), xg)
            snap["arrows"] = (pts.cpu(), (-g).detach().cpu())
            if c.loss == "cfg":
                snap["particles"] = cfg_move(self.D, pts, c.eta, c.T, trajectory=True).cpu()  # (T+1, n, 2)
        snap["manifold"] = self.manifold().cpu()
        # the optimal discriminator for the current generator, D* = p / (p + q), on the JS grid
        # pooled 2 x 2 (cell masses add up, so narrow modes are not lost between cell centres)
        if self.log_p_grid is not None:
            with torch.no_grad():
                q, h = self.q_grid(self.generate())
                r = JS_RESOLUTION
                pool = lambda d: F.avg_pool2d(d.view(1, 1, r, r), 2)[0, 0]  # (r/2, r/2)
                p, qq = pool(self.log_p_grid.exp()), pool(q)
                tot = p + qq
                dstar = torch.where(tot > 1e-3 * tot.max(), p / tot.clamp_min(1e-300), torch.full_like(tot, float("nan")))
                g = self.js_grid
                xs, ys = g.xs.view(-1, 2).mean(1), g.ys.view(-1, 2).mean(1)
            snap["dstar"] = (xs.cpu(), ys.cpu(), dstar.float().cpu().numpy(), h)
        return snap

    @torch.no_grad()
    def manifold(self, lines: int = 15, points: int = 50) -> Tensor:
        """A latent grid pushed through G: (2 * lines, points, 2) polylines. For z_dim > 2, the slice
        through the first two coordinates with the others at 0; for z_dim = 1, the line itself."""
        c = self.config
        span = 2.5 if c.prior == "gaussian" else 1.0
        t = torch.linspace(-span, span, points, device=self.device)
        s = torch.linspace(-span, span, lines, device=self.device)
        if c.z_dim == 1:
            z = t[None, :, None]  # (1, P, 1)
        else:
            a = torch.stack([t[None, :].expand(lines, -1), s[:, None].expand(-1, points)], -1)  # (L, P, 2)
            z2 = torch.cat([a, a.flip(-1)])  # (2L, P, 2): rows then columns
            z = torch.zeros(*z2.shape[:2], c.z_dim, device=self.device)
            z[..., :2] = z2
        with self._frozen():
            return self.sampler(z.reshape(-1, c.z_dim)).view(z.shape[0], points, 2)


# ---- the experiment ------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    "vanilla GAN collapses": {"loss": "nonsaturating", "d_steps": 1, "lr_d": 1e-4, "lr_g": 1e-3, "decay": 1.0},
    "saturating loss stalls early": {"loss": "minimax", "d_steps": 5, "lr_d": 1e-3, "lr_g": 1e-4, "decay": 1.0},
    "WGAN-GP covers every mode": {"loss": "wgan_gp", "gp": 0.1, "d_steps": 5, "lr_d": 1e-3, "lr_g": 1e-3, "beta1": 0.0,
                                      "beta2": 0.9},
    "CFG particles": {"loss": "cfg", "eta": 0.1, "T": 5},
    "grid25": {"data": "grid25", "loss": "wgan_gp", "gp": 0.1, "d_steps": 2, "lr_d": 3e-3, "lr_g": 3e-3, "beta1": 0.0, "beta2": 0.9,
                   "g_width": 128, "d_width": 128, "decay": 0.8, "ema": 0.999},
}
LESSONS = {
    "vanilla GAN collapses": "a plain GAN whose G learns faster than D: all samples move as one blob, mode to mode",
    "saturating loss stalls early": "log(1 - D(G(z))) is flat where D easily rejects fakes, so G barely moves",
    "WGAN-GP covers every mode": "a critic kept 1-Lipschitz by a gradient penalty pulls G onto all eight modes",
    "CFG particles": "Johnson & Zhang's functional gradient: generated points flow up grad D, then G follows",
    "grid25": "25 narrow modes on a grid: a wider WGAN-GP finds all of them, then sharpens as its rates decay; "
              "the samples come from an average of G's recent weights, which sits tighter on the modes",
}


def figures(trainer: GANTrainer) -> dict:
    from dgm.viz import gan as vg

    return vg.main_figures(trainer.snapshot(), trainer.history.merged(), trainer.data)


def _samples(trainer: GANTrainer, n: int) -> np.ndarray:
    return trainer.generate(n).cpu().numpy()


EXPERIMENT = Experiment(
    name="gan",
    help="train a GAN (7 losses, incl. WGAN-GP and CFG) on 2D data; mode coverage, MMD and JS measured",
    config=GANConfig,
    trainer=GANTrainer,
    figures=figures,
    samples=_samples,
    presets=PRESETS,
    lessons=LESSONS,
)
