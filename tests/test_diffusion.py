"""Diffusion and flow matching against references: the noised mixture's score against autograd and
torch.distributions, the forward chain against its closed-form marginals, the probability-flow velocity
against the continuity equation, the ODE likelihood against the true density and its integral on a grid,
sampling with the exact score against the data's own mode metrics; and the trainer's contract."""

import dataclasses
import itertools
import json
import math

import pytest
import torch
from torch import distributions as D

import dgm.core.data
from dgm.core.metrics import EVAL_SAMPLES, Grid, mode_stats
from dgm.families.diffusion import model as M
from dgm.families.diffusion import samplers as S
from dgm.families.diffusion.exact import ExactDenoiser, NoisedMixture
from dgm.families.diffusion.lessons import EXPERIMENT
from dgm.families.diffusion.trainer import DiffusionConfig, DiffusionTrainer, sampling_of, training_config

SCHEDULES = {
    "ddpm-linear": lambda: M.make_schedule("ddpm", "linear", 1000),
    "ddpm-cosine": lambda: M.make_schedule("ddpm", "cosine", 1000),
    "score": lambda: M.make_schedule("score", levels=200, sigma_min=0.01, sigma_max=8.0),
    "flow": lambda: M.make_schedule("flow"),
}
TINY = dict(width=32, depth=2, batch=64, nfe=10)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["ring8", "bimodal", "trimodal"])
@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.8, 0.6), (0.3, 0.95), (0.0, 1.0), (1.0, 2.5)])
def test_noised_mixture_density_and_score_match_references(name, alpha, sigma):
    mix = dgm.core.data.get(name)
    nm = NoisedMixture.of(mix)
    x = (torch.randn(64, 2, generator=_gen(1), dtype=torch.float64) * 2).requires_grad_(True)
    lp = nm.log_prob(x, alpha, sigma)
    # the noised mixture is the mixture with moved means and widened covariances
    covs = alpha**2 * mix.covs.double() + sigma**2 * torch.eye(2, dtype=torch.float64)
    ref = D.MixtureSameFamily(D.Categorical(probs=mix.weights.double()),
                              D.MultivariateNormal(alpha * mix.means.double(), covariance_matrix=covs))
    assert torch.allclose(lp, ref.log_prob(x), atol=1e-9)
    (grad,) = torch.autograd.grad(lp.sum(), x)
    assert torch.allclose(nm.score(x, alpha, sigma), grad, atol=1e-8)


@pytest.mark.parametrize("alpha,sigma", [(0.9, 0.4), (0.2, 0.98), (1.0, 0.05)])
def test_posterior_mean_is_tweedie_and_class_scores_are_components(alpha, sigma):
    mix = dgm.core.data.get("bimodal")
    nm = NoisedMixture.of(mix)
    x = torch.randn(32, 2, generator=_gen(2), dtype=torch.float64) * 2
    # Tweedie: E[x0 | x] = (x + sigma^2 grad log p_t(x)) / alpha
    assert torch.allclose(nm.posterior_mean(x, alpha, sigma), (x + sigma**2 * nm.score(x, alpha, sigma)) / alpha,
                          atol=1e-8)
    y = torch.tensor([0, 1] * 16)
    comp = D.MultivariateNormal(alpha * mix.means.double()[y],
                                covariance_matrix=alpha**2 * mix.covs.double()[y] + sigma**2 * torch.eye(2).double())
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(comp.log_prob(xg).sum(), xg)
    assert torch.allclose(nm.score(x, alpha, sigma, y), g, atol=1e-8)
    # label K means "no class": the whole mixture
    assert torch.allclose(nm.score(x, alpha, sigma, torch.full((32,), 2)), nm.score(x, alpha, sigma), atol=1e-12)
    # pure noise says nothing about x0: the posterior mean is the data's mean
    mean = (mix.weights.double()[:, None] * mix.means.double()).sum(0)
    assert torch.allclose(nm.posterior_mean(x, 0.0, 1.0), mean.expand(32, 2), atol=1e-9)


def test_continuous_linear_schedule_is_the_limit_of_ddpms_discrete_one():
    """Ho et al.: beta_k linear from 1e-4 to 0.02 over T = 1000, alpha_bar_k = prod(1 - beta); the continuous
    schedule exp(-integral of beta) differs by the second-order terms of log(1 - beta): under 7% of alpha_bar."""
    sch = M.make_schedule("ddpm", "linear", 1000)
    beta = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - beta, 0)
    ours = sch.alpha(sch.levels) ** 2
    gap = (ours.log() - abar.log()).abs()
    assert gap.max() < 0.07 and (ours - abar).abs().max() < 1e-3
    second_order = torch.cumsum(beta**2 / 2, 0)  # what exp(-sum beta) leaves out of prod(1 - beta)
    assert gap[-1] == pytest.approx(float(second_order[-1]), rel=0.05)


