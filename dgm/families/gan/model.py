"""The GAN's maths: every loss of the lectures as a formula of the discriminator's outputs, the
gradient penalty, weight clipping, the particle moves of the composite functional gradient (CFG,
Johnson & Zhang 2018), and the mode-collapse remedies: packing (PacGAN, Lin et al. 2018), the unrolled
generator update (Metz et al. 2017), the zero-centred gradient penalties R1 and R2 (Mescheder et al. 2018)
and the minibatch standard deviation feature (Karras et al. 2018).

The discriminator D is an MLP that outputs one real number per point, ``l = D(x)``. For the
classifier losses (minimax, non-saturating, CFG) ``l`` is a logit and sigmoid(l) is the probability
that x is real; for WGAN and hinge it is a critic value; for least squares a regression score.
Losses are written in terms of the logits (softplus), which is exact and never takes log(0):
log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dgm.core import nets
from dgm.core.metrics import blur

LOSSES = ("minimax", "nonsaturating", "wgan", "wgan_gp", "lsgan", "hinge", "cfg")
#: losses whose D output is a logit, so that sigmoid(D(x)) is a probability of "real"
PROB_LOSSES = ("minimax", "nonsaturating", "cfg")


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


def grad_d(D, x: Tensor) -> Tensor:
    """grad_x of D (a module or a function of points) summed over points, i.e. each point's own gradient (N, 2)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x)
    return g


def cfg_move(D, x: Tensor, eta: float, T: int, trajectory: bool = False):
    """CFG particle steps: x <- x + eta grad D(x), T times (D is the logit, about log p*(x)/p_gen(x)).
    Returns the moved points (N, 2), or every position (T+1, N, 2) with ``trajectory``."""
    path = [x.detach()]
    for _ in range(int(T)):
        path.append(path[-1] + eta * grad_d(D, path[-1]))
    return torch.stack(path) if trajectory else path[-1]



def sample_prior(prior: str, n: int, dim: int, generator: torch.Generator, device) -> Tensor:
    """n latent codes: N(0, I) or uniform on [-1, 1]^dim."""
    if prior == "uniform":
        return torch.rand(n, dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, dim, generator=generator, device=device)


# ---- mode-collapse remedies ------------------------------------------------------------------------

def pack(x: Tensor, m: int) -> Tensor:
    """PacGAN: consecutive groups of m points become one input of D, (B, d) -> (B // m, m * d): each row
    holds m points side by side (a remainder of B mod m points is left out)."""
    n = x.shape[0] // m
    return x[: n * m].reshape(n, m * x.shape[1])


def zero_centred_penalty(D: nn.Module, x: Tensor, create_graph: bool = True) -> Tensor:
    """E ||grad_x D(x)||^2 over the rows of x (N, d): R1 at data points, R2 at generated ones. The loss
    adds gamma / 2 times it (Mescheder et al. 2018): D is pushed to be flat on the data (R1), so it
    cannot keep sharpening its boundary around the modes, which damps the oscillation of the game."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=create_graph)
    return grad.pow(2).sum(1).mean()


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018): to each feature vector h (B, H) append one
    number, the standard deviation of the features over its group of ``group`` consecutive rows,
    averaged over the H features: (B, H) -> (B, H + 1). A group of collapsed samples has a small spread
    that real data does not, and D can see it. The last rows (B mod group) form a smaller group.
    In eval mode (figures, metrics) the statistic is ``reference``, when set: D's view of a point that
    comes in a group like one of G's."""

    def __init__(self, group: int):
        super().__init__()
        self.group = int(group)
        self.reference: Tensor | None = None

    @staticmethod
    def statistic(h: Tensor) -> Tensor:
        """(G, g, H) -> (G,): the population std over each group (dim 1), averaged over the features.
        (Written with sums: torch.var over a middle dimension is several times slower here.)"""
        d = h - h.mean(1, keepdim=True)
        return ((d * d).mean(1) + 1e-8).sqrt().mean(1)

    def forward(self, h: Tensor) -> Tensor:
        b = h.shape[0]
        if not self.training and self.reference is not None:
            s = self.reference.expand(b)
        else:
            g = min(self.group, b)
            n = b // g
            s = self.statistic(h[: n * g].view(n, g, -1)).repeat_interleave(g)
            if n * g < b:
                s = torch.cat([s, self.statistic(h[None, n * g:]).expand(b - n * g)])
        return torch.cat([h, s[:, None]], 1)


