"""Metrics against hand-built sample sets and closed forms."""

import math

import pytest
import torch
from torch import distributions as D

import dgm.core.data as data
from dgm.core import metrics as M


def _on_modes(centers, counts, std=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = [centers[k].expand(n, 2) + std * torch.randn(n, 2, generator=g) for k, n in enumerate(counts) if n]
    return torch.cat(pts)


def test_all_samples_on_three_of_eight_modes():
    p = data.get("ring8")
    x = _on_modes(p.centers, [100, 100, 100, 0, 0, 0, 0, 0], std=0.005)
    s = M.mode_stats(x, p.centers, p.std)
    assert s["modes"] == 3
    assert s["high_quality"] == 1.0
    assert s["mode_kl"] == pytest.approx(math.log(8 / 3), abs=1e-9)


def test_half_the_samples_far_away():
    p = data.get("ring8")
    good = _on_modes(p.centers, [50] * 8)
    far = torch.full((400, 2), 10.0)
    s = M.mode_stats(torch.cat([good, far]), p.centers, p.std)
    assert s["modes"] == 8 and s["high_quality"] == 0.5 and s["mode_kl"] == pytest.approx(0.0, abs=1e-12)


def test_threshold_is_three_std_of_the_nearest_mode():
    p = data.get("grid25")
    c = p.centers[12]  # (0, 0)
    x = torch.stack([c + torch.tensor([2.9 * 0.05, 0.0]), c + torch.tensor([3.1 * 0.05, 0.0])])
    s = M.mode_stats(x, p.centers, p.std)
    assert s["high_quality"] == 0.5 and s["modes"] == 1


def test_a_share_threshold_ignores_modes_reached_only_by_a_tail():
    """``min_share``: a mode counts only when its samples are more than that share of all samples (far-away ones
    included in the total); the default counts a mode with one sample."""
    p = data.get("ring8")
    x = torch.cat([_on_modes(p.centers, [300, 300, 300, 10, 1, 0, 0, 0]), torch.full((89, 2), 10.0)])  # 1,000
    assert M.mode_stats(x, p.centers, p.std)["modes"] == 5
    assert M.mode_stats(x, p.centers, p.std, min_share=0.005)["modes"] == 4  # 10 > 5; 1 is not
    assert M.mode_stats(x, p.centers, p.std, min_share=0.01)["modes"] == 3  # 10 is not more than 1% of 1,000
    assert M.mode_stats(x, p.centers, p.std, min_share=0.3)["modes"] == 0  # 300 is not more than 300


def test_no_high_quality_sample_reads_as_collapsed():
    p = data.get("ring8")
    s = M.mode_stats(torch.zeros(10, 2), p.centers, p.std)
    assert s == {"modes": 0, "high_quality": 0.0, "mode_kl": pytest.approx(math.log(8))}


def test_nan_samples_are_never_high_quality():
    p = data.get("ring8")
    x = torch.cat([_on_modes(p.centers, [1] * 8), torch.full((8, 2), float("nan"))])
    assert M.mode_stats(x, p.centers, p.std)["high_quality"] == 0.5


def test_mode_kl_against_direct_formula():
    p = data.get("ring8")
    counts = [10, 20, 30, 40, 0, 0, 0, 0]
    s = M.mode_stats(_on_modes(p.centers, counts), p.centers, p.std)
    h = torch.tensor(counts, dtype=torch.float64) / 100
    ref = sum(float(v * math.log(v * 8)) for v in h if v > 0)
    assert s["mode_kl"] == pytest.approx(ref, rel=1e-9)


def test_mmd_between_two_points_matches_closed_form():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.4]])  # distance 0.5
    bws = (0.1, 1.0)
    ref = sum(2 * (1 - math.exp(-0.25 / (2 * s * s))) for s in bws)
    assert M.mmd2(a, b, bandwidths=bws) == pytest.approx(ref, rel=1e-6)


def test_mmd_is_zero_for_identical_sets_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g)
    assert M.mmd2(x, x) == pytest.approx(0.0, abs=1e-12)
    y = torch.randn(500, 2, generator=g)
    near, far = M.mmd2(x, y), M.mmd2(x, y + 1.0)
    assert 0 <= near < far
    assert abs(M.mmd2(x, y, unbiased=True)) < near + 1e-3


def _gauss(mean, cov):
    return D.MultivariateNormal(torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64))


