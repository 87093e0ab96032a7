"""The Divergences backend against references: closed forms, torch.distributions, brute-force sums,
quadrature, and the two textbook behaviours (forward KL matches moments; reverse KL seeks a mode)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

import dgm.core.data
from dgm.core import cli
from dgm.families.divergences import figures as vd
from dgm.families.divergences.model import (
    QBatch, all_divergences, amari, gaussian_kl, grid_mmd2, hellinger2, kl, sample_mmd2,
)
from dgm.families.divergences.targets import QuadGrid, gauss_log_prob, make_target, mixture_moments
from dgm.families.divergences.trainer import OBJECTIVES, DivergenceConfig, DivergenceTrainer, restarts


def _lq(grid: QuadGrid, mean, cov) -> torch.Tensor:
    """Log cell probabilities of N(mean, cov) on the grid, via torch.distributions."""
    mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    return torch.log_softmax(D.MultivariateNormal(mean, cov).log_prob(grid.points.double()), 0)


# ---- quadrature against closed forms -------------------------------------------------------------

@pytest.mark.parametrize("m0,c0,m1,c1", [
    ([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], [1.0, -0.5], [[2.0, 0.3], [0.3, 0.5]]),
    ([0.5, 1.0], [[0.4, -0.2], [-0.2, 0.6]], [-1.0, 0.0], [[1.5, 0.0], [0.0, 1.5]]),
])
def test_grid_kl_between_gaussians_matches_closed_form(m0, c0, m1, c1):
    grid = QuadGrid.over((-10, 10, -10, 10), 256, dtype=torch.float64)
    got = float(kl(_lq(grid, m0, c0), _lq(grid, m1, c1)))
    ref = float(D.kl_divergence(D.MultivariateNormal(torch.tensor(m0).double(), torch.tensor(c0).double()),
                                D.MultivariateNormal(torch.tensor(m1).double(), torch.tensor(c1).double())))
    assert abs(got - ref) < 1e-3
    assert abs(gaussian_kl(torch.tensor(m0), torch.tensor(c0), torch.tensor(m1), torch.tensor(c1)) - ref) < 1e-9


def test_grid_kl_1d_matches_closed_form():
    grid = QuadGrid.over((-12, 12), 2000, dtype=torch.float64)
    lp = _lq(grid, [0.3], [[0.49]])
    lq = _lq(grid, [-1.0], [[2.25]])
    ref = math.log(1.5 / 0.7) + (0.49 + 1.3**2) / (2 * 2.25) - 0.5
    assert abs(float(kl(lp, lq)) - ref) < 1e-3


def test_hellinger_and_amari_closed_forms_for_gaussians():
    """Bhattacharyya coefficient of two 1D Gaussians:
    sqrt(2 s0 s1 / (s0^2 + s1^2)) exp(-(m0 - m1)^2 / (4 (s0^2 + s1^2)))."""
    grid = QuadGrid.over((-15, 15), 3000, dtype=torch.float64)
    m0, s0, m1, s1 = 0.0, 1.0, 1.5, 2.0
    lp, lq = _lq(grid, [m0], [[s0**2]]), _lq(grid, [m1], [[s1**2]])
    bc = math.sqrt(2 * s0 * s1 / (s0**2 + s1**2)) * math.exp(-((m0 - m1) ** 2) / (4 * (s0**2 + s1**2)))
    assert abs(float(hellinger2(lp, lq)) - (1 - bc)) < 1e-6
    assert abs(float(amari(lp, lq, 0.5)) - 4 * (1 - bc)) < 1e-5
    # the alpha family reaches both KLs at its ends, continuously
    assert abs(float(amari(lp, lq, 1e-4)) - float(kl(lq, lp))) < 1e-3
    assert abs(float(amari(lp, lq, 1 - 1e-4)) - float(kl(lp, lq))) < 1e-3
    assert float(amari(lp, lq, 0.0)) == pytest.approx(float(kl(lq, lp)))


# ---- properties of every divergence --------------------------------------------------------------

def _random_mixture_lq(grid, g, k):
    loc = 3 * torch.rand(1, k, 2, generator=g, dtype=torch.float64) - 1.5
    q = QBatch(loc, torch.log(0.3 + torch.rand(1, k, 2, generator=g, dtype=torch.float64)))
    with torch.no_grad():
        q.off.copy_(torch.randn(1, k, generator=g, dtype=torch.float64) * 0.5)
        q.logits.copy_(torch.randn(1, k, generator=g, dtype=torch.float64))
        return torch.log_softmax(q.log_prob(grid.points.double())[0], 0)


@pytest.mark.parametrize("alpha", [-1.0, 0.0, 0.3, 0.5, 1.0, 2.0])
def test_every_divergence_is_nonnegative_bounded_and_zero_for_equal(alpha):
    grid = QuadGrid.over((-5, 5, -5, 5), 64, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for trial in range(12):
        lp = _random_mixture_lq(grid, g, 1 + trial % 3)
        lq = _random_mixture_lq(grid, g, 1 + (trial + 1) % 3)
        d = all_divergences(lp, lq, grid, alpha, 0.7)
        assert set(d) == set(OBJECTIVES)
        for name, v in d.items():
            assert float(v) >= -1e-12, (name, float(v))
        assert float(d["js"]) <= math.log(2) + 1e-12
        assert float(d["hellinger"]) <= 1 + 1e-12 and float(d["tv"]) <= 1 + 1e-12
        same = all_divergences(lp, lp.clone(), grid, alpha, 0.7)
        for name, v in same.items():
            assert abs(float(v)) < 1e-12, (name, float(v))


def test_js_reaches_log2_for_disjoint_supports():
    grid = QuadGrid.over((-10, 10), 400, dtype=torch.float64)
    lp, lq = _lq(grid, [-6.0], [[0.1]]), _lq(grid, [6.0], [[0.1]])
    d = all_divergences(lp, lq, grid, 0.5, 1.0)
    assert float(d["js"]) == pytest.approx(math.log(2), abs=1e-9)
    assert float(d["tv"]) == pytest.approx(1.0, abs=1e-9)


def test_grid_mmd_equals_brute_force_quadratic_form():
    grid = QuadGrid.over((-3, 3, -2, 2), 20, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    lp, lq = _random_mixture_lq(grid, g, 2), _random_mixture_lq(grid, g, 1)
    diff = lp.exp() - lq.exp()
    k = torch.exp(-0.5 * torch.cdist(grid.points, grid.points) ** 2 / 0.8**2)
    assert float(grid_mmd2(lp, lq, grid, 0.8)) == pytest.approx(float(diff @ k @ diff), rel=1e-10)
    g1 = QuadGrid.over((-3, 3), 50, dtype=torch.float64)
    lp1, lq1 = _lq(g1, [0.0], [[1.0]]), _lq(g1, [0.5], [[0.5]])
    d1 = lp1.exp() - lq1.exp()
    k1 = torch.exp(-0.5 * torch.cdist(g1.points, g1.points) ** 2 / 0.8**2)
    assert float(grid_mmd2(lp1, lq1, g1, 0.8)) == pytest.approx(float(d1 @ k1 @ d1), rel=1e-10)


def test_sample_mmd_is_unbiased_for_the_exact_value():
    """The mean of the unbiased sample estimate matches the exact MMD^2 (grid quadrature)."""
    p = make_target("bimodal")
    grid = QuadGrid.over((-8, 8, -8, 8), 128, dtype=torch.float64)
    lp = torch.log_softmax(p.log_prob(grid.points.double()), 0)
    lq = _lq(grid, [0.0, 0.0], [[2.0, 0.0], [0.0, 1.0]])
    exact = float(grid_mmd2(lp, lq, grid, 1.0))
    g = torch.Generator().manual_seed(0)
    x = p.sample(200 * 64, g).double().reshape(64, 200, 2)
    y = (torch.randn(64, 200, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0]).double().sqrt())
    est = sample_mmd2(x, y, torch.full((64, 200), 1 / 200, dtype=torch.float64), 1.0)
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / 8 + 1e-3


# ---- densities and moments ----------------------------------------------------------------------

def test_gauss_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    q = QBatch(torch.randn(3, 4, 2, generator=g, dtype=torch.float64),
               0.3 * torch.randn(3, 4, 2, generator=g, dtype=torch.float64))
    with torch.no_grad():
        q.off.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))
        q.logits.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))
    x = torch.randn(50, 2, generator=g, dtype=torch.float64)
    got = q.log_prob(x)
    for i in range(3):
        ref = D.MixtureSameFamily(D.Categorical(logits=q.logits[i].detach()),
                                  D.MultivariateNormal(q.loc[i].detach(), scale_tril=q.tril()[i].detach()))
        torch.testing.assert_close(got[i].detach(), ref.log_prob(x))
    # 1D
    loc, ls = torch.tensor([[[0.5], [-1.0]]], dtype=torch.float64), torch.tensor([[[0.1], [-0.3]]], dtype=torch.float64)
    xs = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    got = gauss_log_prob(xs[None], loc, ls.exp()[..., None], torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64)))
    ref = D.MixtureSameFamily(D.Categorical(probs=torch.tensor([0.5, 0.5])), D.Normal(loc[0, :, 0], ls[0, :, 0].exp()))
    torch.testing.assert_close(got[0], ref.log_prob(xs[:, 0]).double())


@pytest.mark.parametrize("name", ["bimodal", "trimodal", "ring8"])
def test_target_is_the_data_set_and_its_moments_match_quadrature(name):
    t = make_target(name)
    x = t.sample(500, torch.Generator().manual_seed(0))
    torch.testing.assert_close(t.log_prob(x), dgm.core.data.get(name).log_prob(x), rtol=1e-5, atol=1e-5)
    wide = make_target(name, width=10.0) if name == "ring8" else t  # quadrature needs modes wider than a cell
    grid = QuadGrid.over((-12, 12, -12, 12), 600, dtype=torch.float64)
    p = torch.softmax(wide.log_prob(grid.points), 0)  # (N,) cell probabilities
    mean = (p[:, None] * grid.points).sum(0)
    xc = grid.points - mean
    cov = (p[:, None, None] * xc[:, :, None] * xc[:, None, :]).sum(0)
    m_ref, c_ref = wide.moments()
    torch.testing.assert_close(mean, m_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(cov, c_ref, atol=1e-5, rtol=0)


def test_spread_moves_the_modes_and_the_1d_knobs_shape_p():
    t = make_target("bimodal", spread=2.0)
    c = (t.weights[:, None] * t.means).sum(0)
    base = make_target("bimodal")
    torch.testing.assert_close(t.means - c, 2 * (base.means - c))
    one = make_target("mix1d", sep=6.0, sd1=0.5, sd2=1.0, w1=0.3)
    mean, cov = one.moments()
    assert float(mean) == pytest.approx(0.3 * -3 + 0.7 * 3)
    assert float(cov) == pytest.approx(0.3 * (0.25 + 9) + 0.7 * (1 + 9) - float(mean) ** 2)


# ---- fitting -------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,family", [("bimodal", "gaussian"), ("trimodal", "gaussian"), ("bimodal", "diagonal"),
                                           ("mix1d", "gaussian")])
def test_forward_kl_with_a_gaussian_is_moment_matching(target, family):
    """The forward-KL optimum in the Gaussian family has p's mean and covariance (closed form of the
    mixture); the diagonal family matches the mean and the marginal variances."""
    cfg = DivergenceConfig(target=target, family=family, pad=3.0, res=128, starts=1, lr=0.05)
    t = DivergenceTrainer(cfg, seed=0, device="cpu", objectives=("forward_kl",))
    t.step(600)
    par = t.params()["forward_kl"]
    m_ref, c_ref = t.target.moments()
    np.testing.assert_allclose(par["mean"], m_ref.numpy(), atol=1e-2)
    if family == "diagonal":
        c_ref = torch.diag(c_ref.diagonal())
    np.testing.assert_allclose(par["cov"], c_ref.numpy(), atol=1e-2)


@pytest.mark.parametrize("target", ["mix1d", "bimodal"])
def test_reverse_kl_seeks_a_mode_and_forward_kl_sits_between(target):
    if target == "mix1d":
        cfg = DivergenceConfig(target="mix1d", sep=8.0, sd1=0.5, sd2=0.5, w1=0.5)
    else:
        cfg = DivergenceConfig(target="bimodal", spread=2.0)
    t = DivergenceTrainer(cfg, seed=0, device="cpu", objectives=("forward_kl", "reverse_kl"))
    t.step(500)
    centers = t.target.means.double()
    par = t.params()
    rev = torch.tensor(par["reverse_kl"]["mean"]).double()
    assert float(torch.linalg.norm(centers - rev, dim=1).min()) < 0.1
    fwd = torch.tensor(par["forward_kl"]["mean"]).double()
    a, b = centers[0], centers[1]
    s = float((fwd - a) @ (b - a) / ((b - a) @ (b - a)))  # position along the segment between the modes
    assert 0.2 < s < 0.8
    assert float(torch.linalg.norm(centers - fwd, dim=1).min()) > 1.0


def test_each_fit_is_best_under_its_own_objective_on_the_default_page():
    t = DivergenceTrainer(DivergenceConfig(), seed=0, device="cpu")
    t.step(300)
    tab = t.table()
    for col in OBJECTIVES:
        best = min(tab[r][col] for r in OBJECTIVES)
        assert tab[col][col] <= best + 1e-3 * abs(best) + 1e-9, col


def test_same_seed_same_numbers_whatever_the_bursts():
    cfg = DivergenceConfig(target="trimodal", family="mixture", k=2, mc=True, mc_n=4, res=48)
    a, b = DivergenceTrainer(cfg, seed=5, device="cpu"), DivergenceTrainer(cfg, seed=5, device="cpu")
    a.step(20)
    b.step(7)
    b.step(13)
    assert a.latest == b.latest
    c = DivergenceTrainer(cfg, seed=6, device="cpu")
    c.step(20)
    assert c.latest != a.latest


def test_monte_carlo_reverse_kl_is_unbiased_for_the_grid_value():
    """The reparameterised estimate E_q[log q - log p] agrees with the quadrature within its standard error;
    the trainer's MC objective is that estimate."""
    cfg = DivergenceConfig(mc=True, mc_n=8, starts=1)
    t = DivergenceTrainer(cfg, seed=0, device="cpu", objectives=("reverse_kl",))
    with torch.no_grad():
        x, w = t.q.rsample(100_000, torch.Generator().manual_seed(0))  # (1, M, D)
        terms = t.q.log_prob(x)[0].double() - t.target.log_prob(x[0]).double()
        exact = t.table()["reverse_kl"]["reverse_kl"]
        assert abs(float(terms.mean()) - exact) < 4 * float(terms.std()) / math.sqrt(terms.numel()) + 2e-3
        first = float(t.objective_values()["reverse_kl"][0])  # one noisy 8-sample estimate
    assert math.isfinite(first) and first != pytest.approx(exact, abs=1e-6)


