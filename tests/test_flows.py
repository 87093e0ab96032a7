"""Flow layers and models against references: round trips, autograd Jacobians, MADE's masks by
gradients, normalisation on a grid, closed-form Gaussians; and the trainer's contract."""

import json
import math

import pytest
import torch

from dgm.families.flows import layers as L
from dgm.families.flows import mixing as X
from dgm.families.flows import model as M
from dgm.families.flows import trainer as T
from dgm.families.flows.lessons import EXPERIMENT
from dgm.core.metrics import EVAL_SAMPLES, Grid, wasserstein1


def randomize(module: torch.nn.Module, scale: float = 0.5, seed: int = 0) -> torch.nn.Module:
    """Random parameters (the zero-initialised conditioners would make every layer an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


LAYERS = {
    "planar": lambda d: L.Planar(d),
    "radial": lambda d: L.Radial(d),
    "nice": lambda d: L.AffineCoupling(d, additive=True),
    "realnvp": lambda d: L.AffineCoupling(d),
    "spline": lambda d: L.SplineCoupling(d, bound=3.0),
    "maf": lambda d: L.MAF(d),
    "iaf": lambda d: L.IAF(d),
    "actnorm": lambda d: X.ActNorm(d),
    "swap": lambda d: X.Permute(torch.arange(d - 1, -1, -1)),
    "rotation": lambda d: X.Rotation(d),
    "lu": lambda d: X.LULinear(d),
    "block": lambda d: M.Block([L.AffineCoupling(d), X.ActNorm(d), X.LULinear(d)]),
}


def _layer(name, dim=2, seed=0):
    torch.manual_seed(seed)
    return randomize(LAYERS[name](dim).double(), seed=seed)


def _points(n=64, dim=2, scale=2.0, seed=1):
    # scale 2 with a spline bound of 3: some points fall in the identity tails too
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("name", list(LAYERS))
def test_round_trip_and_log_det_sum(name, dim):
    layer = _layer(name, dim)
    x = _points(dim=dim)
    z, ld = layer(x)
    x2, ld_inv = layer.inverse(z)
    assert ld.shape == (x.shape[0],) and ld_inv.shape == (x.shape[0],)
    assert torch.allclose(x2, x, atol=1e-5), (x2 - x).abs().max()
    assert torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-5)
    # and the other way round, starting from the base side
    x3, _ld3 = layer.inverse(x)
    z3, _ld4 = layer(x3)
    assert torch.allclose(z3, x, atol=1e-5)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("name", list(LAYERS))
def test_log_det_matches_autograd_jacobian(name, dim):
    layer = _layer(name, dim, seed=2)
    x = _points(8, dim, seed=3)
    _z, ld = layer(x)
    _, ld_inv = layer.inverse(x)
    for i in range(x.shape[0]):
        jf = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[i])
        ji = torch.autograd.functional.jacobian(lambda v: layer.inverse(v[None])[0][0], x[i])
        assert abs(torch.linalg.slogdet(jf)[1] - ld[i]) < 1e-4, name
        assert abs(torch.linalg.slogdet(ji)[1] - ld_inv[i]) < 1e-4, name


def test_spline_is_monotone_maps_the_interval_onto_itself_and_starts_as_identity():
    g = torch.Generator().manual_seed(0)
    k, n = 6, 400
    x = torch.linspace(-3.5, 3.5, n, dtype=torch.float64)
    uw, uh, ud = (torch.randn(n, m, generator=g, dtype=torch.float64).expand(n, m) * 0 +
                  torch.randn(1, m, generator=g, dtype=torch.float64) for m in (k, k, k - 1))
    y, lad = L.rq_spline(x, uw, uh, ud, bound=3.0)
    assert (y[1:] > y[:-1]).all()
    edge = L.rq_spline(torch.tensor([-3.0, 3.0], dtype=torch.float64), uw[:2], uh[:2], ud[:2], bound=3.0)[0]
    assert torch.allclose(edge, torch.tensor([-3.0, 3.0], dtype=torch.float64), atol=1e-9)
    outside = x.abs() > 3
    assert torch.equal(y[outside], x[outside]) and (lad[outside] == 0).all()
    zero = torch.zeros(n, k, dtype=torch.float64)
    y0, lad0 = L.rq_spline(x, zero, zero, zero[:, :-1], bound=3.0)
    assert torch.allclose(y0, x, atol=1e-9) and lad0.abs().max() < 1e-9


def test_made_is_autoregressive_by_gradients():
    """Output i and its twin D+i have zero gradient with respect to inputs j >= i, and a nonzero one
    with respect to every j < i (karpathy/pytorch-made's check)."""
    d = 5
    made = randomize(L.MADE(d, hidden=32).double(), scale=0.7)
    x = _points(1, d)[0]
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None])[0], x)  # (2D, D)
    for out in range(2 * d):
        i = out % d
        for j in range(d):
            if j >= i:
                assert jac[out, j] == 0, (out, j)
            else:
                assert jac[out, j] != 0, (out, j)


