"""The fixed target p of the Divergences page (a Gaussian mixture in 1D or 2D, with exact density and
moments), the quadrature grids the divergences are computed on, and mixtures evaluated in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

import dgm.core.data

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


# ---- quadrature grids ----------------------------------------------------------------------------
#
# A regular grid of cells over the quadrature box, with the cells near a narrow component of p cut into
# m x m (m in 1D) sub-cells no wider than SUB_STD of that component's smallest standard deviation: the
# midpoint rule then integrates every mode to near machine precision (a Gaussian sampled every 3/4 of a
# standard deviation), however narrow it is, while the regular cells resolve the broad structure between
# the modes. ``QuadGrid.coarse`` is the same construction with every cell twice as wide: the change
# between the two is the error estimate shown beside every value.

SUB_STD = 0.75  # sub-cells at most this many standard deviations of the narrowest component they cover
SPAN = 5.0  # cells within SPAN standard deviations (per axis) of a component are refined for it
MAX_SUB = 64  # at most this many sub-cells per axis in one cell


@dataclass
class Spots:
    """Where a grid must be fine: Gaussian components' means (M, D) and covariances (M, D, D)."""

    means: Tensor
    covs: Tensor


@dataclass
class QuadGrid:
    """Quadrature nodes over a box in 1D or 2D: ``points`` (N, D) and the log volume of each node's cell
    ``log_vol`` (N,), so that sum exp(log_vol) f(points) is the midpoint rule for the integral of f.
    ``shape`` is the regular grid before refinement (cells per axis), ``cell`` its cell length (1D) or
    area (2D), ``axes`` its cell centres per axis (x first), ``finest`` the smallest sub-cell side."""

    box: tuple[float, ...]
    shape: tuple[int, ...]
    points: Tensor  # (N, D)
    log_vol: Tensor  # (N,)
    axes: list[Tensor]
    cell: float
    finest: float
    refine: float = SUB_STD

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def n(self) -> int:
        return int(self.points.shape[0])

    @classmethod
    def over(cls, box: Sequence[float], resolution: int, target: "Target | Spots | None" = None, device=None,
             dtype=torch.float32, refine: float = SUB_STD) -> "QuadGrid":
        """``resolution`` cells per axis over ``box``, refined around the narrow components of ``target``
        (a Target, or any Spots)."""
        box = tuple(float(b) for b in box)
        d = len(box) // 2
        lo = torch.tensor(box[0::2], dtype=torch.float64)
        hi = torch.tensor(box[1::2], dtype=torch.float64)
        h = (hi - lo) / resolution  # (D,) cell sides
        axes = [lo[i] + h[i] * (torch.arange(resolution, dtype=torch.float64) + 0.5) for i in range(d)]
        m = torch.ones((resolution,) * d, dtype=torch.long)  # sub-cells per axis, per cell
        if target is not None:
            covs = target.covs.double().cpu()
            smin = torch.linalg.eigvalsh(covs).min(-1).values.sqrt()  # (M,) narrowest std of each component
            need = torch.ceil(h.max() / (refine * smin)).clamp(1, MAX_SUB).long()  # (M,)
            reach = SPAN * covs.diagonal(dim1=-2, dim2=-1).sqrt()  # (M, D)
            means = target.means.double().cpu()
            for k in torch.nonzero(need > 1)[:, 0].tolist():
                a = torch.floor((means[k] - reach[k] - lo) / h).clamp(0, resolution - 1).long()
                b = torch.floor((means[k] + reach[k] - lo) / h).clamp(0, resolution - 1).long()
                idx = tuple(slice(int(a[i]), int(b[i]) + 1) for i in range(d))
                m[idx] = torch.maximum(m[idx], need[k])
        pts, vols = [], []
        grids = torch.meshgrid(*axes, indexing="ij") if d == 2 else (axes[0],)
        centres = torch.stack([g.reshape(-1) for g in grids], 1)  # (R^D, D), x outer
        mflat = m.reshape(-1)
        for mv in torch.unique(mflat).tolist():
            c = centres[mflat == mv]  # (C, D)
            t = (torch.arange(mv, dtype=torch.float64) + 0.5) / mv - 0.5  # sub-cell centres in cell units
            off = t[:, None] if d == 1 else torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
            pts.append((c[:, None, :] + off[None] * h).reshape(-1, d))
            vols.append(torch.full((pts[-1].shape[0],), float(torch.log(h).sum()) - d * math.log(mv),
                                   dtype=torch.float64))
        points = torch.cat(pts).to(device=device, dtype=dtype)
        log_vol = torch.cat(vols).to(device=device, dtype=dtype)
        finest = float(h.min()) / int(mflat.max())
        return cls(box, (resolution,) * d, points, log_vol, [a.to(device=device, dtype=dtype) for a in axes],
                   float(h.prod()), finest, refine)

    def coarse(self, target: "Target | Spots | None") -> "QuadGrid":
        """The same construction with every cell and sub-cell twice as wide (the error estimate's grid)."""
        return QuadGrid.over(self.box, max(self.shape[0] // 2, 1), target, self.points.device, self.points.dtype,
                             2 * self.refine)

    def to(self, dtype) -> "QuadGrid":
        return QuadGrid(self.box, self.shape, self.points.to(dtype), self.log_vol.to(dtype),
                        [a.to(dtype) for a in self.axes], self.cell, self.finest, self.refine)

    def describe(self) -> str:
        r = self.shape[0]
        if self.dim == 1:
            base = f"{r} cells of length {self.cell:.3g} over [{self.box[0]:g}, {self.box[1]:g}]"
        else:
            base = (f"{r} × {r} cells of side {self.cell ** 0.5:.3g} over [{self.box[0]:g}, {self.box[1]:g}] × "
                    f"[{self.box[2]:g}, {self.box[3]:g}]")
        side = self.cell if self.dim == 1 else self.cell**0.5
        if self.finest < side * 0.999:
            base += (f", cut down to sub-cells of side {self.finest:.2g} (3/4 of the narrowest std) near the narrow "
                     f"modes: {self.n:,} nodes")
        return base


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
    if loc.shape[1] == 1:  # one component: no sum over components
        return gauss_comp_log_prob(x, loc, tril, log_w)[..., 0]
    return torch.logsumexp(gauss_comp_log_prob(x, loc, tril, log_w), -1)


def gauss_comp_log_prob(x: Tensor, loc: Tensor, tril: Tensor, log_w: Tensor) -> Tensor:
    """log w_k N(x; loc_k, tril_k tril_k^T) for every component: x (Q or 1, N, D) -> (Q, N, K)."""
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
    return (log_w[..., None] - 0.5 * sq - (logdet + 0.5 * d * LOG2PI)).transpose(1, 2)  # (Q, N, K)