@pytest.mark.parametrize("schedule", ["ddpm-linear", "ddpm-cosine"])
def test_ddpm_forward_chain_has_the_closed_form_marginals(schedule):
    """Run the Markov chain x_k = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) z from data; at every checked k its
    samples have the noised mixture's moments and average log-density (-entropy, by quadrature)."""
    sch = M.make_schedule("ddpm", schedule.split("-")[1], 50)
    mix = dgm.core.data.get("trimodal")
    nm = NoisedMixture.of(mix)
    g = _gen(3)
    x = mix.sample(40000, g).double()
    abar = (sch.alpha(sch.levels) ** 2).tolist()
    prev = 1.0
    m0 = (mix.weights[:, None] * mix.means).sum(0).double()
    cov0 = sum(w * (c + torch.outer(m, m)) for w, m, c in zip(mix.weights, mix.means, mix.covs)).double() - torch.outer(m0, m0)
    for k, ab in enumerate(abar, start=1):
        beta = 1 - ab / prev
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=g, dtype=torch.float64)
        prev = ab
        if k not in (1, 5, 20, 50):
            continue
        a, s = sch.at(k / 50)
        assert a == pytest.approx(math.sqrt(ab), rel=1e-9)
        assert torch.allclose(x.mean(0), a * m0, atol=0.03)
        assert torch.allclose(torch.cov(x.T), a * a * cov0 + s * s * torch.eye(2, dtype=torch.float64), atol=0.05)
        grid = Grid.over((-6, 6, -6, 6), 300, dtype=torch.float64)
        lp = nm.log_prob(grid.points, a, s)
        neg_entropy = float((lp.exp() * lp).sum() * grid.cell_area)
        assert float(nm.log_prob(x, a, s).mean()) == pytest.approx(neg_entropy, abs=0.02)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_probability_flow_velocity_satisfies_the_continuity_equation(schedule):
    """d/dt log p_t(x) = -div u_t(x) - u_t(x) . grad log p_t(x) for the exact velocity u = alpha' x0 + sigma' eps."""
    sch = SCHEDULES[schedule]()
    nm = NoisedMixture.of(dgm.core.data.get("bimodal"))
    den = ExactDenoiser(nm, sch)
    x = torch.randn(16, 2, generator=_gen(4), dtype=torch.float64)
    for t in (0.2, 0.5, 0.8):
        h = 1e-5
        dlogp = (nm.log_prob(x, *sch.at(t + h)) - nm.log_prob(x, *sch.at(t - h))) / (2 * h)
        xg = x.clone().requires_grad_(True)
        eps, x0 = den(xg, t)
        u = S.velocity(sch, t, eps, x0)
        div = sum(torch.autograd.grad(u[:, i].sum(), xg, retain_graph=True)[0][:, i] for i in range(2))
        rhs = -div - (u * nm.score(x, *sch.at(t))).sum(1)
        assert torch.allclose(dlogp, rhs.detach(), atol=1e-5, rtol=1e-5), (schedule, t)


@pytest.mark.parametrize("schedule", ["ddpm-cosine", "score", "flow"])
def test_ode_likelihood_is_the_true_density_and_integrates_to_one(schedule):
    sch = SCHEDULES[schedule]()
    mix = dgm.core.data.get("8gaussians")
    den = ExactDenoiser(NoisedMixture.of(mix), sch)
    x = mix.sample(300, _gen(5)).double()
    lp = S.log_likelihood(den, sch, x, steps=40)
    err = lp - mix.log_prob(x)
    assert abs(float(err.mean())) < 0.02 and float(err.abs().mean()) < 0.05  # 40 Heun steps: a little off
    grid = Grid.over((-7, 7, -7, 7), 56, dtype=torch.float64)
    assert grid.integral(S.log_likelihood(den, sch, grid.points, steps=40).exp()) == pytest.approx(1.0, abs=0.02)


def test_ode_likelihood_of_an_untrained_network_integrates_to_one():
    """The change of variables holds for any smooth field: a random network's density is normalised too."""
    torch.manual_seed(0)
    sch = SCHEDULES["flow"]()
    net = M.Net(2, 32, 2, fourier=1.0).double()
    den = M.Denoised(net, sch, "velocity")
    grid = Grid.over((-6, 6, -6, 6), 40, dtype=torch.float64)
    with torch.no_grad():
        lp = S.log_likelihood(den, sch, grid.points, steps=30)
    assert grid.integral(lp.exp()) == pytest.approx(1.0, abs=0.02)


