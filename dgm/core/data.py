"""The data sets: 2D toy distributions and the 8x8 digits.

    import dgm.core.data
    p = dgm.core.data.get("ring8")
    x = p.sample(2500, generator=torch.Generator().manual_seed(0))   # (2500, 2)
    p.log_prob(x)                                                     # (2500,), exact

Every distribution has a name, a plotting ``box`` and ``sample(n, generator)``. Where the density
is known exactly, ``log_prob(x)`` gives it (every Gaussian mixture is built on torch.distributions);
elsewhere ``has_density`` is False and pages say that densities are only estimated. The energies
U1-U4 of Rezende & Mohamed (2015) have an unnormalised log density; they are sampled from a fine
grid (see ``Energy``).
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor
from torch import distributions as D

from dgm.core import toys

Box = tuple[float, float, float, float]  # (xmin, xmax, ymin, ymax)


class UnknownDistributionError(KeyError, ValueError):
    """Raised by ``get`` for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _gen_device(generator: torch.Generator | None, device) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


class Distribution2D:
    """Base class. Subclasses set ``name``, ``box``, ``description`` and implement ``_sample``."""

    name: str = ""
    description: str = ""
    box: Box = (-4.0, 4.0, -4.0, 4.0)
    has_density: bool = False  # log_prob is exact and normalised
    centers: Tensor | None = None  # (K, 2) mode centres, for the mode metrics (mixtures only)
    std: float | None = None  # isotropic std of the modes, for the mode metrics

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """n i.i.d. samples, (n, 2) float32 on the generator's device (else ``device``, else CPU)."""
        return self._sample(int(n), generator, _gen_device(generator, device))

    def _sample(self, n: int, g: torch.Generator | None, device: torch.device) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density at x (N, 2) -> (N,). Only where ``has_density``."""
        raise NotImplementedError(f"{self.name} has no exact density; it can only be estimated")

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        """log density up to an additive constant; equals log_prob where that exists."""
        return self.log_prob(x)

    def smoothed_log_prob(self, x: Tensor, s: float) -> Tensor:
        """log of the density convolved with N(0, s^2 I) at x (N, 2): exact, where the class knows it
        (every Gaussian mixture and the checkerboard); what a Gaussian kernel density estimate of
        bandwidth s converges to with many samples."""
        raise NotImplementedError(f"{self.name}: no closed form for its smoothed density")

    @property
    def has_unnormalized(self) -> bool:
        return self.has_density

    @functools.cached_property
    def entropy(self) -> float | None:
        """Differential entropy in nats, by quadrature on a 1,000 x 1,000 grid over a box
        padded around ``box`` (None where the density is unknown). This is the floor that a
        model's held-out NLL can approach."""
        if not self.has_density:
            return None
        xmin, xmax, ymin, ymax = self.box
        px, py = 0.25 * (xmax - xmin), 0.25 * (ymax - ymin)
        xs = torch.linspace(xmin - px, xmax + px, 1000, dtype=torch.float64)
        ys = torch.linspace(ymin - py, ymax + py, 1000, dtype=torch.float64)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        lp = self.log_prob(pts).double()
        cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
        p = lp.exp()
        plogp = torch.where(p > 0, p * lp, torch.zeros_like(p))
        return float(-(plogp.sum() * cell))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class GaussianMixture2D(Distribution2D):
    """A mixture of 2D Gaussians with exact density (torch.distributions.MixtureSameFamily)."""

    has_density = True

    def __init__(self, name: str, means, covs, weights=None, box: Box | None = None,
                 description: str = "", mode_std: float | None = None):
        self.name = name
        self.description = description
        self.means = torch.as_tensor(means, dtype=torch.float32)  # (K, 2)
        k = self.means.shape[0]
        covs = torch.as_tensor(covs, dtype=torch.float32)
        if covs.dim() == 0:
            covs = covs * torch.eye(2).expand(k, 2, 2)
        self.covs = covs  # (K, 2, 2)
        w = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.weights = w / w.sum()  # (K,)
        self.scale_tril = torch.linalg.cholesky(self.covs)  # (K, 2, 2)
        self.centers = self.means
        self.std = mode_std
        if box is None:
            pad = 3.0 * float(self.covs.diagonal(dim1=1, dim2=2).sqrt().max()) + 0.5
            lo, hi = self.means.min(0).values - pad, self.means.max(0).values + pad
            box = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
        self.box = box
        self._dist_cache: dict[torch.device, D.Distribution] = {}

    def dist(self, device=None) -> D.MixtureSameFamily:
        device = torch.device(device or "cpu")
        if device not in self._dist_cache:
            comp = D.MultivariateNormal(self.means.to(device), scale_tril=self.scale_tril.to(device))
            self._dist_cache[device] = D.MixtureSameFamily(D.Categorical(probs=self.weights.to(device)), comp)
        return self._dist_cache[device]

    def log_prob(self, x: Tensor) -> Tensor:
        return self.dist(x.device).log_prob(x)

    def smoothed_log_prob(self, x: Tensor, s: float) -> Tensor:
        """The convolution with N(0, s^2 I) is the mixture with every covariance increased by s^2 I."""
        dev = x.device
        covs = self.covs.to(dev, torch.float64) + s * s * torch.eye(2, device=dev, dtype=torch.float64)
        comp = D.MultivariateNormal(self.means.to(dev, torch.float64), covariance_matrix=covs)
        mix = D.MixtureSameFamily(D.Categorical(probs=self.weights.to(dev, torch.float64)), comp)
        return mix.log_prob(x.double())

    def _sample(self, n, g, device):
        # torch.distributions cannot take a generator, so sample by hand: component, then Gaussian.
        idx = torch.multinomial(self.weights.to(device), n, replacement=True, generator=g)  # (n,)
        eps = torch.randn(n, 2, 1, generator=g, device=device)
        return self.means.to(device)[idx] + (self.scale_tril.to(device)[idx] @ eps).squeeze(-1)


