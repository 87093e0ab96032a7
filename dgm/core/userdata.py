"""Your own 2D data: a CSV upload or a drawing, turned into a distribution every 2D page can use.

    points = parse_csv(raw_bytes)           # (N, 2) float64, or UserDataError naming the problem
    dist, scaling = make_distribution(points)
    dgm.core.data.get(dist.name)                  # "custom:1a2b3c4d", usable by any trainer

The points are standardised (centred, and scaled so that the larger per-axis std is 1.3) to fit
the plotting box the built-in data sets use; ``Scaling`` records what was done so pages can show it.
The distribution is the Gaussian kernel density estimate of the points (Scott's bandwidth):
``sample`` draws from it exactly (a point, then Gaussian jitter) and ``log_prob`` is its density,
which pages present as an *estimate* of the data's density (``estimated = True``).

What a model's setup costs must not grow with the upload: trainers evaluate ``log_prob`` on grids of
tens of thousands of cells, each against every point. So a data set of more than ``MODEL_POINTS``
points is represented by a fixed random subsample of that many (the same for the same data), and the
page says so (``Scaling.describe``); its entropy comes from a binned estimate on a grid.

The registry (``dgm.core.data.register``) keeps a data set while someone holds it: a session keeps its
``EmpiricalKDE`` object, so no other session's uploads can evict it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import dgm.core.data
from dgm.core.data import Distribution2D
from dgm.core.metrics import Grid, binned_kde, kde_log_prob

MAX_BYTES = 20 * 1024 * 1024  # larger uploads are refused before parsing
MAX_ROWS = 100_000  # more rows are refused (a plot of 10^5 points is already dense)
MIN_POINTS = 10
MAX_ABS = 1e6  # coordinates beyond this are refused (1e300 would overflow every computation)
SAME_REL = 1e-9  # points that differ by less than this fraction of their size count as one point
MODEL_POINTS = 2000  # the models use at most this many points (a fixed subsample): see the docstring
CACHE_MIN_ROWS, CACHE_ENTRIES = 10_000, 4  # EmpiricalKDE.log_prob remembers this many grids of this size
TARGET_STD = 1.3
CUSTOM = "custom"  # the choice that selects the session's own data in a page's data knob


class UserDataError(ValueError):
    """Bad user data; the message names the problem in words a student understands."""


@dataclass(frozen=True)
class Scaling:
    """x_model = (x_raw - center) / scale"""

    center: tuple[float, float]
    scale: float
    n_points: int
    n_used: int = 0  # the points the models use (a fixed subsample of n_points); 0: all of them

    def describe(self) -> str:
        cx, cy = self.center
        if self.center == (0.0, 0.0) and self.scale == 1.0:
            text = f"{self.n_points:,} points, kept where they are (not centred or rescaled)."
        else:
            text = (f"{self.n_points:,} points, centred by subtracting ({cx:.4g}, {cy:.4g}) and divided by "
                    f"{self.scale:.4g} so that the wider axis has standard deviation {TARGET_STD}.")
        if self.n_used and self.n_used < self.n_points:
            text += (f" The models use {self.n_used:,} of them, a fixed random subsample, so that setting a "
                     "model up costs the same whatever the size of the file.")
        return text


def parse_csv(raw: bytes) -> np.ndarray:
    """Two numeric columns, with or without a header row -> (N, 2) float64."""
    if raw is None or len(raw) == 0:
        raise UserDataError("The file is empty.")
    if len(raw) > MAX_BYTES:
        raise UserDataError(f"The file is {len(raw) / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB.")
    if b"\x00" in raw[:8192]:
        raise UserDataError("This is not a text file (it contains binary data). Upload a CSV with two numeric columns.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserDataError("The file is not UTF-8 text. Save it as a UTF-8 CSV and upload it again.") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserDataError("The file has no rows.")
    if len(lines) > MAX_ROWS + 1:
        raise UserDataError(f"The file has {len(lines):,} rows; the limit is {MAX_ROWS:,}. Subsample it first.")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t ")
        delim = dialect.delimiter
    except csv.Error:
        delim = ","
    rows = list(csv.reader(lines, delimiter=delim, skipinitialspace=True))
    rows = [[c.strip() for c in r if c.strip() != ""] for r in rows]
    widths = {len(r) for r in rows}
    if widths != {2}:
        bad = next(i for i, r in enumerate(rows) if len(r) != 2)
        raise UserDataError(f"Every row needs exactly two columns (x and y); row {bad + 1} has {len(rows[bad])}.")
    start = 0
    if not _numeric_row(rows[0]):
        start = 1  # a header
    if len(rows) - start == 0:
        raise UserDataError("The file has a header but no data rows.")
    values = np.empty((len(rows) - start, 2))
    for i, r in enumerate(rows[start:], start=start):
        for j, cell in enumerate(r):
            try:
                v = float(cell)
            except ValueError:
                raise UserDataError(f"Row {i + 1}, column {j + 1} is {cell[:30]!r}, not a number.") from None
            if not math.isfinite(v):
                raise UserDataError(f"Row {i + 1}, column {j + 1} is {cell!r}; NaN and infinity are not allowed.")
            if abs(v) > MAX_ABS:
                raise UserDataError(f"Row {i + 1}, column {j + 1} is {cell}; values must lie within ±{MAX_ABS:g}.")
            values[i - start, j] = v
    return check_points(values)


def _numeric_row(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
        return True
    except ValueError:
        return False


def check_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise UserDataError("Points must have two coordinates each.")
    if len(pts) < MIN_POINTS:
        raise UserDataError(f"There are {len(pts)} points; at least {MIN_POINTS} are needed.")
    if not np.isfinite(pts).all():
        raise UserDataError("Some coordinates are NaN or infinite.")
    size = float(np.abs(pts).max())
    if float(pts.std(0).max()) <= SAME_REL * max(size, np.finfo(np.float64).tiny):
        raise UserDataError("All the points are the same (they differ by less than a billionth of their size); "
                            "there is no distribution to learn.")
    return pts


def standardise(points: np.ndarray) -> tuple[np.ndarray, Scaling]:
    center = points.mean(0)
    scale = float(points.std(0).max()) / TARGET_STD
    return (points - center) / scale, Scaling((float(center[0]), float(center[1])), scale, len(points))


class EmpiricalKDE(Distribution2D):
    """The Gaussian KDE of a point set: sample exactly from it, evaluate its density."""

    estimated = True
    has_density = True

    def __init__(self, name: str, points: np.ndarray, description: str = "your data"):
        self.name, self.description = name, description
        self.points = torch.as_tensor(points, dtype=torch.float32)  # (N, 2)
        n = len(points)
        self.bandwidth = max(float(self.points.std(0).mean()) * n ** (-1.0 / 6.0), 0.02)
        lo, hi = self.points.min(0).values, self.points.max(0).values
        pad = 3 * self.bandwidth + 0.5
        half = float(max(hi[0] - lo[0], hi[1] - lo[1])) / 2 + pad
        cx, cy = float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2
        self.box = (cx - half, cx + half, cy - half, cy + half)

    def _sample(self, n, g, device):
        idx = torch.randint(0, len(self.points), (n,), generator=g, device=device)
        return self.points.to(device)[idx] + self.bandwidth * torch.randn(n, 2, generator=g, device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        """The KDE's log density at x (N, 2). Trainers evaluate it on the same grids at every build (a reset,
        a new seed, a worker process): the last few large evaluations are remembered, by content."""
        if x.shape[0] < CACHE_MIN_ROWS:
            return kde_log_prob(self.points.to(x.device, x.dtype), x, bandwidth=self.bandwidth)
        key = (str(x.device), str(x.dtype), hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest())
        cache = self.__dict__.setdefault("_cache", OrderedDict())  # pickled with the data set, to the workers
        hit = cache.get(key)
        if hit is None:  # (two sessions may fill it at once: the worst case is a value computed twice)
            hit = kde_log_prob(self.points.to(x.device, x.dtype), x, bandwidth=self.bandwidth)
            cache[key] = hit
            while len(cache) > CACHE_ENTRIES:
                cache.pop(next(iter(cache)), None)
        return hit.clone()

    @functools.cached_property
    def entropy(self) -> float:
        """Differential entropy in nats, by quadrature of the KDE binned on a 400 x 400 grid over the box
        padded as ``Distribution2D.entropy`` pads it (exact up to the binning, which moves mass by at most
        one cell): the same number, without evaluating the density a million times."""
        xmin, xmax, ymin, ymax = self.box
        px, py = 0.25 * (xmax - xmin), 0.25 * (ymax - ymin)
        grid = Grid.over((xmin - px, xmax + px, ymin - py, ymax + py), 400, dtype=torch.float64)
        p = binned_kde(self.points.double(), grid, self.bandwidth)
        plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
        return float(-(plogp.sum() * grid.cell_area))


def make_distribution(points: np.ndarray, description: str = "your data",
                      rescale: bool = True) -> tuple[EmpiricalKDE, Scaling]:
    """Standardise the points (unless ``rescale`` is False: a drawing keeps where it was drawn) and register
    their KDE under a content-addressed name (of all the points; the KDE is of at most ``MODEL_POINTS`` of
    them)."""
    pts = check_points(points)
    std_pts, scaling = standardise(pts) if rescale else (pts, Scaling((0.0, 0.0), 1.0, len(pts)))
    digest = hashlib.sha256(np.ascontiguousarray(std_pts, dtype=np.float32).tobytes()).hexdigest()[:10]
    name = f"{CUSTOM}:{digest}"
    used = std_pts
    if len(std_pts) > MODEL_POINTS:
        keep = np.random.default_rng(0).permutation(len(std_pts))[:MODEL_POINTS]
        used = std_pts[np.sort(keep)]
    scaling = dataclasses.replace(scaling, n_used=len(used))
    dist = dgm.core.data.lookup(name)
    if dist is None:
        dist = EmpiricalKDE(name, used, description)
        dgm.core.data.register(dist)
    return dist, scaling


def rebuild(name: str, points: np.ndarray | Tensor, description: str) -> EmpiricalKDE:
    """A data set from its name and the points its density is made of (kept by a server for a link): the
    same name, the same density and samples as the one that was made from the user's file."""
    dist = dgm.core.data.lookup(name)
    if dist is None:
        dist = EmpiricalKDE(name, points, description)
        dgm.core.data.register(dist)
    return dist


def spray(centers: np.ndarray, per_point: int, width: float, noise: float, seed: int = 0) -> np.ndarray:
    """Points for a drawing: around each brushed location, ``per_point`` points spread uniformly
    in a disc of radius ``width``, plus Gaussian ``noise``."""
    rng = np.random.default_rng(seed)
    c = np.repeat(np.asarray(centers, dtype=np.float64).reshape(-1, 2), per_point, axis=0)
    r = width * np.sqrt(rng.random(len(c)))
    t = 2 * math.pi * rng.random(len(c))
    return c + np.stack([r * np.cos(t), r * np.sin(t)], 1) + noise * rng.standard_normal(c.shape)