def test_grid_kl_matches_closed_form():
    p, q = _gauss([0.3, -0.2], [[1.0, 0.3], [0.3, 0.6]]), _gauss([-0.4, 0.5], [[0.7, -0.2], [-0.2, 1.2]])
    grid = M.Grid.over((-9, 9, -9, 9), 400, dtype=torch.float64)
    kl = M.grid_kl(grid, p.log_prob(grid.points), q.log_prob(grid.points))
    assert kl == pytest.approx(float(D.kl_divergence(p, q)), abs=1e-3)


def test_grid_js_bounds_and_symmetry():
    grid = M.Grid.over((-6, 6, -6, 6), 300, dtype=torch.float64)
    p, q = _gauss([-1.0, 0], [[0.5, 0], [0, 0.5]]), _gauss([1.5, 0], [[0.3, 0], [0, 0.8]])
    lp, lq = p.log_prob(grid.points), q.log_prob(grid.points)
    js = M.grid_js(grid, lp, lq)
    assert 0 < js < math.log(2)
    assert js == pytest.approx(M.grid_js(grid, lq, lp), abs=1e-12)
    assert M.grid_js(grid, lp, lp) == pytest.approx(0.0, abs=1e-12)
    far = _gauss([4.5, 4.5], [[0.01, 0], [0, 0.01]])
    assert M.grid_js(grid, _gauss([-4.5, -4.5], [[0.01, 0], [0, 0.01]]).log_prob(grid.points),
                     far.log_prob(grid.points)) == pytest.approx(math.log(2), abs=1e-9)


def test_grid_kl_is_infinite_where_q_has_no_mass():
    grid = M.Grid.over((-4, 4, -4, 4), 100)
    p = data.get("bimodal").log_prob(grid.points)
    q = data.get("checkerboard").log_prob(grid.points)  # zero on half the board
    assert M.grid_kl(grid, p, q) == math.inf


def test_kde_integrates_to_one_and_matches_sklearn():
    from sklearn.neighbors import KernelDensity

    x = data.get("moons").sample(300, generator=torch.Generator().manual_seed(0)).double()
    grid = M.Grid.over((-6, 6, -6, 6), 300, dtype=torch.float64)
    lp = M.kde_log_prob(x, grid.points, bandwidth=0.2)
    assert grid.integral(lp.exp()) == pytest.approx(1.0, abs=1e-3)
    ref = KernelDensity(bandwidth=0.2).fit(x.numpy()).score_samples(x[:20].numpy())
    assert torch.allclose(M.kde_log_prob(x, x[:20], bandwidth=0.2), torch.from_numpy(ref), atol=1e-8)


def test_nll_is_mean_negative_log_density():
    q = _gauss([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    x = torch.zeros(5, 2, dtype=torch.float64)
    assert M.nll(q.log_prob, x) == pytest.approx(math.log(2 * math.pi), rel=1e-12)


# ---- Wasserstein-1 by exact optimal transport ---------------------------------------------------

def test_w1_of_two_1d_samples_is_the_mean_gap_between_sorted_values():
    """In 1D the optimal plan pairs the sorted samples: W1 = mean |x_(i) - y_(i)| for equal sizes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, generator=g, dtype=torch.float64)
    y = 0.5 + 2 * torch.rand(300, 1, generator=g, dtype=torch.float64)
    ref = float((x.sort(0).values - y.sort(0).values).abs().mean())
    assert M.wasserstein1(x, y) == pytest.approx(ref, rel=1e-9)
    # the same points on a line in the plane
    line = lambda t: torch.cat([t, torch.zeros_like(t)], 1)  # noqa: E731
    assert M.wasserstein1(line(x), line(y)) == pytest.approx(ref, rel=1e-9)


def test_w1_of_point_masses_translations_and_unequal_sizes():
    a, b = torch.tensor([[1.0, 2.0]]).expand(50, 2), torch.tensor([[4.0, -2.0]]).expand(70, 2)
    assert M.wasserstein1(a, b) == pytest.approx(5.0, rel=1e-12)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.3], dtype=torch.float64)
    t = torch.tensor([0.7, -2.4], dtype=torch.float64)
    assert M.wasserstein1(x, x + t) == pytest.approx(2.5, rel=1e-9)  # |t| = 2.5: moving every point by t
    assert M.wasserstein1(x, x) == pytest.approx(0.0, abs=1e-12)
    two, one = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    assert M.wasserstein1(two, one) == pytest.approx(1.0, rel=1e-12)
    nan = torch.tensor([[float("nan"), 0.0], [0.0, 0.0]])
    assert M.wasserstein1(nan, torch.zeros(3, 2)) == 0.0  # the non-finite row is dropped