class Sampled2D(Distribution2D):
    """A distribution given only by a sampler (no closed-form density)."""

    def __init__(self, name: str, sampler: Callable, box: Box, description: str = ""):
        self.name, self._sampler, self.box, self.description = name, sampler, box, description

    def _sample(self, n, g, device):
        return self._sampler(n, g, device).float()


class Checkerboard(Distribution2D):
    """FFJORD's checkerboard: uniform on 8 of the 16 squares of side 2 in [-4, 4]^2.
    The density is exact: 1/32 on the black squares, 0 elsewhere."""

    name = "checkerboard"
    description = "uniform density on the black squares of a 4x4 checkerboard (exact, piecewise constant)"
    box = (-4.0, 4.0, -4.0, 4.0)
    has_density = True

    def _sample(self, n, g, device):
        x1 = torch.rand(n, generator=g, device=device) * 4 - 2
        x2_ = torch.rand(n, generator=g, device=device) - torch.randint(0, 2, (n,), generator=g, device=device) * 2
        x2 = x2_ + torch.floor(x1).remainder(2)
        return torch.stack([x1, x2], 1) * 2

    def log_prob(self, x: Tensor) -> Tensor:
        u = x / 2
        inside_x = (u[:, 0] >= -2) & (u[:, 0] < 2)
        v = u[:, 1] - torch.floor(u[:, 0]).remainder(2)
        inside_y = ((v >= 0) & (v < 1)) | ((v >= -2) & (v < -1))
        lp = torch.full_like(x[:, 0], -math.log(32.0))
        return torch.where(inside_x & inside_y, lp, torch.full_like(lp, -math.inf))

    #: the 8 black squares of side 2: (x lower corner, y lower corner)
    SQUARES = tuple((2 * i, 2 * (i % 2) + dy) for i in (-2, -1, 0, 1) for dy in (0, -4))

    def smoothed_log_prob(self, x: Tensor, s: float) -> Tensor:
        """1/32 times the sum over the black squares of the Gaussian mass of the square around x:
        a product of normal CDF differences per axis."""
        x = x.double()
        phi = lambda t: 0.5 * torch.erfc(-t / (s * math.sqrt(2)))  # noqa: E731  (the N(0, s^2) CDF)
        total = torch.zeros_like(x[:, 0])
        for a, b in self.SQUARES:
            total = total + (phi(a + 2 - x[:, 0]) - phi(a - x[:, 0])) * (phi(b + 2 - x[:, 1]) - phi(b - x[:, 1]))
        return torch.log(total / 32.0)