def discriminator(d_in: int, width: int, depth: int, spectral_norm: bool = False, mbstd: int = 0) -> nn.Sequential:
    """D: an MLP with LeakyReLU(0.2), (B, d_in) -> (B, 1); with ``mbstd`` > 0, a MinibatchStd layer of that
    group size before the last linear layer (which then takes width + 1 inputs)."""
    if not mbstd:
        return nets.mlp(d_in, 1, width, depth, act="leaky_relu", spectral_norm=spectral_norm)
    body = list(nets.mlp(d_in, width, width, depth - 1, act="leaky_relu", spectral_norm=spectral_norm))
    head = nets.mlp(width + 1, 1, width, 0, spectral_norm=spectral_norm)
    return nn.Sequential(*body, nn.LeakyReLU(0.2), MinibatchStd(mbstd), *head)


def optimizer_step(rule: str, params: dict[str, Tensor], grads: dict[str, Tensor], state: dict[str, dict],
                   lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   alpha: float = 0.99) -> tuple[dict[str, Tensor], dict[str, dict]]:
    """One step of torch's SGD, Adam or RMSprop (no weight decay, momentum or amsgrad) written with
    differentiable operations: returns the new parameters and optimiser state, each a function of the
    old ones and of the gradients (their graphs are kept). ``state[name]`` holds Adam's ``exp_avg``,
    ``exp_avg_sq`` and ``step``, RMSprop's ``square_avg``; missing entries start at zero."""
    new_p, new_s = {}, {}
    for k, p in params.items():
        g, s = grads[k], state.get(k, {})
        if rule == "sgd":
            new_p[k], new_s[k] = p - lr * g, {}
        elif rule == "adam":
            b1, b2 = betas
            t = float(s.get("step", 0)) + 1
            m = b1 * s.get("exp_avg", torch.zeros_like(p)) + (1 - b1) * g
            v = b2 * s.get("exp_avg_sq", torch.zeros_like(p)) + (1 - b2) * g * g
            step = lr / (1 - b1**t)
            denom = (v / (1 - b2**t)).sqrt() + eps
            new_p[k], new_s[k] = p - step * m / denom, {"exp_avg": m, "exp_avg_sq": v, "step": t}
        elif rule == "rmsprop":
            v = alpha * s.get("square_avg", torch.zeros_like(p)) + (1 - alpha) * g * g
            new_p[k], new_s[k] = p - lr * g / (v.sqrt() + eps), {"square_avg": v}
        else:
            raise ValueError(f"unknown optimiser {rule!r}")
    return new_p, new_s


