"""Metrics with one meaning everywhere (docs/ARCHITECTURE.md, "Definitions").

- Mode metrics (Metz et al. 2016; Srivastava et al. 2017): a sample is *high quality* when it
  lies within 3 std of its nearest mode centre; a mode is *captured* when it is the nearest
  centre of at least one high-quality sample; *mode KL* is KL(histogram of the nearest-mode
  assignments of the high-quality samples || uniform). Evaluate on 2,500 samples.
- MMD^2 with a Gaussian (RBF) kernel, a sum over several bandwidths (``mmd2``; ``MMD`` against a fixed
  reference set, faster).
- Exact divergences between two 2D densities by quadrature on a ``Grid``; the resolution is part
  of the result.
- Kernel density estimates: ``kde_log_prob`` at points, ``binned_kde`` on a whole grid.
- W1 (the earth mover's distance, Euclidean ground cost) between two sample sets by exact optimal
  transport (POT's network simplex): ``wasserstein1``. On a live page it runs on ``W1_SAMPLES`` points
  of each set (exact OT on 2,500 points takes seconds; bench/bench_w1.py measures it).
- NLL in nats per example.

Every sample-based figure is an estimate: two sets of true samples of p give MMD^2 > 0 (biased
estimate) and W1 > 0; pages show that "perfect generator" floor beside the curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

EVAL_SAMPLES = 2500
W1_SAMPLES = 1000  # points of each set for a live W1 (exact OT is about cubic in the set size)


# ---- mode collapse -----------------------------------------------------------------------------

def mode_stats(samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0,
               min_share: float = 0.0) -> dict[str, float]:
    """Modes captured, high-quality fraction and mode KL of ``samples`` (N, 2) against mixture
    ``centers`` (K, 2) of isotropic ``std``.

    A sample is high quality within ``threshold`` stds of its nearest centre. A mode is captured when its
    high-quality samples are more than ``min_share`` of all samples: with the default 0, a single sample
    captures it (the GAN literature's count); a density model whose tails reach every mode needs a share.

    With no high-quality sample at all, mode KL is reported as log K (its value when every sample
    sits on one mode): the histogram is undefined, and "collapsed" is the honest reading."""
    centers = centers.to(samples.device, samples.dtype)
    k = centers.shape[0]
    finite = torch.isfinite(samples).all(1)
    d = torch.cdist(samples, centers)  # (N, K)
    dmin, nearest = d.min(1)
    good = finite & (dmin <= threshold * std)
    counts = torch.bincount(nearest[good], minlength=k).double()  # (K,)
    n_good = counts.sum()
    if n_good > 0:
        h = counts / n_good
        mode_kl = float(torch.where(h > 0, h * torch.log(h * k), torch.zeros_like(h)).sum())
    else:
        mode_kl = math.log(k)
    return {
        "modes": int((counts > min_share * samples.shape[0]).sum()),
        "high_quality": float(n_good / max(samples.shape[0], 1)),
        "mode_kl": mode_kl,
    }


# ---- MMD ---------------------------------------------------------------------------------------

def mmd2(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.1, 0.3, 1.0, 3.0), unbiased: bool = False) -> float:
    """Squared MMD between samples x (N, D) and y (M, D) with the kernel
    k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2)) over the bandwidths s.

    The biased (V-statistic) estimate is >= 0 and is 0 for identical sample sets; the unbiased
    (U-statistic) one drops the diagonal terms and can be slightly negative."""
    x, y = x.double(), y.double()
    xx, yy, xy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    kxx = sum(torch.exp(-xx / (2 * s * s)) for s in bandwidths)
    kyy = sum(torch.exp(-yy / (2 * s * s)) for s in bandwidths)
    kxy = sum(torch.exp(-xy / (2 * s * s)) for s in bandwidths)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return float(sxx + syy - 2 * kxy.mean())


# ---- Wasserstein-1 -------------------------------------------------------------------------------

def wasserstein1(x: Tensor, y: Tensor) -> float:
    """W1 between the empirical distributions of x (N, D) and y (M, D), equal weights, Euclidean
    ground cost: the exact optimal transport cost (POT's network simplex, float64). Rows with a
    non-finite coordinate are dropped; NaN when a set is empty."""
    import ot  # imported on first use: POT takes about a second to import
    from scipy.spatial.distance import cdist

    a = x.detach().double().cpu().numpy()
    b = y.detach().double().cpu().numpy()
    a, b = a[np.isfinite(a).all(1)], b[np.isfinite(b).all(1)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    cost = cdist(a, b)  # (N, M) exact distances (0 for equal points)
    return float(ot.emd2(np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b)), cost, numItermax=10**8))


# ---- densities on a grid -----------------------------------------------------------------------

@dataclass
class Grid:
    """A regular grid of cell centres over a box: ``points`` (R*R, 2), ordered row by row (y
    outer, x inner) so that ``values.view(R, R)`` is a heatmap with x along columns."""

    box: tuple[float, float, float, float]
    resolution: int
    points: Tensor  # (R*R, 2)
    xs: Tensor  # (R,)
    ys: Tensor  # (R,)
    cell_area: float

    @classmethod
    def over(cls, box, resolution: int = 200, device=None, dtype=torch.float32) -> "Grid":
        xmin, xmax, ymin, ymax = box
        r = int(resolution)
        dx, dy = (xmax - xmin) / r, (ymax - ymin) / r
        xs = xmin + dx * (torch.arange(r, device=device, dtype=dtype) + 0.5)
        ys = ymin + dy * (torch.arange(r, device=device, dtype=dtype) + 0.5)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        return cls(tuple(map(float, box)), r, pts, xs, ys, dx * dy)

    def image(self, values: Tensor) -> Tensor:
        """(R*R,) -> (R, R) with rows along y and columns along x."""
        return values.reshape(self.resolution, self.resolution)

    def normalize(self, log_density: Tensor) -> Tensor:
        """Normalise a log density (known up to a constant) so that it integrates to 1 on the grid."""
        ld = log_density.double()
        return ld - (torch.logsumexp(ld, 0) + math.log(self.cell_area))

    def integral(self, density: Tensor) -> float:
        return float(density.double().sum() * self.cell_area)


def _log_cells(log_p: Tensor) -> Tensor:
    """Log cell probabilities (they sum to 1) from a log density on the grid (any constant)."""
    return torch.log_softmax(log_p.double().reshape(-1), 0)


def _kl_terms(la: Tensor, lb: Tensor) -> Tensor:
    """a * (log a - log b) per cell, from log cell probabilities, with 0 log 0 = 0 and
    a log(a / 0) = inf. Working in logs keeps tiny (subnormal) probabilities exact."""
    a = la.exp()
    out = a * (la - lb)
    return torch.where(la > -math.inf, out, torch.zeros_like(out))


def grid_kl(grid: Grid, log_p: Tensor, log_q: Tensor) -> float:
    """KL(p || q) in nats by quadrature on the grid. Both densities are renormalised on the grid,
    so unnormalised log densities are fine, and mass outside the box is ignored."""
    return float(_kl_terms(_log_cells(log_p), _log_cells(log_q)).sum())


def grid_js(grid: Grid, log_p: Tensor, log_q: Tensor) -> float:
    """Jensen-Shannon divergence in nats (between 0 and log 2) by quadrature on the grid."""
    lp, lq = _log_cells(log_p), _log_cells(log_q)
    lm = torch.logaddexp(lp, lq) - math.log(2)
    return float(0.5 * _kl_terms(lp, lm).sum() + 0.5 * _kl_terms(lq, lm).sum())


def kde_log_prob(samples: Tensor, points: Tensor, bandwidth: float | None = None, chunk: int = 8192) -> Tensor:
    """Gaussian kernel density estimate of ``samples`` (N, 2) evaluated at ``points`` (M, 2).
    The bandwidth defaults to Scott's rule, n^(-1/6) times the mean per-axis std."""
    samples = samples[torch.isfinite(samples).all(1)]
    n, d = samples.shape
    if bandwidth is None:
        bandwidth = float(samples.std(0).mean()) * n ** (-1.0 / (d + 4)) if n > 1 else 1.0
        bandwidth = max(bandwidth, 1e-3)
    h2 = bandwidth**2
    const = -math.log(n) - 0.5 * d * math.log(2 * math.pi * h2)
    out = []
    for part in points.split(chunk):
        sq = torch.cdist(part, samples) ** 2  # (m, N)
        out.append(torch.logsumexp(-sq / (2 * h2), 1) + const)
    return torch.cat(out)


def nll(log_prob: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """Negative log-likelihood in nats per example."""
    return float(-log_prob(x).mean())


def blur(values: Tensor, grid: Grid, bandwidth: float) -> Tensor:
    """Values on ``grid`` (R*R,) convolved with a Gaussian of std ``bandwidth`` (a separable blur by a
    discrete Gaussian normalised to sum 1, zero outside the box): (R*R,) float64."""
    r = grid.resolution
    xmin, xmax, ymin, ymax = grid.box
    img = values.double().reshape(1, 1, r, r)
    for axis, cell in ((3, (xmax - xmin) / r), (2, (ymax - ymin) / r)):
        h = bandwidth / cell
        rad = max(1, math.ceil(4 * h))
        t = torch.arange(-rad, rad + 1, dtype=torch.float64, device=img.device)
        k = torch.exp(-0.5 * (t / h) ** 2)
        k = (k / k.sum()).view(1, 1, *((1, -1) if axis == 3 else (-1, 1)))
        img = F.conv2d(img, k, padding=(0, rad) if axis == 3 else (rad, 0))
    return img.reshape(-1)


def binned_kde(samples: Tensor, grid: Grid, bandwidth: float) -> Tensor:
    """A Gaussian KDE of ``samples`` (N, 2) on ``grid``, by linear binning and a separable Gaussian blur
    (exact up to the binning, which spreads each sample over its 2 x 2 nearest cells: in expectation an
    extra smoothing of variance cell^2 / 6 per axis). Returns the density (R*R,), normalised on the grid
    (mass outside the box is dropped)."""
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
    dens = blur(hist, grid, bandwidth)
    total = dens.sum()
    return dens / (total * grid.cell_area) if total > 0 else torch.full_like(dens, 1.0 / (r * r * grid.cell_area))


class MMD:
    """``dgm.core.metrics.mmd2`` (biased, Gaussian kernels of bandwidths 0.1, 0.3, 1, 3) against a fixed
    reference set y, faster: the y-y term is computed once, and the kernels in float32 with float64 sums
    (it agrees with mmd2 to about 1e-6; tests/test_gan.py checks it)."""

    BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)
    MODE = "donot_use_mm_for_euclid_dist"  # exact distances: small ones matter for the 0.1 bandwidth

    def __init__(self, y: Tensor):
        self.y = y.float()
        self.kyy: float | None = None  # computed on first use (building a trainer stays cheap)

    def _krows(self, a: Tensor, b: Tensor, chunk: int = 256) -> Tensor:
        """Per row of a, the mean over b of the summed kernels (float64), a chunk of rows at a time
        (cache-sized buffers)."""
        rows = []
        for part in a.split(chunk):
            d = torch.cdist(part, b, compute_mode=self.MODE).pow_(2)  # (c, M) squared distances
            buf, k = torch.empty_like(d), torch.zeros_like(d)
            for s in self.BANDWIDTHS:  # the summed kernel, in [0, 4], in float32
                torch.mul(d, -0.5 / (s * s), out=buf)
                k += buf.exp_()
            rows.append(k.sum(1, dtype=torch.float64) / b.shape[0])  # one float64 sum per row (the slow part)
        return torch.cat(rows)

    def _kyy(self) -> float:
        if self.kyy is None:
            self.kyy = float(self._krows(self.y, self.y).mean())
        return self.kyy

    def mmd2(self, x: Tensor) -> float:
        return self.mmd2_se(x)[0]

    def mmd2_se(self, x: Tensor) -> tuple[float, float]:
        """MMD^2 and its first-order standard error over the draw of x (the reference set held fixed):
        MMD^2 = mean_i (s_i - 2 r_i) + E k(y, y') with s_i, r_i the mean kernel of x_i against x and
        against y, whose linearisation gives SE = 2 sd_i(s_i - r_i) / sqrt(n). It says how much the
        figure moves from one set of samples to another, not how far the biased estimate lies from 0
        (see the floor); near MMD = 0 the first-order term vanishes and the SE understates."""
        x = x.float()
        s, r = self._krows(x, x), self._krows(x, self.y)
        se = 2 * float((s - r).std()) / math.sqrt(x.shape[0]) if x.shape[0] > 1 else float("nan")
        return float(s.mean() - 2 * r.mean()) + self._kyy(), se

