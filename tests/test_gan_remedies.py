"""The GAN's mode-collapse remedies, each checked on its mechanics: PacGAN's packing (shapes, what D
sees), the unrolled update (against a closed form and torch's own optimisers), R1 / R2 (against
autograd, point by point), the minibatch standard deviation (against a direct computation) and the
two learning rates of a two-timescale update."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dgm.families.gan.lessons import EXPERIMENT
from dgm.families.gan.model import (
    MinibatchStd, d_loss, discriminator, g_loss, optimizer_state, optimizer_step, pack, unrolled_params,
    zero_centred_penalty,
)
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import PARTNER_SETS, GANTrainer

TINY = {"g_width": 16, "d_width": 16, "g_depth": 2, "d_depth": 2, "batch": 32}
#: the plain game (the page's default packs and penalises): each test turns on only the remedy it tests
PLAIN = {"pack": 1, "r1": 0.0}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- PacGAN ------------------------------------------------------------------------------------

def test_pack_puts_m_consecutive_points_side_by_side():
    x = torch.arange(22.0).view(11, 2)  # 11 points
    p = pack(x, 4)
    assert p.shape == (2, 8)  # 11 // 4 packs of 4 points; the 3 left over are dropped
    assert torch.equal(p[0], torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7]))  # points 0..3, each (x, y)
    assert torch.equal(p[1], x[4:8].reshape(-1))
    assert pack(x, 1).shape == (11, 2)


def test_packed_trainer_feeds_d_packs_and_judges_a_point_with_g_companions():
    t = GANTrainer(GANConfig(**{**PLAIN, "pack": 4}, **TINY), seed=0, device="cpu")
    assert t.D[0].in_features == 8  # D's first layer sees 4 points of 2 coordinates
    seen = []
    hook = t.D[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    t.step(1)
    hook.remove()
    # 32 points -> 8 packs of 8 numbers: each D step sees 8 real and 8 generated packs in one batch, G's step 8
    assert seen == [(16, 8)] * t.config.d_steps + [(8, 8)]
    # D's view of single points (figures, metrics): the point in a pack with 3 of G's samples, averaged over sets
    x = torch.randn(5, 2, generator=_gen())
    with torch.no_grad(), t.frozen():
        got = t.d_point(x)
        comp = t.sampler(t.z_eval[: PARTNER_SETS * 3]).view(PARTNER_SETS, 3, 2)
        want = torch.stack([t.D(torch.cat([x, c.reshape(1, 6).expand(5, 6)], 1))[:, 0] for c in comp]).mean(0)
    torch.testing.assert_close(got, want)


# ---- unrolled GAN -------------------------------------------------------------------------------

def test_unrolled_generator_gradient_matches_the_closed_form_of_a_linear_game():
    """A linear critic D(x) = w.x + b under the WGAN loss, unrolled k SGD steps: each step moves w by
    -lr (mean fake - mean real), so w_k = w - k lr (f - r) (f, r the batch means). G(z) = z + c, and G's
    loss -(w_k . f + b) has gradient in c of -w + k lr (2 f - r); without unrolling, -w."""
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.7, -1.3]]))
        lin.bias.fill_(0.2)
    g = _gen(3)
    z, real = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g) + 1.0
    k, lr = 3, 0.05
    grads = {}
    for steps in (0, k):
        c = torch.tensor([0.3, -0.4], requires_grad=True)
        fake = z + c
        params = unrolled_params(lin, "wgan", real, fake, steps, "sgd", {}, lr)
        out = functional_call(lin, params, (fake,))[:, 0]
        (grads[steps],) = torch.autograd.grad(g_loss("wgan", out), c)
    w = lin.weight[0].detach()
    f, r = (z + torch.tensor([0.3, -0.4])).mean(0), real.mean(0)
    torch.testing.assert_close(grads[0], -w)
    torch.testing.assert_close(grads[k], -w + k * lr * (2 * f - r))
    assert (grads[k] - grads[0]).abs().max() > 0.1  # the look-ahead changes G's update


@pytest.mark.parametrize("rule", ["sgd", "adam", "rmsprop"])
def test_unrolled_steps_are_torchs_own_optimiser_steps(rule):
    """Two unrolled steps from an optimiser's current state land on the parameters that two real steps of
    torch's optimiser reach on the same batch (a hand-unrolled reference), for a nonlinear D."""
    torch.manual_seed(0)
    D = discriminator(2, 8, 2)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05), "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.5, 0.9)),
            "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01)}[rule]
    opt = make(D.parameters())
    g = _gen(1)
    real, fake = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g) * 0.5
    for _ in range(3):  # give the optimiser some state first
        opt.zero_grad()
        d_loss("nonsaturating", D(real)[:, 0], D(fake)[:, 0]).backward()
        opt.step()
    ahead = unrolled_params(D, "nonsaturating", real, fake, 2, rule, optimizer_state(opt, D), 0.05 if rule == "sgd" else 0.01,
                            (0.5, 0.9))
    D2 = copy.deepcopy(D)
    opt2 = make(D2.parameters())
    opt2.load_state_dict(opt.state_dict())
    for _ in range(2):
        opt2.zero_grad()
        d_loss("nonsaturating", D2(real)[:, 0], D2(fake)[:, 0]).backward()
        opt2.step()
    for name, p in D2.named_parameters():
        torch.testing.assert_close(ahead[name], p, rtol=1e-5, atol=1e-6)
    before = dict(D.named_parameters())
    assert all(torch.equal(before[n], p) for n, p in D.named_parameters())  # D itself is not changed


