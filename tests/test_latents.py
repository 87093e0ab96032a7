"""The latents family's maths against references (issue 22): the Monte Carlo marginal likelihood, IWAE,
the Gumbel-softmax and straight-through gradients, enumeration, vector quantisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dgm.families.latents import model as M


def _linear_gaussian(latent=2, d=2, sigma=0.8, seed=0):
    """A decoder p(x|z) = N(Wz + b, sigma² I): p(x) = N(b, WWᵀ + sigma² I) in closed form."""
    g = torch.Generator().manual_seed(seed)
    W, b = 0.6 * torch.randn(d, latent, generator=g), torch.randn(d, generator=g)
    dec = M.Decoder(d, latent, 8, images=False)
    lin = nn.Linear(latent, d + 1)  # the mean, and one log std for every coordinate
    s = math.log(math.expm1(sigma - M.SIGMA_MIN))  # softplus(s) + SIGMA_MIN = sigma
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:d] = W
        lin.bias[:d], lin.bias[d:] = b, s
    dec.net = lin
    exact = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(d))
    return dec, W, b, sigma, exact


def test_the_monte_carlo_estimate_converges_to_the_exact_marginal_of_a_linear_gaussian_decoder():
    dec, *_, exact = _linear_gaussian()
    x = torch.tensor([[0.1, -0.3], [1.5, 0.7], [-2.0, 1.0]])
    with torch.no_grad():
        est = M.mc_log_marginal(dec, x, 400_000, torch.Generator().manual_seed(1))
        # K = 10: each estimate of p(x) is unbiased (their mean agrees) while its log is biased low
        pair = dec.pair_log_lik(x, torch.randn(200_000, 2, generator=torch.Generator().manual_seed(2)))
        small = M.log_mean_exp(pair.reshape(20_000, 10, 3), 1)  # (20000, 3) estimates with K = 10
    assert est == pytest.approx(exact.log_prob(x), abs=3e-3)
    assert small.exp().mean(0).log() == pytest.approx(exact.log_prob(x), abs=1e-2)
    assert (small.mean(0) < exact.log_prob(x) - 1e-3).all()


def test_the_2d_decoder_noise_is_the_same_on_both_axes_learned_or_fixed():
    z = torch.randn(64, 1, generator=torch.Generator().manual_seed(3))
    x = 2 * torch.randn(5, 2, generator=torch.Generator().manual_seed(4))
    learned, fixed = M.Decoder(2, 1, 16, images=False), M.Decoder(2, 1, 16, images=False, sigma=0.1)
    m, log_std = learned.gaussian(z)
    assert torch.equal(log_std[:, 0], log_std[:, 1]) and log_std.std() > 0  # one σ(z), varying with z
    m, log_std = fixed.gaussian(z)
    assert torch.allclose(log_std, torch.full_like(m, math.log(0.1)))
    ref = torch.distributions.Normal(m.unsqueeze(1), 0.1).log_prob(x.unsqueeze(0)).sum(-1)  # (K, B)
    assert torch.allclose(fixed.pair_log_lik(x, z), ref, atol=1e-4)
    assert sum(p.numel() for p in fixed.net[-1].parameters()) == 17 * 2  # no output for a σ it does not learn


def test_log_mean_exp_is_exact_where_the_exponentials_underflow():
    x = torch.tensor([-1000.0, -1001.0, -1003.0], dtype=torch.float64)
    assert torch.log(torch.exp(x).mean()) == -math.inf  # the naive sum underflows
    ref = -1000.0 + math.log((1 + math.exp(-1) + math.exp(-3)) / 3)
    assert float(M.log_mean_exp(x)) == pytest.approx(ref, abs=1e-12)


def test_the_pairwise_categorical_likelihood_matches_torch_distributions():
    torch.manual_seed(0)
    dec = M.Decoder(64, 3, 16, images=True)
    z, x = torch.randn(5, 3), torch.randint(0, 17, (4, 64)).float()
    with torch.no_grad():
        pair = dec.pair_log_lik(x, z)  # (5, 4)
        ref = torch.distributions.Categorical(logits=dec.net(z).unflatten(-1, (64, 17)).unsqueeze(1)).log_prob(
            x.long().unsqueeze(0)).sum(-1)
        lik = dec.log_lik(x, z[:, None].expand(5, 4, 3))
    assert pair == pytest.approx(ref, abs=1e-4)
    assert lik == pytest.approx(ref, abs=1e-4)


def test_iwae_with_the_exact_posterior_is_the_exact_marginal():
    dec, _, b, sigma, _ = _linear_gaussian()
    enc = M.Encoder(2, 2, 8, images=False)
    # W with orthogonal columns: the posterior N(A(x - b), S) is then diagonal, as the encoder's q is
    q, _ = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(3)))
    W = q * torch.tensor([0.5, 1.2])
    with torch.no_grad():
        dec.net.weight[:2] = W
    S = torch.linalg.inv(torch.eye(2) + W.T @ W / sigma**2)
    assert S == pytest.approx(torch.diag(torch.diagonal(S)), abs=1e-6)
    A = S @ W.T / sigma**2  # posterior mean A (x - b)
    lin = nn.Linear(2, 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:2] = A
        lin.bias[:2] = -A @ b
        lin.bias[2:] = torch.log(torch.diagonal(S))
    enc.net = lin
    exact = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(2))
    x = torch.tensor([[0.1, -0.3], [1.5, 0.7]])
    for k in (1, 7):
        iw = M.iwae_bound(enc, dec, x, k, torch.Generator().manual_seed(0))
        assert iw == pytest.approx(exact.log_prob(x), abs=1e-4)


def test_enumeration_matches_the_closed_form_and_the_score_function_is_unbiased():
    g = torch.Generator().manual_seed(0)
    theta, table = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    p = torch.softmax(theta, -1)
    exact = M.exact_gradient(theta, table)
    assert exact == pytest.approx(p * (table - (p * table).sum(-1, keepdim=True)), abs=1e-6)

    def f(y):  # f at a one-hot y: the table's entry
        return (y * table).sum(-1)

    est = M.score_function_grads(theta, f, torch.zeros(3), 200_000, g)
    stats = M.estimator_stats(est, exact)
    assert stats["bias2"] < 4 * stats["floor"]  # no more than the noise of the mean of the draws
    assert est.mean(0) == pytest.approx(exact, abs=0.02)


def test_gumbel_max_samples_the_categorical_and_low_temperature_relaxations_are_nearly_one_hot():
    g = torch.Generator().manual_seed(1)
    theta = torch.tensor([1.0, 0.0, -1.0, 0.5])
    noise = M.gumbel((100_000, 4), g)
    freq = torch.bincount((theta + noise).argmax(-1), minlength=4).float() / 100_000
    assert freq == pytest.approx(torch.softmax(theta, 0), abs=0.01)
    soft = M.gumbel_softmax(theta, 0.01, noise[:1000], hard=False)
    assert (soft.argmax(-1) == (theta + noise[:1000]).argmax(-1)).all()
    assert soft.max(-1).values.mean() > 0.97
    assert M.gumbel_softmax(theta, 10.0, noise[:1000], hard=False).max(-1).values.mean() < 0.4


def test_the_straight_through_gradient_is_the_relaxed_samples_jacobian_times_the_one_hot_gradient():
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(6, generator=g).requires_grad_(True)
    noise, w, tau = M.gumbel((6,), g), torch.randn(6, generator=g), 0.7
    y = M.gumbel_softmax(theta, tau, noise, hard=True)
    assert y.detach() == pytest.approx(torch.nn.functional.one_hot((theta + noise).argmax(), 6).float())
    (y * w).sum().pow(2).backward()  # f(y) = (w·y)²: its gradient at the one-hot y is 2 (w·y) w
    p = torch.softmax((theta.detach() + noise) / tau, 0)
    jac = (torch.diag(p) - torch.outer(p, p)) / tau  # ∂ softmax((θ + g)/τ) / ∂θ
    expected = jac.T @ (2 * (w * y.detach()).sum() * w)
    assert theta.grad == pytest.approx(expected, abs=1e-5)


def test_the_quantiser_picks_the_nearest_code_and_passes_the_gradient_straight_through():
    g = torch.Generator().manual_seed(3)
    ze, cb = torch.randn(5, 3, 4, generator=g).requires_grad_(True), torch.randn(7, 4, generator=g)
    zq, idx, e = M.quantise(ze, cb)
    assert idx.tolist() == torch.cdist(ze.detach().reshape(-1, 4), cb).argmin(1).reshape(5, 3).tolist()
    assert zq.detach() == pytest.approx(cb[idx])  # forward: the codes
    w = torch.randn(5, 3, 4, generator=g)
    (zq * w).sum().backward()
    assert ze.grad == pytest.approx(w)  # backward: the identity


def test_ema_codebook_without_memory_is_the_mean_of_its_assigned_outputs_and_perplexity_counts_codes():
    torch.manual_seed(0)
    book = M.Codebook(3, 2)
    ze = torch.tensor([[0.0, 1.0], [2.0, 3.0], [10.0, 10.0]])
    idx = torch.tensor([0, 0, 2])
    counts = book.track(idx, decay=0.0)
    assert counts.tolist() == [2.0, 0.0, 1.0]
    book.ema_update(ze, idx, counts, decay=0.0, eps=1e-9)
    assert book.weight[0].tolist() == pytest.approx([1.0, 2.0]) and book.weight[2].tolist() == pytest.approx([10.0, 10.0])
    assert float(M.perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0]))) == pytest.approx(4.0)
    assert float(M.perplexity(torch.tensor([9.0, 0.0, 0.0]))) == pytest.approx(1.0)
    moved = book.restart(ze, threshold=0.5, gen=torch.Generator().manual_seed(0))  # code 1 is dead
    assert moved == 1 and any(torch.equal(book.weight[1], z) for z in ze)


def test_a_dead_code_restart_puts_more_of_the_book_to_use():
    from dgm.families.latents.trainer import RESTART_EVERY, LatentsConfig, make_trainer

    used = {}
    for restarts in (False, True):
        t = make_trainer(LatentsConfig(model="vqvae", codes=32, width=16, batch=32, restarts=restarts), seed=0,
                         device="cpu")
        t.step(RESTART_EVERY)  # the first check for dead codes comes at the last of these steps
        used[restarts] = t.final()["used"]
    assert used[True] > used[False] + 0.2


def test_the_code_prior_is_autoregressive_and_normalised():
    torch.manual_seed(0)
    prior = M.CodePrior(positions=3, codes=4, width=16)
    grids = torch.cartesian_prod(torch.arange(4), torch.arange(4), torch.arange(4))  # all 64 code grids
    with torch.no_grad():
        assert float(prior.log_prob(grids).exp().sum()) == pytest.approx(1.0, abs=1e-5)
        a, b = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 0, 0]])  # the same first code, later codes differ
        assert prior.logits(a)[0, :2] == pytest.approx(prior.logits(b)[0, :2])  # positions 0, 1 see only code 0
        assert not torch.allclose(prior.logits(a)[0, 2], prior.logits(b)[0, 2])
    s = prior.sample(5000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_first = torch.softmax(prior.logits(s[:1])[0, 0], -1)
    assert torch.bincount(s[:, 0], minlength=4).float() / 5000 == pytest.approx(p_first, abs=0.025)


@pytest.mark.parametrize("values", [{"model": "gumbel", "anneal": 1e-3, "hard": True},
                                    {"model": "vqvae", "update": "ema", "restarts": True}], ids=["gumbel", "vqvae"])
def test_a_seed_fixes_the_run_whatever_the_bursts(values):
    from dgm.families.latents.trainer import RESTART_EVERY, LatentsConfig, make_trainer

    cfg = LatentsConfig(width=16, batch=16, **values)
    a, b = make_trainer(cfg, seed=5, device="cpu"), make_trainer(cfg, seed=5, device="cpu")
    a.step(RESTART_EVERY + 1)
    b.step(7), b.step(RESTART_EVERY - 6)
    for (name, m), (_, n) in zip(a.modules().items(), b.modules().items()):
        for (k, t), u in zip(m.state_dict().items(), n.state_dict().values()):
            assert torch.equal(t, u), (name, k)
    assert a.history.merged() == b.history.merged()
