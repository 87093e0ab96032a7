"""Normalizing-flow layers (the Flow model that chains them is in ``model.py``; the layers that mix and
normalise between them, ActNorm and the invertible linear maps, in ``mixing.py``).

Conventions (after karpathy/pytorch-normalizing-flows and normflows):

- every layer is a small ``nn.Module`` with
  ``forward(x) -> (z, log_det)``: the *normalizing* direction, data side -> base side, with
  ``log_det = log|det dz/dx|`` (N,); and
  ``inverse(z) -> (x, log_det)``: the *generative* direction, with ``log_det = log|det dx/dz|``.
- a ``Flow`` holds a standard-normal base and a list of layers in *generative* order: ``layers[0]``
  acts first on base noise. ``log_prob(x)`` runs the layers backwards with ``forward``;
  ``sample`` runs them in order with ``inverse``.

Which direction is cheap depends on the layer: coupling layers (NICE, RealNVP, splines) are cheap
both ways; MAF is one pass data -> base and D passes back; IAF is the reverse; planar and radial
flows are defined generatively (z -> x), and their x -> z direction is solved numerically
(planar: a 1D root find along w) or by a quadratic (radial).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.nets import mlp

LOG_2PI = math.log(2 * math.pi)
ACT = "tanh"  # activation of the conditioner networks


def _soft_clamp(a: Tensor, bound: float = 3.0) -> Tensor:
    """bound * tanh(a / bound): the identity near 0, never beyond +-bound (keeps exp(a) sane)."""
    return bound * torch.tanh(a / bound)


def _zero_last(net: nn.Sequential) -> nn.Sequential:
    """Zero the last linear layer, so that a conditioner starts by outputting zeros (an identity layer)."""
    last = [m for m in net if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net



class Planar(nn.Module):
    """Planar flow (Rezende & Mohamed 2015), generative direction x = z + u_hat tanh(w.z + b).

    u_hat = u + (m(w.u) - w.u) w / |w|^2 with m(a) = -1 + softplus(a) keeps w.u_hat > -1, which makes
    the map invertible. log|det dx/dz| = log|1 + u_hat.w tanh'(w.z + b)| (matrix determinant lemma).
    The inverse has no closed form: along w the map is the scalar equation
    w.x = a + (w.u_hat) tanh(a + b) in a = w.z, monotone in a, solved by bisection and Newton steps
    (the last one taken with gradients, which gives the exact implicit-function gradient)."""

    def __init__(self, dim: int = 2, iters: int = 30):
        super().__init__()
        w = torch.randn(dim) / math.sqrt(dim)
        # start near the identity: u = log(e - 1) w / |w|^2 makes m(w.u) = 0 and so u_hat = 0 (plus a little noise)
        u = math.log(math.e - 1) * w / (w @ w) + 0.01 * torch.randn(dim)
        self.w, self.u = nn.Parameter(w), nn.Parameter(u)
        self.b = nn.Parameter(torch.zeros(1))
        self.iters = iters

    def u_hat(self) -> Tensor:
        wu = self.w @ self.u
        return self.u + (-1 + F.softplus(wu) - wu) * self.w / (self.w @ self.w)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:  # z -> x, cheap
        u = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)  # (N,)
        x = z + h[:, None] * u
        log_det = torch.log((1 + (u @ self.w) * (1 - h * h)).abs())
        return x, log_det

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x -> z, solved numerically
        u = self.u_hat()
        c = u @ self.w  # > -1, so a -> a + c tanh(a + b) is increasing
        wx = x @ self.w  # (N,)
        with torch.no_grad():
            cd, bd, target = c.detach().double(), self.b.detach().double(), wx.detach().double()
            lo, hi = target - cd.abs(), target + cd.abs()  # |tanh| <= 1 brackets the root
            for _ in range(self.iters):
                mid = 0.5 * (lo + hi)
                above = mid + cd * torch.tanh(mid + bd) > target
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            a0 = 0.5 * (lo + hi)
            for _ in range(2):  # Newton polish (quadratic convergence from a bracketed start)
                t = torch.tanh(a0 + bd)
                a0 = (a0 - (a0 + cd * t - target) / (1 + cd * (1 - t * t))).clamp(lo, hi)
            a0 = a0.to(x.dtype)
        # one more Newton step with gradients: the same value, and the implicit-function gradient
        t = torch.tanh(a0 + self.b)
        a = a0 - (a0 + c * t - wx) / (1 + c * (1 - t * t))
        h = torch.tanh(a + self.b)
        z = x - h[:, None] * u
        log_det = -torch.log((1 + c * (1 - h * h)).abs())
        return z, log_det


class Radial(nn.Module):
    """Radial flow (Rezende & Mohamed 2015), generative direction x = z + beta h(r) (z - z0),
    r = |z - z0|, h = 1 / (alpha + r), alpha > 0, beta >= -alpha (invertible).
    log|det dx/dz| = (D-1) log(1 + beta h) + log(1 + beta h - beta r h^2).
    The inverse keeps the direction from z0 and solves r^2 + (alpha + beta - rho) r - rho alpha = 0
    for the radius (rho = |x - z0|): a quadratic, so it is exact, but it is still a separate
    computation the model is not built around."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.z0 = nn.Parameter(torch.randn(dim) * 0.5)
        self.alpha_raw = nn.Parameter(torch.zeros(1))
        self.beta_raw = nn.Parameter(torch.randn(1) * 0.01)  # beta = -alpha + softplus(beta_raw) ~ 0: near identity
        self.dim = dim

    def _ab(self) -> tuple[Tensor, Tensor]:
        alpha = F.softplus(self.alpha_raw)
        return alpha, -alpha + F.softplus(self.beta_raw)

    def _log_det(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1 / (alpha + r)
        return (self.dim - 1) * torch.log1p(beta * h) + torch.log1p(beta * h - beta * r * h * h)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:  # z -> x
        alpha, beta = self._ab()
        d = z - self.z0
        r = d.norm(dim=1)
        x = z + (beta / (alpha + r))[:, None] * d
        return x, self._log_det(r, alpha, beta)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x -> z
        alpha, beta = self._ab()
        y = x - self.z0
        rho = y.norm(dim=1)
        bq = alpha + beta - rho
        disc = torch.sqrt(bq * bq + 4 * rho * alpha)
        # the positive root, in the form that avoids cancellation for either sign of bq
        r = torch.where(bq > 0, 2 * rho * alpha / (bq + disc).clamp_min(1e-30), (disc - bq) / 2)
        z = self.z0 + y / (1 + beta / (alpha + r))[:, None]
        return z, -self._log_det(r, alpha, beta)


class AffineCoupling(nn.Module):
    """RealNVP affine coupling (Dinh et al. 2017). The dimensions where ``mask`` is 1 pass through and
    condition the others: z_b = x_b * exp(s(x_a)) + t(x_a). The Jacobian is triangular with diagonal
    (1, exp(s)), so log|det| = sum(s). With ``additive`` s = 0: NICE's volume-preserving coupling."""

    def __init__(self, dim: int = 2, mask: Tensor | None = None, hidden: int = 64, additive: bool = False):
        super().__init__()
        mask = mask if mask is not None else (torch.arange(dim) < dim // 2).float()
        self.register_buffer("mask", mask.float())
        self.additive = additive
        self.net = _zero_last(mlp(dim, dim if additive else 2 * dim, width=hidden, depth=2, act=ACT))

    def _st(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(xa)
        free = 1 - self.mask
        if self.additive:
            return torch.zeros_like(out), out * free
        s, t = out.chunk(2, dim=1)
        return _soft_clamp(s) * free, t * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._st(x * self.mask)
        z = x * self.mask + (1 - self.mask) * (x * torch.exp(s) + t)
        return z, s.sum(1)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._st(z * self.mask)
        x = z * self.mask + (1 - self.mask) * ((z - t) * torch.exp(-s))
        return x, -s.sum(1)


def rq_spline(x: Tensor, uw: Tensor, uh: Tensor, ud: Tensor, bound: float, inverse: bool = False,
              min_w: float = 1e-3, min_h: float = 1e-3, min_d: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Monotone rational-quadratic spline (Durkan et al. 2019) on [-bound, bound], identity outside.

    x (...,), bin parameters uw, uh (..., K) and interior knot slopes ud (..., K-1), unconstrained.
    Returns (y, log|dy/dx|) for the map itself, or for its inverse with ``inverse``."""
    k = uw.shape[-1]
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)  # evaluate everywhere, keep where inside (no NaN gradients)

    def knots(u, lo):
        w = lo + (1 - lo * k) * torch.softmax(u, -1)
        c = F.pad(torch.cumsum(w, -1), (1, 0))
        c = 2 * bound * c - bound
        c = torch.cat([torch.full_like(c[..., :1], -bound), c[..., 1:-1], torch.full_like(c[..., :1], bound)], -1)
        return c, c[..., 1:] - c[..., :-1]

    cw, w = knots(uw, min_w)
    ch, h = knots(uh, min_h)
    one = math.log(math.expm1(1 - min_d))  # softplus(one) + min_d = 1: slope 1 at the ends (linear tails)
    d = F.pad(min_d + F.softplus(ud + one), (1, 1), value=1.0)  # (..., K+1); zeros -> all slopes 1

    loc = ch if inverse else cw
    eps = torch.zeros_like(loc)
    eps[..., -1] = 1e-6
    idx = ((xc[..., None] >= loc + eps).sum(-1) - 1).clamp(0, k - 1)[..., None]

    g = lambda t: t.gather(-1, idx)[..., 0]
    xk, wk, yk, hk = g(cw[..., :-1]), g(w), g(ch[..., :-1]), g(h)
    dk, dk1 = g(d[..., :-1]), g(d[..., 1:])
    delta = hk / wk
    if inverse:
        dy = xc - yk
        a = dy * (dk + dk1 - 2 * delta) + hk * (delta - dk)
        b = hk * dk - dy * (dk + dk1 - 2 * delta)
        c = -delta * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        theta = (2 * c) / (-b - torch.sqrt(disc))
        y = theta * wk + xk
    else:
        theta = (xc - xk) / wk
        t1 = theta * (1 - theta)
        y = yk + hk * (delta * theta**2 + dk * t1) / (delta + (dk + dk1 - 2 * delta) * t1)
    t1 = theta * (1 - theta)
    denom = delta + (dk + dk1 - 2 * delta) * t1
    num = delta**2 * (dk1 * theta**2 + 2 * delta * t1 + dk * (1 - theta) ** 2)
    lad = torch.log(num) - 2 * torch.log(denom)
    if inverse:
        lad = -lad
    return torch.where(inside, y, x), torch.where(inside, lad, torch.zeros_like(lad))


class SplineCoupling(nn.Module):
    """Neural spline coupling (Durkan et al. 2019): like RealNVP, but each free dimension goes through
    a monotone rational-quadratic spline with ``bins`` bins whose knots are set by the conditioner.
    Far more flexible per layer than an affine map; still triangular, still cheap both ways."""

    def __init__(self, dim: int = 2, mask: Tensor | None = None, hidden: int = 64, bins: int = 8,
                 bound: float = 5.0):
        super().__init__()
        mask = mask if mask is not None else (torch.arange(dim) < dim // 2).float()
        self.register_buffer("mask", mask.float())
        self.bins, self.bound, self.dim, self.hidden = bins, bound, dim, hidden
        self.net = _zero_last(mlp(dim, dim * (3 * bins - 1), width=hidden, depth=2, act=ACT))

    def _params(self, xa: Tensor):
        p = self.net(xa).view(xa.shape[0], self.dim, 3 * self.bins - 1)
        k = self.bins
        return p[..., :k], p[..., k:2 * k], p[..., 2 * k:]

    def _transform(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        uw, uh, ud = self._params(v * self.mask)
        y, lad = rq_spline(v, uw, uh, ud, self.bound, inverse=inverse)
        free = 1 - self.mask
        return v * self.mask + free * y, (lad * free).sum(1)

    def forward(self, x):
        return self._transform(x, inverse=False)

    def inverse(self, z):
        return self._transform(z, inverse=True)


class MaskedLinear(nn.Linear):
    def __init__(self, d_in: int, d_out: int, mask: Tensor):
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask.float())  # (d_out, d_in)

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al. 2015) for D inputs in their natural order: output i (and its
    twin D + i) depends only on inputs < i. In 2D the first output is a learned constant and the second
    a small MLP of x_1. Degrees of hidden units cycle through 1..D-1 (deterministic masks)."""

    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, out_mult: int = 2):
        super().__init__()
        deg_in = torch.arange(1, dim + 1)
        degs = [deg_in] + [torch.arange(hidden) % max(dim - 1, 1) + 1 for _ in range(depth)]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(degs):
            layers += [MaskedLinear(len(a), len(b), b[:, None] >= a[None, :]), nn.SiLU()]
        deg_out = deg_in.repeat(out_mult)
        layers.append(MaskedLinear(len(degs[-1]), len(deg_out), deg_out[:, None] > degs[-1][None, :]))
        self.net = _zero_last(nn.Sequential(*layers))

    def forward(self, x):
        return self.net(x)


class MAF(nn.Module):
    """Masked autoregressive flow layer (Papamakarios et al. 2017): z_i = (x_i - mu_i(x_<i)) exp(-a_i(x_<i)).
    Data -> base is ONE pass of the MADE (cheap likelihood, cheap forward KL); base -> data needs D
    sequential passes, one dimension at a time (slow sampling, slow reverse KL)."""

    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.dim = dim
        self.made = MADE(dim, hidden)

    def _ma(self, v):
        mu, a = self.made(v).chunk(2, dim=1)
        return mu, _soft_clamp(a)

    def forward(self, x):  # one pass
        mu, a = self._ma(x)
        return (x - mu) * torch.exp(-a), -a.sum(1)

    def inverse(self, z):  # D passes: after pass i, x_<=i is final
        x = torch.zeros_like(z)
        for _ in range(self.dim):
            mu, a = self._ma(x)
            x = z * torch.exp(a) + mu
        return x, a.sum(1)


class IAF(MAF):
    """Inverse autoregressive flow (Kingma et al. 2016): the same layer as MAF, used the other way round.
    Base -> data is ONE pass (cheap sampling with its density: ideal for reverse KL); data -> base
    needs D sequential passes (slow likelihood of given data)."""

    def forward(self, x):
        return MAF.inverse(self, x)

    def inverse(self, z):
        return MAF.forward(self, z)