@pytest.mark.parametrize("cls", [L.MAF, L.IAF])
def test_autoregressive_layers_have_triangular_jacobians(cls):
    d = 4
    layer = randomize(cls(d, hidden=16).double(), scale=0.7)
    x = _points(1, d)[0]
    for fn in (lambda v: layer(v[None])[0][0], lambda v: layer.inverse(v[None])[0][0]):
        jac = torch.autograd.functional.jacobian(fn, x)
        assert torch.equal(torch.triu(jac, 1), torch.zeros_like(jac))  # z_i depends on x_<=i only
        assert (torch.tril(jac, -1) != 0).any()


@pytest.mark.parametrize("flow", T.FLOWS)
def test_flow_log_prob_integrates_to_one(flow):
    cfg = T.FlowConfig(flow=flow, layers=3, hidden=16, mixing="lu")
    torch.manual_seed(0)
    model = randomize(T.build_flow(cfg).double(), scale=0.3)
    grid = Grid.over((-20.0, 20.0, -20.0, 20.0), 600, dtype=torch.float64)  # heavy tails: a wide box
    with torch.no_grad():
        total = grid.integral(model.log_prob(grid.points, chunk=50_000).exp())
    assert abs(total - 1) < 1e-2, (flow, total)


@pytest.mark.parametrize("flow", T.FLOWS)
def test_sample_log_prob_agrees_with_log_prob(flow):
    cfg = T.FlowConfig(flow=flow, layers=3, hidden=16, mixing="rotation")
    torch.manual_seed(1)
    model = randomize(T.build_flow(cfg).double(), scale=0.3)
    x, log_q = model.sample_with_log_prob(200, torch.Generator().manual_seed(0))
    assert torch.allclose(model.log_prob(x), log_q, atol=1e-6)


def test_actnorm_flow_is_a_diagonal_gaussian():
    an = X.ActNorm(2).double()
    with torch.no_grad():
        an.loc.copy_(torch.tensor([1.0, -2.0]))
        an.log_scale.copy_(torch.tensor([0.3, -0.7]))
    model = M.Flow([an])
    x = _points(50)
    ref = torch.distributions.Normal(an.loc.detach(), an.log_scale.detach().exp()).log_prob(x).sum(1)
    assert torch.allclose(model.log_prob(x), ref, atol=1e-10)


def test_identity_flow_has_zero_reverse_kl_to_its_base():
    model = T.build_flow(T.FlowConfig(flow="realnvp", layers=4, mixing="swap")).double()  # zero-initialised: the identity
    kl = model.reverse_kld(model.base_log_prob, 256, torch.Generator().manual_seed(0))
    assert abs(kl.detach().item()) < 1e-10
    x = _points(100)
    assert torch.allclose(model.forward_kld(x), -model.base_log_prob(x).mean())


def test_radial_and_planar_stay_invertible_with_adversarial_parameters():
    # planar: w.u_hat > -1 whatever u; radial: beta >= -alpha whatever its raw parameters
    p = L.Planar(2).double()
    with torch.no_grad():
        p.w.copy_(torch.tensor([1.0, 0.5]))
        p.u.copy_(torch.tensor([-10.0, -5.0]))
    assert (p.u_hat() @ p.w).detach().item() > -1
    r = L.Radial(2).double()
    with torch.no_grad():
        r.beta_raw.fill_(-30.0)
    for layer in (p, r):
        x = _points(64)
        z, ld = layer(x)
        assert torch.isfinite(ld).all() and torch.allclose(layer.inverse(z)[0], x, atol=1e-5)


def test_radial_inverse_is_the_closed_form_the_theory_describes():
    """Issue 15, item 6: the theory said planar *and* radial layers have no closed-form inverse; the radial one
    is a quadratic in the radius (one pass, exact to rounding), and only planar needs a numerical search."""
    from dgm.families.flows.lessons import THEORY
    from dgm.families.flows.trainer import DIRECTION_COST

    r = L.Radial(2).double()
    with torch.no_grad():
        r.beta_raw.fill_(1.3)
    x = _points(200)
    z, _ = r(x)
    assert torch.allclose(r.inverse(z)[0], x, atol=1e-12, rtol=0)
    text = " ".join(THEORY)
    clause = next(c for c in text.replace(";", ".").split(". ") if "no closed-form inverse" in c)
    assert "planar" in clause and "radial" not in clause
    assert "root of a quadratic" in text and DIRECTION_COST["radial"][0] == "a quadratic per layer"


def test_evaluate_reports_w1_with_its_floor():
    t = T.FlowTrainer(small(data="moons"), seed=0, device="cpu")
    t.step(3)
    e = t.final()
    with torch.no_grad():
        x = t.model.sample(EVAL_SAMPLES, t.eval_generator(2))
    assert e["w1"] == pytest.approx(wasserstein1(x[:1000], t.heldout[:1000]), rel=1e-9)
    assert 0 < e["w1_floor"] < e["w1"]
    fig = EXPERIMENT.figures(t)["w1"]
    assert fig.layout.annotations[0].text == "true samples of p"


