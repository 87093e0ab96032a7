"""Divergences on a grid, and a simple q fitted to a fixed mixture p under each of them at once.

    from dgm.divergences import DivergenceConfig, DivergenceTrainer
    t = DivergenceTrainer(DivergenceConfig(target="bimodal"), seed=0)
    t.step(500)
    t.final()["mean"], t.final()["reverse_kl"]

Everything is exact up to quadrature: p and every q are evaluated at the cell centres of a regular
grid over a box (the *quadrature box*, the plotting box widened by ``pad``), turned into cell
probabilities (each renormalised on the grid) and compared there. So the divergences are those
between two discrete distributions on the same cells; with a fine grid and a wide box they equal
the continuous ones. The one exception is MMD, fitted from samples (as a GAN critic or an IPM would
be), and reported exactly on the grid.

One trainer fits one q per objective in a single batched model (``QBatch``: Q rows, K components
each), so one Adam step moves all of them; Adam works per parameter, so this is the same as seven
separate Adam runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

import dgm.data
from dgm.config import knob
from dgm.experiments import Experiment
from dgm.metrics import Grid
from dgm.train import Trainer

LOG2PI = math.log(2 * math.pi)

#: every objective, in display order; the cross table uses the same names as its columns
OBJECTIVES = ("forward_kl", "reverse_kl", "js", "alpha", "hellinger", "tv", "mmd")
LABELS = {
    "forward_kl": "forward KL(p‖q)",
    "reverse_kl": "reverse KL(q‖p)",
    "js": "Jensen-Shannon",
    "alpha": "Amari α",
    "hellinger": "Hellinger²",
    "tv": "total variation",
    "mmd": "MMD²",
}
SHORT_LABELS = {"forward_kl": "KL(p‖q)", "reverse_kl": "KL(q‖p)", "js": "JS", "alpha": "α-div", "hellinger": "H²",
                "tv": "TV", "mmd": "MMD²"}
COLORS = {
    "forward_kl": "#d62728",
    "reverse_kl": "#1f77b4",
    "js": "#2ca02c",
    "alpha": "#9467bd",
    "hellinger": "#ff7f0e",
    "tv": "#17becf",
    "mmd": "#e377c2",
}
TARGETS = ("bimodal", "trimodal", "ring8", "grid25", "mix1d", "custom")
KDE_POINTS = 1000  # a target from your own data: the KDE of at most this many of its points
FAMILIES = ("gaussian", "diagonal", "mixture")


# ---- the target p --------------------------------------------------------------------------------

@dataclass
class Target:
    """A Gaussian mixture p in 1 or 2 dimensions, with exact density and moments."""

    name: str
    means: Tensor  # (M, D)
    scale_tril: Tensor  # (M, D, D)
    weights: Tensor  # (M,)
    box: tuple[float, ...]  # plotting box: (xmin, xmax) in 1D, (xmin, xmax, ymin, ymax) in 2D
    description: str = ""

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def covs(self) -> Tensor:
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    @property
    def mode_std(self) -> Tensor:
        """(M,) the largest standard deviation of each mode."""
        return torch.linalg.eigvalsh(self.covs.double()).max(-1).values.sqrt().float()

    def to(self, device) -> "Target":
        return Target(self.name, self.means.to(device), self.scale_tril.to(device), self.weights.to(device),
                      self.box, self.description)

    def log_prob(self, x: Tensor) -> Tensor:
        """(N, D) -> (N,), exact."""
        dt = x.dtype
        lp = gauss_log_prob(x[None, :, :], self.means[None].to(dt), self.scale_tril[None].to(dt),
                            self.weights.log()[None].to(dt))
        return lp[0]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        idx = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.dim, 1, generator=generator, device=dev)
        return self.means.to(dev)[idx] + (self.scale_tril.to(dev)[idx] @ eps).squeeze(-1)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact mean (D,) and covariance (D, D) of the mixture (float64)."""
        return mixture_moments(self.means.double(), self.covs.double(), self.weights.double())