TRUE_HQ = 1 - math.exp(-4.5)  # a 2D Gaussian puts this much mass within 3 standard deviations


@pytest.mark.parametrize("name", ["ring8", "grid25"])
@pytest.mark.parametrize("schedule,method,nfe", [("ddpm-cosine", "ancestral", 100), ("ddpm-linear", "ddim", 100),
                                                 ("score", "heun", 99), ("score", "langevin", 200),
                                                 ("flow", "euler", 100)])
def test_sampling_with_the_exact_score_reproduces_the_data(name, schedule, method, nfe):
    sch = SCHEDULES[schedule]()
    mix = dgm.core.data.get(name)
    den = ExactDenoiser(NoisedMixture.of(mix), sch)
    x, used, _ = S.sample(den, sch, method, nfe, EVAL_SAMPLES, 2, _gen(6))
    assert used <= nfe
    got, true = mode_stats(x, mix.centers, mix.std), mode_stats(mix.sample(EVAL_SAMPLES, _gen(7)), mix.centers, mix.std)
    assert got["modes"] == true["modes"] == len(mix.centers)
    assert got["high_quality"] > TRUE_HQ - 0.03 and true["high_quality"] > TRUE_HQ - 0.01
    assert got["mode_kl"] < 0.02


@pytest.mark.parametrize("method", S.SAMPLERS)
@pytest.mark.parametrize("nfe", [1, 2, 7, 40])
def test_samplers_spend_at_most_their_nfe_and_report_it(method, nfe):
    calls = []
    sch = SCHEDULES["ddpm-cosine"]()
    den = ExactDenoiser(NoisedMixture.of(dgm.core.data.get("ring8")), sch)

    def counted(x, t):
        calls.append(t)
        return den(x, t)

    x, used, path = S.sample(counted, sch, method, nfe, 50, 2, _gen(8), keep=5)
    assert used == len(calls) and used <= max(nfe, 3 if method == "langevin" else nfe)
    assert len(path) >= 2 and path[0].shape == (5, 2) and torch.equal(path[-1], x[:5])
    if method in ("ancestral", "ddim", "euler"):
        assert used == nfe


def test_grid_times_are_distinct_levels_evenly_spread_in_log_snr():
    sch = SCHEDULES["ddpm-cosine"]()
    for n in (1, 2, 10, 100, 1000, 5000):
        ts = S.grid(sch, n)
        assert len(ts) == min(n, 1000) and len(set(ts)) == len(ts) and ts == sorted(ts, reverse=True)
        assert ts[0] == 1.0 and (n == 1 or ts[-1] == pytest.approx(1e-3))
        assert set(ts) <= set(sch.levels.tolist())
    assert S.grid(SCHEDULES["flow"](), 4) == [1.0, 0.75, 0.5, 0.25]


def test_ot_pairing_is_the_optimal_permutation():
    g = _gen(9)
    a, b = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    perm = M.ot_pairing(a, b)
    cost = lambda p: float((a - b[list(p)]).pow(2).sum())  # noqa: E731
    assert sorted(perm.tolist()) == list(range(6))
    assert cost(perm.tolist()) == pytest.approx(min(cost(p) for p in itertools.permutations(range(6))))
    big_a, big_b = torch.randn(600, 2, generator=g), torch.randn(600, 2, generator=g)
    p = M.ot_pairing(big_a, big_b)
    assert sorted(p.tolist()) == list(range(600))  # blocks of OT_BLOCK, each a permutation of its own
    assert all(set(p[i:i + M.OT_BLOCK].tolist()) == set(range(i, min(i + M.OT_BLOCK, 600))) for i in range(0, 600, M.OT_BLOCK))
    assert float((big_a - big_b[p]).pow(2).sum()) < 0.5 * float((big_a - big_b).pow(2).sum())


def test_labelled_samples_come_from_their_component():
    mix = dgm.core.data.get("ring8")
    x, y = M.sample_labelled(mix, 2000, _gen(10))
    assert torch.equal(torch.cdist(x, mix.centers).argmin(1), y)
    assert torch.bincount(y, minlength=8).min() > 180


# ---- the trainer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, {"model": "score"}, {"model": "flow", "coupling": "ot"},
                                   {"model": "flow", "reflow_at": 12}, {"conditional": True}, {"data": "digits"}])