def test_unrolled_trainer_update_differs_from_the_plain_one():
    t = GANTrainer(GANConfig(unroll=3, **PLAIN, **TINY), seed=0, device="cpu")
    t.step(5)
    fake, real = t.G(t.z_eval[:32]), t.real_eval[:32]
    grads = {}
    for k in (3, 0):  # the same state, G's update with and without the look-ahead
        t.config.unroll = k
        grads[k] = torch.autograd.grad(g_loss("nonsaturating", t._g_outputs(fake, real)), list(t.G.parameters()),
                                       retain_graph=True)
    assert max(float((a - b).abs().max()) for a, b in zip(grads[0], grads[3])) > 1e-4


def test_optimizer_step_adam_formula():
    p, grad = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.1])
    new, s = optimizer_step("adam", {"p": p}, {"p": grad}, {}, lr=0.1, betas=(0.5, 0.9))
    # first step from zero moments: m_hat = g, v_hat = g^2, so each coordinate moves by lr * sign(g)
    torch.testing.assert_close(new["p"], p - 0.1 * grad / (grad.abs() + 1e-8))
    assert s["p"]["step"] == 1
    with pytest.raises(ValueError):
        optimizer_step("lion", {"p": p}, {"p": grad}, {}, lr=0.1)


# ---- R1 / R2 ------------------------------------------------------------------------------------

def test_zero_centred_penalty_is_the_mean_squared_gradient_norm_by_autograd():
    torch.manual_seed(0)
    D = discriminator(2, 16, 2)
    x = torch.randn(7, 2, generator=_gen(2))
    want = []
    for i in range(7):  # one point at a time
        xi = x[i].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(D(xi[None]).sum(), xi)
        want.append(gi.pow(2).sum())
    assert zero_centred_penalty(D, x).item() == pytest.approx(torch.stack(want).mean().item(), rel=1e-6)
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    assert zero_centred_penalty(lin, x).item() == pytest.approx(25.0)  # |grad|^2 = 25 everywhere


@pytest.mark.parametrize("which", ["r1", "r2"])
def test_d_step_adds_gamma_over_two_times_the_penalty(which):
    """One SGD step of D with R1 (or R2) moves D's parameters by -lr times the gradient of
    loss + gamma/2 * penalty at the data (or generated) points, recomputed here by hand."""
    gamma, lr = 1.0, 0.1
    t = GANTrainer(GANConfig(optimizer="sgd", lr_d=lr, decay=1.0, **{**PLAIN, which: gamma}, **TINY), seed=0, device="cpu")
    D0 = copy.deepcopy(t.D)
    x, fake = t.real_eval[:32], t.G(t.z_eval[:32]).detach()
    t._d_step(x, fake)
    total = d_loss("nonsaturating", D0(x)[:, 0], D0(fake)[:, 0]) + gamma / 2 * zero_centred_penalty(
        D0, x if which == "r1" else fake)
    grads = torch.autograd.grad(total, list(D0.parameters()))
    for p0, g, p1 in zip(D0.parameters(), grads, t.D.parameters()):
        torch.testing.assert_close(p1, p0 - lr * g, rtol=1e-5, atol=1e-7)


# ---- minibatch standard deviation -----------------------------------------------------------------

def test_minibatch_std_appends_each_groups_mean_feature_std():
    h = torch.randn(10, 3, generator=_gen(4))
    out = MinibatchStd(4)(h)
    assert out.shape == (10, 4) and torch.equal(out[:, :3], h)
    for rows in (range(0, 4), range(4, 8), range(8, 10)):  # groups of 4, 4 and the 2 left over
        grp = h[list(rows)].numpy()
        want = float(((grp - grp.mean(0)) ** 2).mean(0).__add__(1e-8).__pow__(0.5).mean())
        for r in rows:
            assert out[r, 3].item() == pytest.approx(want, rel=1e-6)
    layer = MinibatchStd(4).eval()
    layer.reference = torch.tensor(0.25)
    assert torch.equal(layer(h)[:, 3], torch.full((10,), 0.25))  # eval mode: the reference statistic