def mixture_moments(means: Tensor, covs: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (..., D) and covariance (..., D, D) of a mixture with (..., M, D) means, (..., M, D, D)
    covariances and (..., M) weights summing to 1."""
    w = weights[..., None]
    mean = (w * means).sum(-2)
    second = (w[..., None] * (covs + means[..., :, None] * means[..., None, :])).sum(-3)
    return mean, second - mean[..., :, None] * mean[..., None, :]


def make_target(name: str, *, spread: float = 1.0, width: float = 1.0, sep: float = 5.0, sd1: float = 0.5,
                sd2: float = 0.8, w1: float = 0.6) -> Target:
    """``mix1d``: two 1D Gaussians at -sep/2 and +sep/2 with stds sd1, sd2 and weights w1, 1 - w1.
    Else a 2D mixture of ``dgm.data`` whose mode centres are moved ``spread`` times as far from
    their weighted centre and whose modes are ``width`` times as wide (1 and 1: the exact set)."""
    if name == "mix1d":
        means = torch.tensor([[-sep / 2], [sep / 2]])
        tril = torch.tensor([sd1, sd2]).reshape(2, 1, 1)
        w = torch.tensor([w1, 1 - w1])
        return Target("mix1d", means, tril, w, (-8.0, 8.0),
                      f"two Gaussians at ±{sep / 2:g} (std {sd1:g} and {sd2:g}, weights {w1:g} and {1 - w1:g})")
    if name.startswith("custom:"):
        return _kde_target(name)
    if name not in TARGETS or name == "custom":
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)} (custom: upload data first)")
    p = dgm.data.get(name)
    w = p.weights.clone()
    c = (w[:, None] * p.means).sum(0)
    means = c + spread * (p.means - c)
    tril = width * p.scale_tril
    xmin, xmax, ymin, ymax = p.box
    s = max(1.0, spread)
    cx, cy = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)
    box = (cx + s * (xmin - cx), cx + s * (xmax - cx), cy + s * (ymin - cy), cy + s * (ymax - cy))
    desc = p.description + ("" if spread == 1 and width == 1 else f"; modes moved ×{spread:g}, widened ×{width:g}")
    return Target(name, means, tril, w, box, desc)


def _kde_target(name: str) -> Target:
    """Your own data (dgm.userdata) as a target: its Gaussian kernel density estimate, which is a
    mixture of one Gaussian per point, on at most KDE_POINTS points (a fixed subsample). The density
    is an estimate of the data's, and the page says so."""
    d = dgm.data.get(name)
    pts = d.points
    if len(pts) > KDE_POINTS:
        pts = pts[torch.randperm(len(pts), generator=torch.Generator().manual_seed(0))[:KDE_POINTS]]
    m = len(pts)
    tril = d.bandwidth * torch.eye(2).expand(m, 2, 2).clone()
    desc = (f"your data, as a kernel density estimate (an estimate, not an exact density): {m:,} points, "
            f"bandwidth {d.bandwidth:.3g}")
    return Target(name, pts.clone(), tril, torch.full((m,), 1.0 / m), d.box, desc)


# ---- grids ---------------------------------------------------------------------------------------

@dataclass
class QuadGrid:
    """Cell centres of a regular grid over a box in 1D (``shape`` (N,)) or 2D (``shape`` (R, R), rows
    along y); ``axes`` holds the 1D coordinates of each axis, x first."""

    box: tuple[float, ...]
    shape: tuple[int, ...]
    points: Tensor  # (N, D)
    axes: list[Tensor]
    cell: float  # cell length (1D) or area (2D)

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def n(self) -> int:
        return int(self.points.shape[0])

    @classmethod
    def over(cls, box: Sequence[float], resolution: int, device=None, dtype=torch.float32) -> "QuadGrid":
        if len(box) == 2:
            lo, hi = float(box[0]), float(box[1])
            h = (hi - lo) / resolution
            xs = lo + h * (torch.arange(resolution, device=device, dtype=dtype) + 0.5)
            return cls((lo, hi), (resolution,), xs[:, None], [xs], h)
        g = Grid.over(box, resolution, device=device, dtype=dtype)
        return cls(g.box, (resolution, resolution), g.points, [g.xs, g.ys], g.cell_area)

    def describe(self) -> str:
        if self.dim == 1:
            return (f"{self.shape[0]} points of spacing {self.cell:.3g} over [{self.box[0]:g}, {self.box[1]:g}]")
        r = self.shape[0]
        dx = (self.box[1] - self.box[0]) / r
        return (f"{r} × {r} cells of side {dx:.3g} over [{self.box[0]:g}, {self.box[1]:g}] × "
                f"[{self.box[2]:g}, {self.box[3]:g}]")


def widen(box: Sequence[float], factor: float) -> tuple[float, ...]:
    """The box scaled by ``factor`` about its centre."""
    out = []
    for lo, hi in zip(box[0::2], box[1::2]):
        c, h = 0.5 * (lo + hi), 0.5 * (hi - lo) * factor
        out += [c - h, c + h]
    return tuple(out)


# ---- Gaussian mixtures, batched ------------------------------------------------------------------

def gauss_log_prob(x: Tensor, loc: Tensor, tril: Tensor, log_w: Tensor) -> Tensor:
    """log of sum_k w_k N(x; loc_k, tril_k tril_k^T) for Q mixtures at once.

    x (Q or 1, N, D), loc (Q, K, D), tril (Q, K, D, D) lower triangular, log_w (Q, K) normalised
    -> (Q, N). In 1D and 2D the triangular solve is written out (cheaper than a batched solve)."""
    d = loc.shape[-1]
    a = tril[..., 0, 0][..., None]  # (Q, K, 1)
    z0 = (x[:, None, :, 0] - loc[..., 0:1]) / a  # (Q, K, N)
    sq = z0 * z0
    logdet = torch.log(a)
    if d == 2:
        b, c = tril[..., 1, 1][..., None], tril[..., 1, 0][..., None]
        z1 = (x[:, None, :, 1] - loc[..., 1:2] - c * z0) / b
        sq = sq + z1 * z1
        logdet = logdet + torch.log(b)
    elif d != 1:
        raise ValueError("only 1D and 2D are supported")
    if loc.shape[1] == 1:  # one component: no sum over components
        return (-0.5 * sq - (logdet + 0.5 * d * LOG2PI))[:, 0] + log_w
    comp = -0.5 * sq - (logdet + 0.5 * d * LOG2PI)  # (Q, K, N)
    return torch.logsumexp(log_w[..., None] + comp, dim=1)


class QBatch(nn.Module):
    """Q mixtures of K Gaussians in D dimensions, one row per fitted q.

    Each component is N(loc, L L^T) with L = [[a, 0], [c, b]], a = exp(log_scale[0]),
    b = exp(log_scale[1]) and c = ``off`` (kept at 0 for the diagonal family). K = 1 is a Gaussian."""

    def __init__(self, loc: Tensor, log_scale: Tensor, full: bool = True):
        super().__init__()
        q, k, d = loc.shape
        self.full = bool(full and d == 2)
        self.loc = nn.Parameter(loc.clone())  # (Q, K, D)
        self.log_scale = nn.Parameter(log_scale.clone())  # (Q, K, D)
        self.off = nn.Parameter(torch.zeros(q, k, device=loc.device, dtype=loc.dtype), requires_grad=self.full)
        self.logits = nn.Parameter(torch.zeros(q, k, device=loc.device, dtype=loc.dtype), requires_grad=k > 1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.loc.shape)

    def tril(self) -> Tensor:
        """(Q, K, D, D)"""
        q, k, d = self.shape
        s = self.log_scale.exp()
        if d == 1:
            return s[..., None]
        zero = torch.zeros_like(self.off)
        off = self.off if self.full else zero
        row0 = torch.stack([s[..., 0], zero], -1)
        row1 = torch.stack([off, s[..., 1]], -1)
        return torch.stack([row0, row1], -2)

    def log_weights(self) -> Tensor:
        return torch.log_softmax(self.logits, -1)  # (Q, K)

    def log_prob(self, x: Tensor, rows: slice | None = None) -> Tensor:
        """x (N, D) or (Q, N, D) -> (Q, N); ``rows`` restricts to some of the q's."""
        rows = rows or slice(None)
        if x.dim() == 2:
            x = x[None]
        return gauss_log_prob(x.to(self.loc.dtype), self.loc[rows], self.tril()[rows], self.log_weights()[rows])

    def rsample(self, m: int, generator: torch.Generator, rows: slice | None = None) -> tuple[Tensor, Tensor]:
        """m reparameterised draws from every component: points (Q, K*m, D) and their weights (Q, K*m)
        (the component weight over m), so sums against them are unbiased expectations under q."""
        rows = rows or slice(None)
        loc, tril, lw = self.loc[rows], self.tril()[rows], self.log_weights()[rows]
        q, k, d = loc.shape
        eps = torch.randn(q, k, m, d, 1, generator=generator, device=loc.device, dtype=loc.dtype)
        x = loc[:, :, None, :] + (tril[:, :, None] @ eps).squeeze(-1)  # (Q, K, m, D)
        w = (lw.exp() / m)[..., None].expand(q, k, m)
        return x.reshape(q, k * m, d), w.reshape(q, k * m)

    @torch.no_grad()
    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean (Q, D) and covariance (Q, D, D) of each q."""
        t = self.tril().double()
        return mixture_moments(self.loc.double(), t @ t.transpose(-1, -2), self.log_weights().double().exp())


# ---- divergences between cell probabilities ------------------------------------------------------
#
# Every function takes log cell probabilities lp, lq of shape (..., N), each normalised over the last
# axis (log_softmax of the log density at the cell centres), and returns (...). They are >= 0 and 0
# for p = q; JS <= log 2, Hellinger^2 <= 1, TV <= 1.

def kl(lp: Tensor, lq: Tensor) -> Tensor:
    """KL(p || q) = sum p log(p / q)."""
    return (lp.exp() * (lp - lq)).sum(-1)


def js(lp: Tensor, lq: Tensor) -> Tensor:
    """JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2."""
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    return 0.5 * (kl(lp, lm) + kl(lq, lm))


def amari(lp: Tensor, lq: Tensor, alpha: float) -> Tensor:
    """Amari alpha-divergence (1 - sum p^a q^(1-a)) / (a (1 - a)): KL(q||p) at a = 0, KL(p||q) at a = 1."""
    if abs(alpha) < 1e-6:
        return kl(lq, lp)
    if abs(alpha - 1) < 1e-6:
        return kl(lp, lq)
    lse = torch.logsumexp(alpha * lp + (1 - alpha) * lq, -1)
    return -torch.expm1(lse) / (alpha * (1 - alpha))


def hellinger2(lp: Tensor, lq: Tensor) -> Tensor:
    """Squared Hellinger distance 1 - sum sqrt(p q) (the Amari divergence at alpha = 1/2, over 4)."""
    return -torch.expm1(torch.logsumexp(0.5 * (lp + lq), -1))


def tv(lp: Tensor, lq: Tensor) -> Tensor:
    """Total variation sum |p - q| / 2."""
    return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)


def kernel_matrix(xs: Tensor, bandwidth: float) -> Tensor:
    d = xs[:, None] - xs[None, :]
    return torch.exp(-0.5 * (d / bandwidth) ** 2)


def grid_mmd2(lp: Tensor, lq: Tensor, grid: QuadGrid, bandwidth: float) -> Tensor:
    """Exact MMD^2 between the two cell distributions with the kernel exp(-|x - y|^2 / (2 bw^2)):
    (p - q)^T K (p - q). The kernel is a product over the axes, so in 2D this is tr(D^T Ky D Kx)
    with D the (R, R) image of p - q: two small matrix products instead of an N x N matrix."""
    diff = lp.exp() - lq.exp()  # (..., N)
    ks = [kernel_matrix(a.to(diff.dtype), bandwidth) for a in grid.axes]
    if grid.dim == 1:
        return (diff * (diff @ ks[0])).sum(-1)
    r = grid.shape[0]
    img = diff.reshape(*diff.shape[:-1], r, r)  # rows y, columns x
    return (img * (ks[1] @ img @ ks[0])).sum((-1, -2)).clamp_min(0.0)


def sample_mmd2(x: Tensor, y: Tensor, wy: Tensor, bandwidth: float, sxx: Tensor | None = None) -> Tensor:
    """Unbiased MMD^2 between samples x (Q, n, D) of p (equal weights) and weighted draws y (Q, m, D)
    of q with weights wy (Q, m) summing to 1 (diagonal terms dropped and renormalised).
    ``sxx``: E k(x, x') under p when it is known exactly (it does not depend on q)."""
    def k(a, b):
        return torch.exp(-0.5 * torch.cdist(a, b).pow(2) / bandwidth**2)

    n = x.shape[1]
    if sxx is None:
        kxx = k(x, x)
        sxx = (kxx.sum((-1, -2)) - kxx.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    kyy = k(y, y)
    ww = wy[..., :, None] * wy[..., None, :]
    syy = ((ww * kyy).sum((-1, -2)) - (ww.diagonal(dim1=-2, dim2=-1) * kyy.diagonal(dim1=-2, dim2=-1)).sum(-1))
    syy = syy / (1 - (wy * wy).sum(-1))
    sxy = (k(x, y) * wy[..., None, :]).sum((-1, -2)) / n
    return sxx + syy - 2 * sxy


def all_divergences(lp: Tensor, lq: Tensor, grid: QuadGrid, alpha: float, bandwidth: float) -> dict[str, Tensor]:
    """Every divergence (name -> (...)) between p and q given as log cell probabilities."""
    return {
        "forward_kl": kl(lp, lq),
        "reverse_kl": kl(lq, lp),
        "js": js(lp, lq),
        "alpha": amari(lp, lq, alpha),
        "hellinger": hellinger2(lp, lq),
        "tv": tv(lp, lq),
        "mmd": grid_mmd2(lp, lq, grid, bandwidth),
    }


def gaussian_kl(m0: Tensor, c0: Tensor, m1: Tensor, c1: Tensor) -> float:
    """Closed-form KL(N(m0, c0) || N(m1, c1))."""
    m0, c0, m1, c1 = (t.double() for t in (m0, c0, m1, c1))
    d = m0.shape[0]
    inv = torch.linalg.inv(c1)
    diff = m1 - m0
    return float(0.5 * (torch.trace(inv @ c0) + diff @ inv @ diff - d + torch.logdet(c1) - torch.logdet(c0)))


# ---- the trainer ---------------------------------------------------------------------------------

def _is1d(cfg) -> bool:
    return cfg.target == "mix1d"


@dataclass
class DivergenceConfig:
    target: str = knob("bimodal", "the fixed distribution p (mix1d: a 1D two-Gaussian mixture you can edit)",
                       label="target p", choices=TARGETS, group="Target p")
    spread: float = knob(1.0, "move p's modes this many times as far from their centre", label="mode spread",
                         lo=0.25, hi=2.0, step=0.05, group="Target p", show=lambda c: not _is1d(c))
    width: float = knob(1.0, "make p's modes this many times as wide", label="mode width ×", lo=0.5, hi=10.0,
                        log=True, group="Target p", show=lambda c: not _is1d(c))
    sep: float = knob(5.0, "distance between the two 1D modes", label="separation", lo=0.0, hi=8.0, step=0.1,
                      group="Target p", show=_is1d)
    sd1: float = knob(0.5, "std of the left mode", label="left width", lo=0.2, hi=2.0, step=0.05, group="Target p",
                      show=_is1d)
    sd2: float = knob(0.8, "std of the right mode", label="right width", lo=0.2, hi=2.0, step=0.05,
                      group="Target p", show=_is1d)
    w1: float = knob(0.6, "weight of the left mode", label="left weight", lo=0.05, hi=0.95, step=0.05,
                     group="Target p", show=_is1d)
    family: str = knob("gaussian", "the family of q", label="q family", choices=FAMILIES, group="Model q")
    k: int = knob(2, "components of a mixture q", label="components K", lo=1, hi=8, group="Model q",
                  show=lambda c: c.family == "mixture")
    objective: str = knob("reverse_kl", "the objective whose fit the command line reports (all are fitted)",
                          label="reported objective", choices=OBJECTIVES, group="Model q")
    alpha: float = knob(0.25, "alpha of the Amari divergence: 0 is reverse KL, 1 is forward KL",
                        label="α (Amari)", lo=-1.0, hi=2.0, step=0.05, group="Model q")
    bw: float = knob(1.0, "bandwidth of MMD's Gaussian kernel", label="MMD bandwidth", lo=0.1, hi=5.0, log=True,
                     group="Model q")
    lr: float = knob(0.05, "Adam learning rate", label="learning rate", lo=1e-3, hi=0.5, log=True,
                     group="Fitting")
    res: int = knob(96, "grid cells per axis in 2D (8 times as many points in 1D)", label="grid resolution",
                    choices=(32, 48, 64, 96, 128, 192, 256), group="Fitting")
    pad: float = knob(2.0, "the quadrature box is the plot box widened this many times", label="quadrature box ×",
                      choices=(1.0, 1.5, 2.0, 3.0), group="Fitting")
    starts: int = knob(2, "initialisations per objective (one broad, the others narrow); the best is shown",
                       label="starts per objective", lo=1, hi=4, group="Fitting")
    mc: bool = knob(False, "fit reverse KL from reparameterised samples of q instead of the grid",
                    label="reverse KL by Monte Carlo", group="Fitting")
    mc_n: int = knob(8, "samples per step for the Monte Carlo reverse KL", label="MC samples", lo=1, hi=1000,
                     log=True, group="Fitting", show=lambda c: c.mc)
    mmd_n: int = knob(200, "samples of p and of q per step for MMD", label="MMD samples", lo=16, hi=1000, log=True,
                      group="Fitting")


def target_of(cfg: DivergenceConfig) -> Target:
    return make_target(cfg.target, spread=cfg.spread, width=cfg.width, sep=cfg.sep, sd1=cfg.sd1, sd2=cfg.sd2,
                       w1=cfg.w1)


def quad_grid(cfg: DivergenceConfig, target: Target, device=None, dtype=torch.float32) -> QuadGrid:
    res = cfg.res * 8 if target.dim == 1 else cfg.res
    return QuadGrid.over(widen(target.box, cfg.pad), res, device=device, dtype=dtype)


def init_params(target: Target, n: int, k: int, generator: torch.Generator, broad: bool = True,
                dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """n initial q's: means (n, K, D) and log scales (n, K, D), around the centre of the plotting box.

    broad: near the centre (a tenth of the half width, at random) with a std of a third of the half
    width, so q starts overlapping every mode. Else narrow: anywhere in the middle of the box (0.4 of
    the half width, at random) with a std of an eighth of it, so q starts near one part of p.
    Mixture components start spread out (0.4 of the half width) with a quarter (narrow: an eighth)."""
    dev = generator.device
    box = torch.tensor(target.box, dtype=dtype, device=dev).reshape(-1, 2)  # (D, 2)
    centre, half = box.mean(1), 0.5 * (box[:, 1] - box[:, 0])
    spread = (0.1 if broad else 0.4) if k == 1 else 0.4
    width = (3.0 if k == 1 else 4.0) if broad else 8.0
    loc = centre + spread * half * torch.randn(n, k, target.dim, generator=generator, device=dev, dtype=dtype)
    log_scale = torch.log(half / width).expand(n, k, target.dim).clone()
    return loc, log_scale


class DivergenceTrainer(Trainer):
    """One q per objective (``objectives``, all of them by default), fitted side by side by Adam.

    Each objective is fitted from ``config.starts`` initialisations (one broad, the others narrow and
    scattered), all in one batch: row j * S + s of ``self.q`` is objective j's start s. The objectives
    other than forward KL have local optima (one per mode, or "cover everything"), so the reported fit
    of an objective is its best start under that objective, at every step."""

    eval_every = 0  # the cross table is computed in evaluate() at the end and in snapshot()

    def __init__(self, config: DivergenceConfig, seed: int = 0, device="auto",
                 objectives: Sequence[str] = OBJECTIVES):
        self.objectives = tuple(objectives)
        unknown = set(self.objectives) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"unknown objectives {sorted(unknown)}")
        super().__init__(config, seed, device)

    def reset(self) -> None:
        self.__init__(self.config, self.seed, self.device, self.objectives)

    def build(self):
        c = self.config
        self.target = target_of(c).to(self.device)
        self.grid = quad_grid(c, self.target, device=self.device)
        self.lp = torch.log_softmax(self.target.log_prob(self.grid.points), 0)  # (N,) log cell probabilities
        self.p = self.lp.exp()
        self.p_lp = (self.p * self.lp).sum()  # minus the entropy of the cell distribution
        # E k(x, x') for x, x' ~ p (on the grid): MMD's q-free term, so steps sample only the cross terms
        self.pkp = grid_mmd2(self.lp, torch.full_like(self.lp, -math.inf), self.grid, c.bw)
        init = torch.Generator(device=self.device).manual_seed(self.seed + 7919)
        k = c.k if c.family == "mixture" else 1
        self.starts = int(c.starts)
        starts = [init_params(self.target, 1, k, init, broad=s == 0) for s in range(self.starts)]
        loc = torch.cat([a for a, _ in starts]).repeat(len(self.objectives), 1, 1)  # (Q*S, K, D)
        log_scale = torch.cat([b for _, b in starts]).repeat(len(self.objectives), 1, 1)
        self.q = QBatch(loc, log_scale, full=c.family != "diagonal").to(self.device)
        self.opt = torch.optim.Adam([p for p in self.q.parameters() if p.requires_grad], lr=c.lr)
        self.row = {name: j for j, name in enumerate(self.objectives)}

    def rows(self, j: int) -> slice:
        """The rows of objective j's starts."""
        return slice(j * self.starts, (j + 1) * self.starts)

    def objective_values(self) -> dict[str, Tensor]:
        """Each objective on each of its own starts, (S,) per objective (differentiable).

        The same formulas as ``all_divergences``, arranged to share work across the batch:
        one log-softmax and one exp over all rows, and p's constants computed once."""
        c = self.config
        lq = torch.log_softmax(self.q.log_prob(self.grid.points), -1)  # (Q*S, N)
        q = lq.exp()
        lp, p = self.lp, self.p
        out: dict[str, Tensor] = {}
        for name, j in self.row.items():
            r = self.rows(j)
            q_j, lq_j = q[r], lq[r]  # (S, N)
            if name == "forward_kl":
                out[name] = self.p_lp - (p * lq_j).sum(-1)
            elif name == "reverse_kl":
                out[name] = self._mc_reverse_kl(r) if c.mc else (q_j * (lq_j - lp)).sum(-1)
            elif name == "js":
                lm = torch.logaddexp(lp, lq_j) - math.log(2.0)
                out[name] = 0.5 * (self.p_lp - (p * lm).sum(-1) + (q_j * (lq_j - lm)).sum(-1))
            elif name == "alpha":
                out[name] = amari(lp, lq_j, c.alpha)
            elif name == "hellinger":
                out[name] = 1.0 - torch.exp(0.5 * (lp + lq_j)).sum(-1)
            elif name == "tv":
                out[name] = 0.5 * (p - q_j).abs().sum(-1)
            elif name == "mmd":
                out[name] = self._sample_mmd(r)
        return out

    def _mc_reverse_kl(self, r: slice) -> Tensor:
        """E_q[log q(x) - log p(x)] from reparameterised draws (continuous densities, no grid)."""
        x, w = self.q.rsample(self.config.mc_n, self.gen, rows=r)  # (S, M, D), (S, M)
        log_q = self.q.log_prob(x, rows=r)  # (S, M)
        log_p = self.target.log_prob(x.reshape(-1, x.shape[-1])).reshape(log_q.shape)
        return (w * (log_q - log_p)).sum(-1)

    def _sample_mmd(self, r: slice) -> Tensor:
        n = self.config.mmd_n
        k = self.q.shape[1]
        xp = self.target.sample(n, self.gen)[None]  # (1, n, D), shared by the starts
        xq, w = self.q.rsample(max(n // k, 2), self.gen, rows=r)  # (S, M, D)
        return sample_mmd2(xp.expand(xq.shape[0], -1, -1), xq, w, self.config.bw, sxx=self.pkp)

    def train_step(self):
        vals = self.objective_values()
        loss = torch.cat(list(vals.values())).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {f"fit_{k}": v.detach().min() for k, v in vals.items()}

    # -- evaluation (exact on the grid, float64) -------------------------------------------------------
    @torch.no_grad()
    def exact(self) -> tuple[dict[str, list[float]], dict[str, int]]:
        """Every divergence for every row ({divergence: [value per row]}), and each objective's best row
        (its start with the lowest value of that objective)."""
        g64 = QuadGrid(self.grid.box, self.grid.shape, self.grid.points.double(),
                       [a.double() for a in self.grid.axes], self.grid.cell)
        lp = torch.log_softmax(self.target.log_prob(g64.points), 0)
        lq = torch.log_softmax(self.q.log_prob(g64.points).double(), -1)  # (Q*S, N)
        divs = {k: v.cpu().tolist() for k, v in all_divergences(lp, lq, g64, self.config.alpha, self.config.bw).items()}
        best = {}
        for name, j in self.row.items():
            r = range(j * self.starts, (j + 1) * self.starts)
            best[name] = min(r, key=lambda i: divs[name][i])
        return divs, best

    def table(self, exact=None) -> dict[str, dict[str, float]]:
        """{fitted objective: {divergence: value}}: every divergence between p and every fitted q."""
        divs, best = exact or self.exact()
        return {name: {d: divs[d][best[name]] for d in OBJECTIVES} for name in self.row}

    @torch.no_grad()
    def params(self, exact=None) -> dict[str, dict[str, Any]]:
        """{objective: {mean, cov, weights, means, covs, start}} of each fitted q (its best start; lists)."""
        _, best = exact or self.exact()
        mean, cov = self.q.moments()
        t = self.q.tril().double()
        covs = t @ t.transpose(-1, -2)
        w = self.q.log_weights().double().exp()
        out = {}
        for name, j in self.row.items():
            i = best[name]
            out[name] = {"mean": mean[i].cpu().tolist(), "cov": cov[i].cpu().tolist(),
                         "weights": w[i].cpu().tolist(), "means": self.q.loc[i].double().cpu().tolist(),
                         "covs": covs[i].cpu().tolist(), "start": i - j * self.starts}
        return out

    def evaluate(self):
        primary = self.config.objective if self.config.objective in self.row else self.objectives[0]
        ex = self.exact()
        tab = self.table(ex)
        par = self.params(ex)[primary]
        out: dict[str, Any] = dict(tab[primary])
        out.update(objective=primary, mean=par["mean"], cov=par["cov"])
        if self.q.shape[1] > 1:
            out.update(weights=par["weights"], means=par["means"], covs=par["covs"])
        out["grid"] = self.grid.describe()
        for name, row in tab.items():
            for d, v in row.items():
                out[f"table.{name}.{d}"] = v
        return out

    @torch.no_grad()
    def plot_data(self, best: dict[str, int], resolution: int = 100) -> dict[str, Any]:
        """p (and in 1D every fitted q) as continuous densities on a plotting grid over p's box
        (float32 numpy arrays: plotly sends them to the browser as compact binary)."""
        t = self.target
        if t.dim == 1:
            xs = torch.linspace(t.box[0], t.box[1], 4 * resolution, device=self.device)
            p = t.log_prob(xs[:, None]).exp()
            q = self.q.log_prob(xs[:, None]).exp()  # (Q*S, n)
            return {"xs": xs.cpu().numpy(), "p": p.cpu().numpy(),
                    "q": {name: q[best[name]].cpu().numpy() for name in self.row}}
        g = Grid.over(t.box, resolution, device=self.device)
        p = t.log_prob(g.points).exp().reshape(resolution, resolution)
        return {"xs": g.xs.cpu().numpy(), "ys": g.ys.cpu().numpy(), "p": p.cpu().numpy()}

    @torch.no_grad()
    def snapshot(self):
        t = self.target
        ex = self.exact()
        return {"table": self.table(ex), "params": self.params(ex), "grid": self.grid.describe(),
                "objectives": self.objectives, "primary": self.config.objective, "plot": self.plot_data(ex[1]),
                "target": {"name": t.name, "description": t.description, "box": t.box, "dim": t.dim,
                           "centers": t.means.cpu().tolist(), "modes": int(t.means.shape[0])},
                "alpha": self.config.alpha, "iteration": self.iteration, "starts": self.starts}


# ---- restarts: where does reverse KL land? -------------------------------------------------------

def nearest_mode(means: Tensor, target: Target, tol: float = 3.0) -> Tensor:
    """Index of the mode of p nearest to each point (N, D), or -1 ("between modes") when it is farther
    than ``tol`` of that mode's largest std away."""
    d = torch.cdist(means.double(), target.means.double().to(means.device))  # (N, M)
    dmin, idx = d.min(1)
    far = dmin > tol * target.mode_std.double().to(means.device)[idx]
    return torch.where(far, torch.full_like(idx, -1), idx)


def restarts(cfg: DivergenceConfig, n: int = 64, steps: int = 300, seed: int = 0, device="cpu", lr: float = 0.1,
             res: int | None = 64) -> dict[str, Any]:
    """Fit reverse KL (on the grid) from ``n`` random starts at once and report where each lands.

    The starts are uniform over the plotting box with the usual initial width; the family is the
    config's (a Gaussian for a mixture family, so that "which mode" has one answer). The grid is the
    config's at ``res`` cells per axis (coarser than the page's by default: many runs, one answer each),
    and Adam's learning rate is ``lr``, larger than the page's, so that runs starting in p's far tails
    arrive within the budget. Returns numpy-free
    lists: init (n, D), final (n, D), mode (n,) index into p's modes or -1, counts {mode: runs}, kl (n,)."""
    dev = torch.device(device)
    target = target_of(cfg).to(dev)
    if res is not None:
        cfg = dataclasses.replace(cfg, res=int(res))
    grid = quad_grid(cfg, target, device=dev)
    lp = torch.log_softmax(target.log_prob(grid.points), 0)
    g = torch.Generator(device=dev).manual_seed(int(seed) + 104729)
    box = torch.tensor(target.box, dtype=torch.float32, device=dev).reshape(-1, 2)
    lo, hi = box[:, 0], box[:, 1]
    loc = lo + (hi - lo) * torch.rand(n, 1, target.dim, generator=g, device=dev)
    _, log_scale = init_params(target, n, 1, g, broad=True)
    q = QBatch(loc, log_scale, full=cfg.family != "diagonal").to(dev)
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=lr)
    for _ in range(int(steps)):
        lq = torch.log_softmax(q.log_prob(grid.points), -1)
        loss = kl(lq, lp).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        lq = torch.log_softmax(q.log_prob(grid.points), -1)
        final_kl = kl(lq, lp)
        mean, cov = q.moments()
        mode = nearest_mode(mean.float(), target)
    counts: dict[int, int] = {}
    for m in mode.tolist():
        counts[m] = counts.get(m, 0) + 1
    return {"init": loc[:, 0].cpu().tolist(), "final": mean.cpu().tolist(), "cov": cov.cpu().tolist(),
            "mode": mode.cpu().tolist(), "counts": dict(sorted(counts.items())), "kl": final_kl.cpu().tolist(),
            "centers": target.means.cpu().tolist(), "weights": target.weights.cpu().tolist(), "steps": int(steps)}


# ---- the experiment ------------------------------------------------------------------------------

def figures(trainer: DivergenceTrainer) -> dict:
    from dgm.viz import divergences as vd

    return vd.figures(trainer)


PRESETS = {
    "mode covering vs seeking": {"target": "bimodal", "family": "gaussian"},
    "1D: two humps, one Gaussian": {"target": "mix1d", "sep": 5.0, "sd1": 0.6, "sd2": 0.6, "w1": 0.5},
    "merging modes": {"target": "mix1d", "sep": 1.5, "sd1": 0.6, "sd2": 0.6, "w1": 0.5},
    "three modes, two components": {"target": "trimodal", "family": "mixture", "k": 2},
    "ring of eight": {"target": "ring8", "width": 5.0},
    "noisy reverse KL": {"target": "bimodal", "mc": True, "mc_n": 2},
}
LESSONS = {
    "mode covering vs seeking": "forward KL spreads one Gaussian over both modes; reverse KL locks onto one",
    "1D: two humps, one Gaussian": "the lecture's picture: p and every fitted q as curves on one axis",
    "merging modes": "when the modes overlap, every divergence agrees on a single broad Gaussian",
    "three modes, two components": "a two-component q facing three modes must choose which mode to drop; "
                                   "the table shows which fits stop in a local optimum",
    "ring of eight": "eight modes, one Gaussian: reverse KL picks one mode, forward KL fills the ring",
    "noisy reverse KL": "reverse KL from 2 reparameterised samples per step: the same target, a noisy path",
}

EXPERIMENT = Experiment(
    name="divergence",
    help="fit a Gaussian (or a small mixture) q to a fixed mixture p under forward KL, reverse KL, JS, "
         "alpha, Hellinger, TV and MMD at once",
    config=DivergenceConfig,
    trainer=DivergenceTrainer,
    figures=figures,
    presets=PRESETS,
    lessons=LESSONS,
)