def test_a_seed_fixes_the_run_whatever_the_bursts_and_checkpoints_continue_it(extra):
    cfg = DiffusionConfig(**{**TINY, **extra})

    def make():
        t = DiffusionTrainer(cfg, seed=3)
        t.eval_every = 0  # training only
        return t

    a, b = make(), make()
    a.step(20)
    for _ in range(4):
        b.step(5)
    assert [r["loss"] for r in a.history.rows] == [r["loss"] for r in b.history.rows]
    ck = b.checkpoint()
    b.step(13)
    c = make()
    c.restore(ck)
    c.step(13)
    assert c.history.rows[-1]["loss"] == b.history.rows[-1]["loss"]
    assert c.reflowed == b.reflowed == bool(extra.get("reflow_at"))


def test_reflow_trains_on_the_first_flows_pairs_and_survives_a_move_between_processes():
    t = DiffusionTrainer(DiffusionConfig(**TINY, model="flow", reflow_at=10), seed=0)
    t.eval_every = 0
    t.step(10)
    assert not t.reflowed and t.pairs is None
    t.step(1)
    x0, x1 = t.pairs
    assert t.reflowed and x0.shape == x1.shape == (8192, 2)
    replica = DiffusionTrainer(DiffusionConfig(**TINY, model="flow", reflow_at=10), seed=0)
    replica.import_state(t.export_state(full=False))
    assert replica.reflowed and replica.iteration == 11


def test_sampling_settings_are_runtime_and_stay_out_of_the_runs_identity():
    cfg = DiffusionConfig(**{**TINY, "sampler": "heun", "nfe": 7})
    assert training_config(cfg) == dataclasses.replace(cfg, sampler="ancestral", nfe=100)
    t = DiffusionTrainer(cfg, seed=0)
    assert t.runtime.sampler == "heun" and t.generate(10)[1] == 7
    t.set_runtime(sampling_of(dataclasses.replace(cfg, sampler="euler", nfe=3)))
    assert t.generate(10)[1] == 3 and t.runtime.sampler == "euler"


def test_ddpm_learns_ring8_and_its_score_error_falls():
    t = DiffusionTrainer(DiffusionConfig(data="ring8", width=64, batch=256, nfe=50), seed=0)
    t.eval_every = 0
    t.step(200)
    early = t.score_error()
    t.step(400)
    assert t.score_error() < 0.5 * early
    x, _, _ = t.generate(EVAL_SAMPLES)
    e = mode_stats(x, t.data.centers, t.data.std)
    assert e["modes"] == 8 and e["high_quality"] > 0.8 and e["mode_kl"] < 0.05


def test_final_metrics_and_the_cli(tmp_path):
    from dgm.core.cli import Refused, run

    r = run(["diffusion", "--steps", "20", "--seed", "1", "--width", "32", "--batch", "64", "--nfe", "8",
             "--out", str(tmp_path)])
    f = r["final"]
    assert {"loss", "modes", "high_quality", "mode_kl", "mmd", "w1", "nll", "nfe", "score_error"} <= set(f)
    assert f["w1"] > f["w1_floor"] > 0 and f["mmd"] > f["mmd_floor"]
    assert f["nfe"] == 8 and 0 <= f["high_quality"] <= 1
    assert json.loads((tmp_path / "final.json").read_text())["final"]["nfe"] == 8
    with pytest.raises(Refused, match="nfe"):
        run(["diffusion", "--steps", "1", "--nfe", "abc"])


def test_guidance_sweep_forgets_the_data_even_with_exact_scores():
    from dgm.families.diffusion import sweeps

    t = DiffusionTrainer(DiffusionConfig(**{**TINY, "data": "8gaussians", "conditional": True, "nfe": 20}), seed=0)
    res = sweeps.guidance_sweep(t, scales=(0.0, 1.0, 8.0), n=600)
    exact = {r["scale"]: r for r in res["exact"]}
    assert exact[0.0]["modes"] == exact[1.0]["modes"] == 8 and exact[1.0]["high_quality"] > 0.95
    assert exact[8.0]["mmd"] > 3 * max(exact[0.0]["mmd"], exact[1.0]["mmd"])
    figs = sweeps.sweep_figures(res, t)
    assert {"guidance_quality", "guidance_kl", "guidance_mmd", "guidance_clouds"} <= set(figs)
    assert [tr.name for tr in figs["guidance_mmd"].data] == ["network", "exact scores"]


def test_every_lesson_builds_and_its_figures_draw():
    for les in EXPERIMENT.lessons:
        cfg = DiffusionConfig(**{**les.values, **TINY})
        t = EXPERIMENT.make(cfg, seed=0)
        t.eval_every = 0
        t.step(2)
        figs = EXPERIMENT.figures(t)
        assert len(figs) >= 3 and all(figs[n].data is not None for n in figs), les.name