def test_restarts_land_on_modes_and_count_every_run():
    cfg = DivergenceConfig(target="bimodal", spread=2.0)
    res = restarts(cfg, n=16, steps=300, seed=0)
    assert sum(res["counts"].values()) == 16 and len(res["init"]) == 16
    assert set(res["mode"]) <= {0, 1} and len(res["counts"]) == 2  # every run on a mode; both modes reached
    for m, f, k in zip(res["mode"], res["final"], res["kl"]):
        assert np.linalg.norm(np.array(f) - np.array(res["centers"][m])) < 0.1
        assert k == pytest.approx(-math.log(res["weights"][m]), abs=0.02)  # far-apart modes: KL = -log w


def test_reset_and_restore_keep_the_objectives():
    t = DivergenceTrainer(DivergenceConfig(res=32), seed=0, device="cpu", objectives=("js", "tv"))
    t.step(5)
    before = t.params()
    with torch.no_grad():
        t.q.loc.fill_(float("nan"))  # as a diverged step would leave it
    t.restore_last_good()
    assert t.params() == before
    t.reset()
    assert t.iteration == 0 and t.objectives == ("js", "tv")


def test_cli_prints_the_fit_and_every_divergence():
    out = cli.run(["divergence", "--target", "bimodal", "--family", "gaussian", "--objective", "reverse_kl",
                   "--seed", "1", "--steps", "150", "--res", "64"])
    final = out["final"]
    assert final["objective"] == "reverse_kl"
    assert isinstance(final["mean"], list) and len(final["mean"]) == 2
    assert isinstance(final["cov"], list) and np.array(final["cov"]).shape == (2, 2)
    for name in OBJECTIVES:
        assert isinstance(final[name], float) and final[name] >= 0
    assert final["reverse_kl"] == final["table.reverse_kl.reverse_kl"]
    # the reported fit sits on one of the two modes
    centers = dgm.core.data.get("bimodal").means.numpy()
    assert np.linalg.norm(centers - np.array(final["mean"]), axis=1).min() < 0.2