class Energy(Distribution2D):
    """An unnormalised density exp(-U(z)) (Rezende & Mohamed 2015, Table 1).

    U2-U4 do not decay along z1, so exp(-U) has no finite integral over the plane: like the paper's
    figures, everything here (the grid sampler below, grid metrics, the flows' reverse-KL fits, which
    add a steep wall outside the box) treats them as densities on the plotting box [-4, 4]^2.

    There is no exact sampler; ``sample`` draws from a 600 x 600 grid over ``box`` with
    probabilities proportional to exp(-U) at the cell centres, then jitters uniformly within the
    cell. That is a faithful picture of the target for plots and sample-based metrics."""

    def __init__(self, name: str, energy: Callable[[Tensor], Tensor], description: str):
        self.name, self._energy, self.description = name, energy, description
        self.box = (-4.0, 4.0, -4.0, 4.0)

    @property
    def has_unnormalized(self) -> bool:
        return True

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        return -self._energy(x)

    @functools.cached_property
    def _grid(self):
        r = 600
        xmin, xmax, ymin, ymax = self.box
        xs = torch.linspace(xmin, xmax, r + 1)[:-1] + (xmax - xmin) / (2 * r)
        ys = torch.linspace(ymin, ymax, r + 1)[:-1] + (ymax - ymin) / (2 * r)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        lp = self.unnormalized_log_prob(pts)
        return pts, torch.softmax(lp.double(), 0).float(), ((xmax - xmin) / r, (ymax - ymin) / r)

    def _sample(self, n, g, device):
        pts, probs, (cx, cy) = self._grid
        idx = torch.multinomial(probs.to(device), n, replacement=True, generator=g)
        jitter = (torch.rand(n, 2, generator=g, device=device) - 0.5) * torch.tensor([cx, cy], device=device)
        return pts.to(device)[idx] + jitter


# ---- the registry ---------------------------------------------------------------------------

def _ring8():
    k = torch.arange(8, dtype=torch.float64)
    means = 2.0 * torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], 1)
    return GaussianMixture2D("ring8", means.float(), torch.tensor(0.02**2), box=(-3.0, 3.0, -3.0, 3.0),
                             mode_std=0.02, description="8 Gaussians on a circle of radius 2, std 0.02")


def _grid25():
    v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    gx, gy = torch.meshgrid(v, v, indexing="xy")
    means = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    return GaussianMixture2D("grid25", means, torch.tensor(0.05**2), box=(-6.0, 6.0, -6.0, 6.0),
                             mode_std=0.05, description="25 Gaussians on the grid {-4,-2,0,2,4}^2, std 0.05")


def _eight_gaussians():
    s = 1.0 / math.sqrt(2)
    c = torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]) * 4 / 1.414
    std = 0.5 / 1.414
    return GaussianMixture2D("8gaussians", c, torch.tensor(std**2), box=(-4.5, 4.5, -4.5, 4.5), mode_std=std,
                             description="FFJORD's 8 Gaussians: radius 2.83, std 0.354")


def _bimodal():
    means = [(-1.6, -0.6), (1.9, 0.9)]
    covs = [[[0.45, 0.15], [0.15, 0.30]], [[0.25, -0.08], [-0.08, 0.40]]]
    return GaussianMixture2D("bimodal", means, covs, weights=[0.6, 0.4], box=(-4.0, 4.0, -4.0, 4.0),
                             description="two asymmetric Gaussians, weights 0.6 and 0.4")


def _trimodal():
    means = [(-2.0, -1.2), (2.0, -1.0), (0.2, 2.0)]
    covs = [[[0.40, 0.10], [0.10, 0.25]], [[0.20, -0.05], [-0.05, 0.35]], [[0.30, 0.0], [0.0, 0.15]]]
    return GaussianMixture2D("trimodal", means, covs, weights=[0.5, 0.3, 0.2], box=(-4.0, 4.0, -4.0, 4.0),
                             description="three asymmetric Gaussians, weights 0.5, 0.3 and 0.2")