def test_minibatch_std_discriminator_sees_the_other_members_of_a_group():
    torch.manual_seed(0)
    D = discriminator(2, 16, 3, mbstd=4)
    assert isinstance(D[-2], MinibatchStd) and D[-1].in_features == 17
    x = torch.randn(8, 2, generator=_gen(5))
    y = x.clone()
    y[1] += 1.0  # move one member of the first group
    a, b = D(x)[:, 0], D(y)[:, 0]
    assert (a[0] - b[0]).abs() > 1e-6  # point 0 is unchanged, its group's spread is not
    torch.testing.assert_close(a[4:], b[4:])  # the second group does not notice
    t = GANTrainer(GANConfig(mbstd=4, **PLAIN, **TINY), seed=0, device="cpu")
    t.step(2)
    with torch.no_grad(), t.frozen():
        ref = t.d_point(x)  # a point alone: the statistic of G's samples, whatever its neighbours
        torch.testing.assert_close(t.d_point(x[:1]), ref[:1])


# ---- two-timescale learning rates -------------------------------------------------------------------

def test_each_player_steps_at_its_own_learning_rate():
    """With SGD and no decay, one step moves D by lr_d and G by lr_g times their gradients: the ratio
    of the updates of the two players is set by the two knobs alone."""
    cfg = GANConfig(optimizer="sgd", lr_d=4e-3, lr_g=1e-3, d_steps=1, decay=1.0, **PLAIN, **TINY)
    t = GANTrainer(cfg, seed=0, device="cpu")
    assert [g["lr"] for g in t.opt_d.param_groups] == [4e-3] and [g["lr"] for g in t.opt_g.param_groups] == [1e-3]
    D0, G0 = copy.deepcopy(t.D), copy.deepcopy(t.G)
    t.gen.manual_seed(7)
    t._real_i = t._z_i = 10**6  # draw fresh pools from the reseeded stream
    t.step(1)
    t2 = GANTrainer(cfg, seed=0, device="cpu")
    t2.gen.manual_seed(7)
    t2._real_i = t2._z_i = 10**6
    z = t2._z()
    x = t2._real()
    fake = t2.G(z)
    dl = d_loss("nonsaturating", *t2._d_pair(x, fake.detach()))
    gd = torch.autograd.grad(dl, list(t2.D.parameters()))
    for p0, g, p1 in zip(D0.parameters(), gd, t.D.parameters()):
        torch.testing.assert_close(p1, p0 - 4e-3 * g, rtol=1e-5, atol=1e-8)
    with torch.no_grad():
        for p, g in zip(t2.D.parameters(), gd):
            p -= 4e-3 * g
    gg = torch.autograd.grad(g_loss("nonsaturating", t2.D(fake)[:, 0]), list(t2.G.parameters()))
    for p0, g, p1 in zip(G0.parameters(), gg, t.G.parameters()):
        torch.testing.assert_close(p1, p0 - 1e-3 * g, rtol=1e-5, atol=1e-8)


# ---- every remedy trains, draws and has its lesson -------------------------------------------------------

@pytest.mark.parametrize("kw", [{"pack": 3}, {"unroll": 2}, {"r1": 1.0, "r2": 0.1}, {"mbstd": 4},
                                {"pack": 2, "mbstd": 4, "unroll": 1, "loss": "wgan_gp"}, {"pack": 2, "loss": "cfg"}])
def test_remedies_train_evaluate_and_draw(kw):
    t = GANTrainer(GANConfig(**{**PLAIN, **kw}, **TINY), seed=0, device="cpu")
    t.step(3)
    m = t.evaluate()
    assert 0 <= m["modes"] <= 8 and m["mmd"] > 0
    figs = EXPERIMENT.figures(t)
    assert {"game", "losses", "modes"} <= set(figs) and figs["game"].data
    if kw.get("pack", 1) > 1:
        assert "critic_w1" not in m  # a packed critic's gap is not W1 between p and q


def test_every_remedy_has_a_lesson():
    knobs = {"pack": 1, "unroll": 0, "r1": 0.0, "mbstd": 0}
    for name, off in knobs.items():
        assert any(les.values.get(name, off) != off for les in EXPERIMENT.lessons), name
    assert any(les.values.get("lr_d", 1e-3) != les.values.get("lr_g", 1e-3) and "timescale" in les.name
               for les in EXPERIMENT.lessons)