def unrolled_params(D: nn.Module, loss: str, real: Tensor, fake: Tensor, k: int, rule: str,
                    state: dict[str, dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                    prepare=lambda x: x) -> dict[str, Tensor]:
    """Unrolled GAN (Metz et al. 2017): D's parameters after k more steps of its own optimiser on
    (real, fake), as differentiable functions of ``fake`` (and so of G). G's loss at these parameters
    looks ahead at how D will answer G's move; its gradient has an extra term through the k steps.
    ``prepare`` maps points to D's inputs (packing); D's own parameters are not changed."""
    params = dict(D.named_parameters())
    x_real, x_fake = prepare(real), prepare(fake)
    n = x_real.shape[0]
    for _ in range(int(k)):
        out = functional_call(D, params, (torch.cat([x_real, x_fake]),))[:, 0]
        lk = d_loss(loss, out[:n], out[n:])
        grads = torch.autograd.grad(lk, list(params.values()), create_graph=True)
        params, state = optimizer_step(rule, params, dict(zip(params, grads)), state, lr, betas)
    return params


def optimizer_state(opt: torch.optim.Optimizer, module: nn.Module) -> dict[str, dict]:
    """An optimiser's per-parameter state, by the module's parameter names (detached copies of tensors)."""
    out = {}
    for name, p in module.named_parameters():
        s = opt.state.get(p, {})
        out[name] = {k: (float(v) if k == "step" else v.detach()) for k, v in s.items() if torch.is_tensor(v) or
                     isinstance(v, (int, float))}
    return out


def judge_alone(D: nn.Module, x: Tensor, partners: Tensor | None) -> Tensor:
    """D's output at each point of x (N, 2) judged on its own: unpacked, D(x); packed (``partners``
    (S, m - 1, 2): S sets of m - 1 companions), the point first in a pack with each set, averaged over sets."""
    if partners is None:
        return D(x)[:, 0]
    s, k = partners.shape[:2]
    packs = torch.cat([x[None].expand(s, -1, -1), partners[:, None].expand(-1, x.shape[0], -1, -1).reshape(
        s, x.shape[0], 2 * k)], 2)  # (S, N, 2m)
    return D(packs.reshape(-1, 2 * (k + 1)))[:, 0].view(s, -1).mean(0)


def group_reference(D: nn.Sequential, fake: Tensor) -> Tensor:
    """The minibatch-std layer's statistic averaged over groups of D's inputs ``fake`` (G's samples): what the
    layer uses for a point judged alone."""
    layer = next(m for m in D if isinstance(m, MinibatchStd))
    g = min(layer.group, fake.shape[0])
    n = fake.shape[0] // g
    feats = D[: list(D).index(layer)](fake[: n * g]).view(n, g, -1)
    return MinibatchStd.statistic(feats).mean()


def make_optimizer(name: str, params, lr: float, betas: tuple[float, float]):
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    raise ValueError(f"unknown optimiser {name!r}")


# ---- the JS estimate's smoothing -------------------------------------------------------------------

def kde_bandwidth(data, real: Tensor, resolution: int) -> float:
    """The kernel's bandwidth, fixed for the run: the modes' std for mixtures with one, else Scott's
    rule on the data points ``real`` (N, 2); never below one cell of a ``resolution``-wide grid."""
    cell = (data.box[1] - data.box[0]) / resolution
    h = float(data.std) if data.std is not None else float(real.std(0).mean()) * real.shape[0] ** (-1 / 6)
    return max(h, cell)


@torch.no_grad()
def smoothed_log_p(data, grid, h: float, resolution: int) -> Tensor:
    """log of p smoothed exactly as the kernel density estimate smooths q, normalised on the grid.
    ``binned_kde`` spreads each sample over its 2 x 2 nearest cells (a tent of one cell per axis,
    variance cell^2 / 6) and blurs by a Gaussian of std h: so p is convolved with a Gaussian of
    variance h^2 + cell^2 / 6, in closed form where the data set knows it (mixtures, the
    checkerboard), else by the same blur of p's grid values (the energies, smooth on this grid)."""
    cell = (data.box[1] - data.box[0]) / resolution
    try:
        return grid.normalize(data.smoothed_log_prob(grid.points, (h**2 + cell**2 / 6) ** 0.5))
    except NotImplementedError:
        p = grid.normalize(data.unnormalized_log_prob(grid.points)).exp()
        return grid.normalize(blur(p, grid, h).clamp_min(1e-300).log())


def build_optimizers(t) -> None:
    """G's and D's optimisers (``t.opt_g``, ``t.opt_d``) over ``t.G`` and ``t.D``, and their learning-rate
    decay per 1,000 steps (``t.sched_g``, ``t.sched_d``) when the config asks for one."""
    c = t.config
    betas = (c.beta1, c.beta2)
    t.opt_g = make_optimizer(c.optimizer, t.G.parameters(), c.lr_g, betas)
    t.opt_d = make_optimizer(c.optimizer, t.D.parameters(), c.lr_d, betas)
    if c.decay < 1.0:
        gamma = c.decay ** (1 / 1000)
        t.sched_g = torch.optim.lr_scheduler.ExponentialLR(t.opt_g, gamma)
        t.sched_d = torch.optim.lr_scheduler.ExponentialLR(t.opt_d, gamma)