_FACTORIES: dict[str, Callable[[], Distribution2D]] = {
    "ring8": _ring8,
    "grid25": _grid25,
    "8gaussians": _eight_gaussians,
    "bimodal": _bimodal,
    "trimodal": _trimodal,
    "checkerboard": Checkerboard,
    "2spirals": lambda: Sampled2D("2spirals", toys.two_spirals, (-4.0, 4.0, -4.0, 4.0), "two interleaved spirals"),
    "pinwheel": lambda: Sampled2D("pinwheel", toys.pinwheel, (-4.0, 4.0, -4.0, 4.0), "five curved arms"),
    "rings": lambda: Sampled2D("rings", toys.rings, (-4.0, 4.0, -4.0, 4.0), "four concentric rings"),
    "circles": lambda: Sampled2D("circles", toys.circles, (-4.0, 4.0, -4.0, 4.0), "two concentric circles"),
    "moons": lambda: Sampled2D("moons", toys.moons, (-4.0, 4.0, -4.0, 4.0), "two interleaved half-moons"),
    "swissroll": lambda: Sampled2D("swissroll", toys.swissroll, (-4.0, 4.0, -4.0, 4.0), "a 2D swiss roll"),
    "U1": lambda: Energy("U1", toys.U1, "ring with two lobes (Rezende & Mohamed U1)"),
    "U2": lambda: Energy("U2", toys.U2, "sine wave (U2)"),
    "U3": lambda: Energy("U3", toys.U3, "sine wave with a split branch (U3)"),
    "U4": lambda: Energy("U4", toys.U4, "sine wave with a shifted sigmoid branch (U4)"),
}

MIXTURES = ("ring8", "grid25", "8gaussians", "bimodal", "trimodal")
ENERGIES = ("U1", "U2", "U3", "U4")


def names(kind: str | None = None) -> list[str]:
    """All registered names; kind = 'mixture' | 'energy' | 'exact' | 'sampled' filters them."""
    all_names = list(_FACTORIES)
    if kind is None:
        return all_names
    if kind == "mixture":
        return [n for n in all_names if n in MIXTURES]
    if kind == "energy":
        return [n for n in all_names if n in ENERGIES]
    if kind == "exact":
        return [n for n in all_names if n not in ENERGIES and get(n).has_density]
    if kind == "sampled":
        return [n for n in all_names if n not in ENERGIES]
    raise ValueError(f"unknown kind {kind!r}")


@functools.lru_cache(maxsize=None)
def _builtin(name: str) -> Distribution2D:
    return _FACTORIES[name]()


#: data sets made at run time (your own data, dgm.core.userdata), by name. Their names are content
#: addresses, so sessions with the same data share one. A data set stays while anything holds it (a
#: session, a trainer): ``_HELD`` sees only those, weakly, so no number of other uploads can evict it. Of
#: those nobody holds any longer, the KEEP_UNHELD used last stay too (a link or a cache may name them).
_HELD: "weakref.WeakValueDictionary[str, Distribution2D]" = weakref.WeakValueDictionary()
_RECENT: "OrderedDict[str, Distribution2D]" = OrderedDict()
KEEP_UNHELD = 64
_LOCK = threading.Lock()


def register(dist: Distribution2D) -> None:
    """Make a data set built at run time resolvable by ``get(dist.name)`` (names contain a colon) for as
    long as something holds ``dist``, and a while after (see ``KEEP_UNHELD``)."""
    if ":" not in dist.name:
        raise ValueError(f"run-time data sets are named 'kind:id', not {dist.name!r}")
    with _LOCK:
        _HELD[dist.name] = dist
        _RECENT[dist.name] = dist
        _RECENT.move_to_end(dist.name)
        while len(_RECENT) > KEEP_UNHELD:
            _RECENT.popitem(last=False)  # still resolvable if someone holds it (it is in _HELD)


def lookup(name: str) -> Distribution2D | None:
    """A run-time data set, or None."""
    with _LOCK:
        d = _HELD.get(name)
        if d is not None and name in _RECENT:
            _RECENT.move_to_end(name)
        return d


def get(name: str) -> Distribution2D:
    """The distribution called ``name``; an unknown name raises UnknownDistributionError."""
    if ":" in name and (d := lookup(name)) is not None:
        return d
    if name not in _FACTORIES:
        raise UnknownDistributionError(f"unknown distribution {name!r}; valid names: {', '.join(names())}")
    return _builtin(name)