# ---- trainer -----------------------------------------------------------------------------------

def small(**kw):
    base = {"layers": 2, "hidden": 16, "batch": 64}
    base.update(kw)
    return T.FlowConfig(**base)


def test_trainer_is_deterministic_whatever_the_bursts():
    a = T.FlowTrainer(small(), seed=3)
    b = T.FlowTrainer(small(), seed=3)
    a.step(30)
    for _ in range(3):
        b.step(10)
    assert a.latest == b.latest
    assert a.final() == b.final()


def test_evaluate_names_and_exact_kls():
    t = T.FlowTrainer(small(data="bimodal"), seed=0)
    t.step(20)
    f = t.final()
    assert {"nll", "forward_kl", "reverse_kl", "train_nll"} <= set(f)
    assert f["forward_kl"] >= 0 and f["reverse_kl"] >= 0
    # the grid KL of q to itself is zero, and the NLL is bounded below by the true entropy minus noise
    assert t.entropy is not None and f["nll"] > t.entropy - 0.2
    t2 = T.FlowTrainer(small(data="moons"), seed=0)
    t2.step(5)
    assert "forward_kl" not in t2.final() and "nll" in t2.final()


def test_reverse_kl_needs_a_density():
    with pytest.raises(ValueError, match="reverse KL"):
        T.FlowTrainer(small(data="moons", objective="reverse_kl"))
    t = T.FlowTrainer(small(data="U2", objective="reverse_kl", flow="planar", anneal_steps=100), seed=0)
    t.step(10)
    assert 0.01 <= t.latest["beta"] < 0.2
    assert {"loss", "nll", "forward_kl", "reverse_kl"} <= set(t.final())


def test_forward_kl_learns_quickly():
    t = T.FlowTrainer(T.FlowConfig(data="bimodal", layers=4, hidden=32, batch=256), seed=0)
    before = t.final()["nll"]
    t.step(200)
    after = t.final()["nll"]
    assert after < before - 0.3 and after < t.entropy + 0.4, (before, after, t.entropy)


def test_true_entropy_of_an_energy_is_finite():
    h = T.true_entropy("U1")
    assert h is not None and math.isfinite(h) and 1.0 < h < 4.0


def test_presets_are_valid_configs():
    for les in EXPERIMENT.lessons:
        cfg = T.FlowConfig(**les.values)
        if cfg.objective == "reverse_kl":
            assert T.reverse_ok(cfg.data), les.name
        assert les.blurb


def test_cli_prints_nll_and_kls(capsys):
    from dgm.core import cli

    assert cli.main(["flow", "--data", "8gaussians", "--flow", "realnvp", "--layers", "2", "--hidden", "16",
                     "--objective", "forward_kl", "--seed", "1", "--steps", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"nll", "forward_kl", "reverse_kl"} <= set(out["final"])


def test_figures_build_for_every_layer_type():
    from dgm.families.flows import figures as V

    for flow in ("planar", "maf", "iaf", "spline"):
        t = T.FlowTrainer(small(flow=flow, layers=3), seed=0)
        t.step(2)
        figs = V.figures(t, layer=2)
        assert {"target", "density", "samples", "layers", "logdet", "stage", "nll", "kl"} <= set(figs)


@pytest.mark.parametrize("flow", ["realnvp", "spline"])
def test_the_foreach_optimiser_trains_the_same_run_to_the_bit_as_the_single_tensor_one(flow):
    """The flow's Adam updates all its parameter tensors in one call (``foreach``: faster); on the CPU that must
    be the single-tensor update's arithmetic exactly, or every flow replay would have changed with it."""
    cfg = T.FlowConfig(flow=flow, layers=4)
    a, b = T.FlowTrainer(cfg, seed=2, device="cpu"), T.FlowTrainer(cfg, seed=2, device="cpu")
    assert a.opt.param_groups[0]["foreach"] is True
    b.opt.param_groups[0]["foreach"] = False
    a.step(30)
    b.step(30)
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_the_layer_row_always_shows_the_inspected_layer():
    """With more stages than panels the row shows evenly spaced layers, and always the one the slider inspects
    (it is outlined; the panels below show it), in place of the nearest inner one; base and output stay."""
    from dgm.families.flows.figures import MAX_PANELS, panel_indices

    assert panel_indices(5) == [0, 1, 2, 3, 4, 5]  # few layers: all of them
    spaced = panel_indices(12)
    assert len(spaced) == MAX_PANELS and spaced[0] == 0 and spaced[-1] == 12
    for picked in range(1, 13):
        idx = panel_indices(12, picked=picked)
        assert picked in idx and len(idx) == MAX_PANELS and idx[0] == 0 and idx[-1] == 12, (picked, idx)
        assert len(set(idx) ^ set(spaced)) in (0, 2), (picked, idx)  # one panel swapped at most
    assert panel_indices(12, picked=12) == spaced  # the default (the last layer): the evenly spaced row
