"""The fixed target p of the Divergences page (a Gaussian mixture in 1D or 2D, with exact density and
moments), the quadrature grids the divergences are computed on, and mixtures evaluated in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

import dgm.core.data
from dgm.core.metrics import Grid

LOG2PI = math.log(2 * math.pi)
TARGETS = ("bimodal", "trimodal", "ring8", "grid25", "mix1d", "custom")
KDE_POINTS = 1000  # a target from your own data: the KDE of at most this many of its points


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
    Else a 2D mixture of ``dgm.core.data`` whose mode centres are moved ``spread`` times as far from
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
    p = dgm.core.data.get(name)
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
    """Your own data (dgm.core.userdata) as a target: its Gaussian kernel density estimate, which is a
    mixture of one Gaussian per point, on at most KDE_POINTS points (a fixed subsample). The density
    is an estimate of the data's, and the page says so."""
    d = dgm.core.data.get(name)
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

