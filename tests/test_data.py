"""The data sets: shapes, seeds, exact densities and the mixture geometry of docs/ARCHITECTURE.md."""

import math

import pytest
import torch

import dgm.core.data as data
from dgm.core.digits import digits
from dgm.core.metrics import Grid

ALL = data.names()


@pytest.mark.parametrize("name", ALL)
def test_sample_shape_dtype_and_seed(name):
    p = data.get(name)
    x = p.sample(500, generator=torch.Generator().manual_seed(3))
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    y = p.sample(500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, y), "the same seed must give the same samples"
    z = p.sample(500, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(x, z)


@pytest.mark.parametrize("name", ALL)
def test_samples_mostly_inside_box(name):
    p = data.get(name)
    x = p.sample(4000, generator=torch.Generator().manual_seed(0))
    xmin, xmax, ymin, ymax = p.box
    inside = (x[:, 0] >= xmin) & (x[:, 0] <= xmax) & (x[:, 1] >= ymin) & (x[:, 1] <= ymax)
    assert inside.float().mean() > 0.99


@pytest.mark.parametrize("name", data.names("exact"))
def test_exact_density_integrates_to_one(name):
    p = data.get(name)
    xmin, xmax, ymin, ymax = p.box
    pad = 2.0
    # cells well under the narrowest std (ring8: 0.02), and aligned with the checkerboard's edges
    res = 1200
    grid = Grid.over((xmin - pad, xmax + pad, ymin - pad, ymax + pad), res, dtype=torch.float64)
    total = grid.integral(p.log_prob(grid.points.float()).double().exp())
    assert abs(total - 1.0) < 1e-3, total


def test_mixture_log_prob_matches_torch_distributions():
    p = data.get("trimodal")
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0)) * 2
    comps = [torch.distributions.MultivariateNormal(p.means[k], p.covs[k]) for k in range(3)]
    ref = torch.logsumexp(torch.stack([c.log_prob(x) + math.log(w) for c, w in zip(comps, p.weights.tolist())]), 0)
    assert torch.allclose(p.log_prob(x), ref, atol=1e-5)


def test_mixture_samples_follow_weights_and_moments():
    p = data.get("bimodal")
    x = p.sample(200_000, generator=torch.Generator().manual_seed(0)).double()
    w, m, c = p.weights.double(), p.means.double(), p.covs.double()
    mean = (w[:, None] * m).sum(0)
    cov = (w[:, None, None] * (c + m[:, :, None] * m[:, None, :])).sum(0) - mean[:, None] * mean[None, :]
    assert torch.allclose(x.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.03)


def test_ring8_geometry():
    p = data.get("ring8")
    assert p.centers.shape == (8, 2) and p.std == 0.02
    assert torch.allclose(p.centers.norm(dim=1), torch.full((8,), 2.0), atol=1e-6)
    angles = torch.atan2(p.centers[:, 1], p.centers[:, 0]).remainder(2 * math.pi)
    expected = torch.arange(8) * 2 * math.pi / 8
    assert torch.allclose(angles.sort().values, expected, atol=1e-5)  # no repeated endpoint


def test_grid25_geometry():
    p = data.get("grid25")
    assert p.centers.shape == (25, 2) and p.std == 0.05
    vals = {-4.0, -2.0, 0.0, 2.0, 4.0}
    pts = {(float(a), float(b)) for a, b in p.centers}
    assert pts == {(a, b) for a in vals for b in vals}


def test_mixture_sample_spread_matches_std():
    p = data.get("ring8")
    x = p.sample(20_000, generator=torch.Generator().manual_seed(1))
    d = torch.cdist(x, p.centers).min(1).values
    # distance to the nearest centre of a 2D Gaussian with std s is Rayleigh(s): mean s * sqrt(pi / 2)
    assert abs(float(d.mean()) - 0.02 * math.sqrt(math.pi / 2)) < 1e-3


@pytest.mark.parametrize("name", ["8gaussians", "ring8", "bimodal"])
def test_entropy_matches_monte_carlo_and_mixture_bound(name):
    p = data.get(name)
    x = p.sample(400_000, generator=torch.Generator().manual_seed(0))
    mc = float(-p.log_prob(x).double().mean())  # standard error about 1e-3 here
    assert abs(p.entropy - mc) < 5e-3
    # a mixture's entropy is at most H(weights) + sum_k w_k H(component k), with equality when separated
    w = p.weights.double()
    h_comp = 0.5 * torch.logdet(2 * math.pi * math.e * p.covs.double())
    bound = float(-(w * w.log()).sum() + (w * h_comp).sum())
    assert p.entropy <= bound + 1e-6 and p.entropy > bound - 0.02


def test_checkerboard_density_matches_samples():
    p = data.get("checkerboard")
    x = p.sample(5000, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(p.log_prob(x)).all(), "every sample lies where the density is positive"
    assert abs(p.entropy - math.log(32)) < 1e-3


@pytest.mark.parametrize("name", data.ENERGIES)
def test_energy_sampler_follows_the_energy(name):
    p = data.get(name)
    x = p.sample(20_000, generator=torch.Generator().manual_seed(0))
    lp = p.unnormalized_log_prob(x)
    grid = Grid.over(p.box, 200)
    lg = p.unnormalized_log_prob(grid.points)
    # samples sit where the density is high: their mean log density beats the box average by far
    assert float(lp.mean()) > float((lg.exp() * lg).sum() / lg.exp().sum()) - 0.5
    assert float(lp.mean()) > float(lg.mean()) + 2


def test_unknown_name_lists_valid_names():
    with pytest.raises(data.UnknownDistributionError) as e:
        data.get("nope")
    assert "ring8" in str(e.value) and "U4" in str(e.value)
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)


def test_sampled_distributions_say_they_have_no_density():
    p = data.get("moons")
    assert not p.has_density
    with pytest.raises(NotImplementedError, match="estimated"):
        p.log_prob(torch.zeros(1, 2))


def test_digits_split_is_fixed_and_scaled():
    d = digits()
    assert (len(d.train), len(d.val), len(d.test)) == (1197, 300, 300)
    assert d.train.x.shape == (1197, 64) and d.train.x.dtype == torch.float32
    levels = torch.unique(torch.cat([d.train.x, d.val.x, d.test.x]))
    assert levels.min() == 0 and levels.max() == 16 and torch.equal(levels, levels.round())
    assert float(d.train.x01.max()) == 1.0
    from sklearn.datasets import load_digits

    ref = load_digits()
    assert len(d.train) + len(d.val) + len(d.test) == len(ref.target)
    assert set(d.test.y.tolist()) == set(range(10))