def test_mixture_moments_against_sampling():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    covs = torch.tensor([[[1.0, 0.2], [0.2, 0.5]], [[0.3, 0.0], [0.0, 0.3]]], dtype=torch.float64)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    m, c = mixture_moments(means, covs, w)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = D.MixtureSameFamily(D.Categorical(probs=w), D.MultivariateNormal(means, covs)).sample((200_000,))
    torch.testing.assert_close(m, x.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(c, torch.cov(x.T), atol=0.03, rtol=0)


def test_every_preset_is_a_valid_config_and_trains():
    from dgm.core import config as cfglib
    from dgm.families.divergences.lessons import EXPERIMENT

    assert all(les.blurb for les in EXPERIMENT.lessons)
    for name, values in EXPERIMENT.presets.items():
        cfg, notes = cfglib.from_raw(DivergenceConfig, {**values, "res": 32}, strict=True)
        assert not notes, name
        t = DivergenceTrainer(cfg, seed=0, device="cpu")
        t.step(3)
        assert all(math.isfinite(v) for v in t.latest.values()), name


@pytest.mark.parametrize("kw", [{}, {"target": "mix1d"}, {"target": "trimodal", "family": "mixture", "k": 2}])
def test_figures_build_from_a_snapshot(kw):
    import plotly.graph_objects as go

    from dgm.families.divergences.lessons import EXPERIMENT

    t = DivergenceTrainer(DivergenceConfig(res=32, **kw), seed=0, device="cpu")
    t.step(5)
    figs = EXPERIMENT.figures(t)
    assert set(figs) == {"fit", "side_by_side", "values", "table"}
    assert all(isinstance(f, go.Figure) and len(f.data) > 0 for f in figs.values())
    assert not any(type(tr).__name__ in ("Scattergl", "Heatmapgl") for f in figs.values() for tr in f.data)
    snap = vd.snapshot(t)
    res = restarts(t.config, n=4, steps=5)
    assert len(vd.restarts(res, snap).data) > 0 and len(vd.restart_counts(res).data) == 1
