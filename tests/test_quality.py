"""Sample-quality metrics (dgm/core/quality.py) against references: the prdc package (Naeem et al.'s code),
the Fréchet distance's closed form, the Inception-style score's extremes, and the digits classifier's
scores of real test digits and of noise."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from dgm.core import quality
from dgm.core.digits import digits


def _points(seed: int, n: int, shift: float = 0.0, d: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


@pytest.mark.parametrize("shift,d,k", [(0.0, 2, 5), (0.7, 2, 3), (1.5, 5, 5), (0.3, 8, 10)])
def test_prdc_matches_the_reference_implementation(shift, d, k):
    prdc_ref = pytest.importorskip("prdc")  # pinned in requirements-dev.txt
    real, fake = _points(1, 400, d=d), _points(2, 300, shift, d=d)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        ref = prdc_ref.compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)
    ours = quality.prdc(real, fake, k=k)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-12), key


def test_prdc_reads_collapse_as_low_recall_and_scatter_as_low_precision():
    real = _points(3, 500)
    collapsed = real[:20].repeat(25, 1) + 1e-3 * _points(4, 500)  # every sample near 20 real points
    scattered = 4 * _points(5, 500)  # covers the data and much more
    c, s = quality.prdc(real, collapsed), quality.prdc(real, scattered)
    assert c["precision"] > 0.95 and c["recall"] < 0.1 and c["coverage"] < 0.3
    assert s["precision"] < 0.5 and s["recall"] > 0.9


def test_frechet_matches_the_closed_form_for_two_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([2.0, 0.5, 0.0])
    # closed form for commuting (here diagonal) covariances: sum (sqrt(s1_i) - sqrt(s2_i))^2
    d1, d2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    assert quality.frechet_gaussians(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-12)
    # general covariances: FID's tr (s1 s2)^(1/2) from scipy's sqrtm
    from scipy.linalg import sqrtm

    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert quality.frechet_gaussians(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    # from samples: converges to the Gaussians' distance
    g = torch.Generator().manual_seed(0)
    l1, l2 = torch.linalg.cholesky(torch.tensor(s1)), torch.linalg.cholesky(torch.tensor(s2))
    x = torch.tensor(mu1) + torch.randn(200_000, 3, generator=g, dtype=torch.float64) @ l1.T
    y = torch.tensor(mu2) + torch.randn(200_000, 3, generator=g, dtype=torch.float64) @ l2.T
    assert quality.frechet(x, y) == pytest.approx(ref, rel=0.02)


def test_inception_score_extremes():
    certain_balanced = torch.eye(10).repeat(30, 1)
    assert quality.inception_score(certain_balanced) == pytest.approx(10.0, rel=1e-9)
    assert quality.inception_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0, rel=1e-9)
    assert quality.inception_score(torch.eye(10)[[3] * 40]) == pytest.approx(1.0, rel=1e-9)  # one class only


def test_digits_scores_real_digits_near_the_ideal_and_noise_far_from_it():
    d = digits()
    assert quality.digits_accuracy() > 0.93
    test = quality.digits_scores(d.test.x01)
    train = quality.digits_scores(d.train.x01)
    noise = quality.digits_scores(torch.rand(500, 64, generator=torch.Generator().manual_seed(0)))
    assert test["digits_fid"] == pytest.approx(0.0, abs=1e-6)  # the reference set itself
    assert train["digits_fid"] < 10 and noise["digits_fid"] > 10 * train["digits_fid"]
    assert train["digits_is"] > 8.5 and noise["digits_is"] < train["digits_is"] - 3
    assert train["confident"] > 0.9 > noise["confident"] + 0.3
    assert train["fid_n"] == 1197


def test_the_nearest_digit_ratio_is_one_for_new_digits_zero_for_copies_and_large_for_noise():
    d = digits()
    assert quality.nearest_digit_ratio(d.test.x01) == pytest.approx(1.0, abs=1e-12)  # its own reference
    assert quality.nearest_digit_ratio(d.train.x01) == 0.0  # copies of the training digits
    noise = quality.nearest_digit_ratio(torch.rand(500, 64, generator=torch.Generator().manual_seed(0)))
    assert noise > 3
    with_nan = torch.cat([d.test.x01, torch.full((3, 64), float("nan"))])
    assert quality.nearest_digit_ratio(with_nan) == pytest.approx(1.0, abs=1e-12)  # non-finite rows left out
    assert math.isnan(quality.nearest_digit_ratio(torch.full((2, 64), float("nan"))))
