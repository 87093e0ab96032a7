"""The autoregressive family (issue 20): the autoregressive property by gradients for every model and
ordering, exact likelihoods that sum to 1 over every value of a tiny case, sampling vectorised over the
batch and drawn from the model's own distribution, NADE's recursion against the direct sum, the 2D
model against torch.distributions, and the trainer's figures and checkpoints."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import distributions as D

import dgm.families.autoregressive.model as armodel
from dgm.families.autoregressive.layers import before, orderings, positions
from dgm.families.autoregressive.model import FVSBN, MADE, MDN2D, NADE, PixelCNN, categorical_log_lik, dependency
from dgm.families.autoregressive.trainer import ARConfig, ARTrainer


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomise(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (FVSBN starts at zero; a zero weight would hide a dependency)."""
    g = gen(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def image_models(d: int = 64, levels: int = 5, side: int = 8):
    """(name, model) for every model and ordering kind, small."""
    g = gen(1)
    out = []
    for natural in (True, False):
        kind = "natural" if natural else "random"
        out.append((f"fvsbn-{kind}", FVSBN(d, levels, orderings(d, 1, natural, g))))
        out.append((f"nade-{kind}", NADE(d, levels, orderings(d, 1, natural, g), 16)))
        out.append((f"made-{kind}", MADE(d, levels, orderings(d, 1, natural, g), 32, 2, g)))
    out.append(("made-3-orderings", MADE(d, levels, orderings(d, 3, False, g), 32, 2, g)))
    if side * side == d:
        out.append(("pixelcnn-plain", PixelCNN(levels, side, 8, 5, 5, gated=False)))
        out.append(("pixelcnn-gated", PixelCNN(levels, side, 8, 5, 7, gated=True)))
    return [(n, randomise(m)) for n, m in out]


MODELS = image_models()


@pytest.mark.parametrize("name,model", MODELS, ids=[n for n, _ in MODELS])
def test_no_conditional_depends_on_its_pixel_or_a_later_one(name, model):
    x = torch.randint(0, model.L, (8, model.D), generator=gen(2))
    for k in range(model.n_orders):
        dep = dependency(model, x, k)  # (D, D)
        pos = positions(model.order(k))
        earlier = pos[None, :] < pos[:, None]
        assert dep[~earlier].abs().max() == 0, f"{name}, ordering {k}: an output sees its own or a later pixel"
        seen = (dep[earlier] > 0).float().mean()
        if name.startswith(("fvsbn", "nade", "pixelcnn-gated")):
            assert seen == 1, f"{name}: every earlier pixel must reach the conditional ({seen:.3f})"
        elif name.startswith("made"):  # random connectivity may leave pairs without a path: the masks say which
            ms = model.masks(k)
            paths = ms[-1].unflatten(0, (model.D, model.L)).amax(1)
            for mk in reversed(ms[:-1]):
                paths = paths @ mk
            assert not ((dep > 0) & (paths == 0)).any()
            assert (dep > 0).sum() >= 0.95 * (paths > 0).sum() and seen > 0.8, seen
        else:  # the plain PixelCNN: a blind spot above-right, the same for every pixel far enough in
            i, blind, near = 5 * 8 + 2, 4 * 8 + 7, 4 * 8 + 3
            assert dep[i, blind] == 0 and dep[i, near] > 0 and seen < 0.95


def test_dependency_agrees_with_autograd_jacobian():
    m = dict(MODELS)["made-random"]
    x = torch.randint(0, m.L, (1, m.D), generator=gen(3))
    e0 = m.embed(x)

    def logp(e):  # log p(x_i | .) of every pixel, as a function of the input
        return torch.log_softmax(m(e, 0), -1).gather(-1, x[..., None])[0, :, 0]

    jac = torch.autograd.functional.jacobian(logp, e0)[:, 0, :]  # (D, D)
    assert torch.allclose(dependency(m, x, 0), jac.abs(), atol=1e-6)


def _enumerate(model) -> torch.Tensor:
    grid = torch.tensor(list(itertools.product(range(model.L), repeat=model.D)))  # (L^D, D)
    return model.log_prob(grid).double().exp().sum()


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "made-ensemble", "pixelcnn-plain", "pixelcnn-gated"])
def test_exact_likelihood_sums_to_one_over_every_value(name):
    """3 pixels x 3 levels (27 values), and a 2x2 image x 3 levels (81) for the PixelCNNs."""
    g = gen(4)
    model = {
        "fvsbn": lambda: FVSBN(3, 3, orderings(3, 1, False, g)),
        "nade": lambda: NADE(3, 3, orderings(3, 1, False, g), 8),
        "made": lambda: MADE(3, 3, orderings(3, 1, True, g), 8, 2, g),
        "made-ensemble": lambda: MADE(3, 3, orderings(3, 4, False, g), 8, 2, g),
        "pixelcnn-plain": lambda: PixelCNN(3, 2, 4, 2, 3, gated=False),
        "pixelcnn-gated": lambda: PixelCNN(3, 2, 4, 2, 3, gated=True),
    }[name]()
    randomise(model, 5)
    with torch.no_grad():
        total = _enumerate(model)
    assert total == pytest.approx(1.0, abs=2e-6)
    # the check can fail: a model that peeks at its own pixel is not normalised
    if name == "fvsbn":
        with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(armodel, "before", lambda order: torch.ones(3, 3))
            assert abs(float(_enumerate(model)) - 1) > 1e-3


def test_categorical_log_lik_is_torch_distributions():
    logits = torch.randn(4, 6, 17, generator=gen(6))
    x = torch.randint(0, 17, (4, 6), generator=gen(7))
    assert torch.allclose(categorical_log_lik(logits, x), D.Categorical(logits=logits).log_prob(x), atol=1e-6)


def test_nade_recursion_equals_the_direct_sum():
    g = gen(8)
    m = randomise(NADE(10, 4, orderings(10, 1, False, g), 6), 9)
    x = torch.randint(0, 4, (5, 10), generator=g)
    e, o = m.embed(x), m.order(0)
    direct = torch.empty(5, 10, 4)
    for t, i in enumerate(o.tolist()):  # h_t from the pixels before step t, summed afresh: O(D^2 H)
        a = m.c + sum((e[:, o[s], None] * m.W[o[s]] for s in range(t)), torch.zeros(6))
        direct[:, i] = torch.sigmoid(a) @ m.V[i].T + m.b[i]
    assert torch.allclose(m(e, 0), direct, atol=1e-5)


@pytest.mark.parametrize("name", ["fvsbn-random", "nade-random", "made-3-orderings", "pixelcnn-gated"])
def test_sampling_draws_one_pixel_per_step_for_the_whole_batch(name, monkeypatch):
    model = dict(image_models())[name]
    calls = []
    real = armodel.draw
    monkeypatch.setattr(armodel, "draw", lambda logits, g: calls.append(logits.shape[0]) or real(logits, g))
    x, pos = model.sample(40, gen(10))
    assert x.shape == (40, model.D) and x.dtype == torch.long and 0 <= x.min() and x.max() < model.L
    assert len(calls) == model.D  # one draw per pixel for the whole batch (every ordering at once), never per image
    if model.n_orders == 1:
        assert sum(calls) == 40 * model.D
    else:  # the orderings' groups padded to the largest
        assert len(set(map(tuple, pos.tolist()))) == model.n_orders and sum(calls) >= 40 * model.D
    # every image lists each step once: a permutation
    assert (pos.sort(1).values == torch.arange(model.D)).all()


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made-ensemble", "pixelcnn"])
def test_samples_follow_the_models_own_likelihood(name):
    """On 3 pixels x 3 levels (2x2 for the PixelCNN), the frequencies of 20,000 samples match exp(log p)."""
    g = gen(11)
    model = {
        "fvsbn": lambda: FVSBN(3, 3, orderings(3, 1, False, g)),
        "nade": lambda: NADE(3, 3, orderings(3, 1, False, g), 8),
        "made-ensemble": lambda: MADE(3, 3, orderings(3, 3, False, g), 8, 2, g),
        "pixelcnn": lambda: PixelCNN(3, 2, 4, 2, 3, gated=True),
    }[name]()
    randomise(model, 12)
    x, _ = model.sample(20_000, gen(13))
    idx = (x * (3 ** torch.arange(model.D - 1, -1, -1))).sum(1)
    freq = torch.bincount(idx, minlength=3 ** model.D).double() / len(x)
    grid = torch.tensor(list(itertools.product(range(3), repeat=model.D)))
    with torch.no_grad():
        p = model.log_prob(grid).double().exp()
    assert 0.5 * (freq - p).abs().sum() < 0.03  # total variation; a wrong conditional gives far more


def test_the_2d_model_is_a_1d_mixture_times_a_conditional_mixture():
    m = randomise(MDN2D(3, 16, first=1, scale=2.0), 14)
    x = torch.randn(50, 2, generator=gen(15)) * 2
    lg, mu, ls = m.first_params()
    first = D.MixtureSameFamily(D.Categorical(logits=lg), D.Normal(mu, ls.exp())).log_prob(x[:, 1])
    clg, cmu, cls = m.cond_params(x[:, 1])
    cond = D.MixtureSameFamily(D.Categorical(logits=clg), D.Normal(cmu, cls.exp())).log_prob(x[:, 0])
    assert torch.allclose(m.log_prob(x), first + cond, atol=1e-5)
    # x1 is the second factor here: the first factor does not depend on it
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.log_prob_first(xr[:, 1]).sum(), xr)
    assert (g[:, 0] == 0).all() and (g[:, 1] != 0).any()
    # the grid evaluation is the pointwise one, and the density integrates to 1
    xs, ys = torch.linspace(-12, 12, 201), torch.linspace(-10, 10, 201)
    lp = m.grid_log_prob(xs, ys)  # (Ny, Nx)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    assert torch.allclose(lp, m.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).view(201, 201), atol=1e-4)
    u = torch.linspace(-60, 60, 2401)
    with torch.no_grad():
        mass = float(m.grid_log_prob(u, u).double().exp().sum() * (120 / 2400) ** 2)
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_masks_follow_the_ordering():
    order = torch.tensor([2, 0, 1])
    assert torch.equal(positions(order), torch.tensor([1, 2, 0]))
    assert torch.equal(before(order), torch.tensor([[0, 0, 1], [1, 0, 1], [0, 0, 0]]).float())


def test_trainer_reports_the_best_checkpoint_and_is_deterministic():
    cfg = ARConfig(model="made", hidden=64, orderings=2, ordering="random", train_size=100, lr=3e-3)
    a = ARTrainer(cfg, seed=1, device="cpu")
    a.eval_every = 50
    a.step(200)
    f = a.final()
    for key in ("nll", "val_nll", "bits_per_dim", "sample_seconds", "nll_one", "best_step", "train_nll"):
        assert key in f and math.isfinite(f[key]), key
    assert f["bits_per_dim"] == pytest.approx(f["nll"] / (64 * math.log(2)))
    evals = a.history.evals
    best = min(evals, key=lambda r: r["val_nll"])
    assert f["best_step"] == best["step"] and f["best_val_nll"] == pytest.approx(best["val_nll"])
    assert f["train_nll"] < f["val_nll"]  # 100 digits: it overfits
    with torch.no_grad():  # the reported test NLL is the best checkpoint's, exactly
        assert f["nll"] == pytest.approx(float(-a.best_model.log_prob(a.test_x).mean()), rel=1e-6)
    b = ARTrainer(cfg, seed=1, device="cpu")
    b.eval_every = 50
    b.step(200)
    assert {k: v for k, v in b.final().items() if k != "sample_seconds"} == \
        {k: v for k, v in f.items() if k != "sample_seconds"}


def test_binarised_digits_and_2d_data():
    t = ARTrainer(ARConfig(data="digits_binary", model="fvsbn"), seed=0, device="cpu")
    assert t.levels == 2 and set(t.train_x.unique().tolist()) == {0, 1}
    t.step(5)
    t2 = ARTrainer(ARConfig(data="8gaussians", batch=128, hidden=32), seed=0, device="cpu")
    t2.step(100)
    f = t2.final()
    assert f["nll"] < 5 and "bits_per_dim" not in f


def test_cli_final_has_the_issues_metrics(capsys):
    from dgm.core.cli import main

    assert main(["autoregressive", "--steps", "20", "--model", "fvsbn", "--seed", "2"]) == 0
    final = json.loads(capsys.readouterr().out)["final"]
    assert {"nll", "val_nll", "bits_per_dim", "sample_seconds"} <= set(final)
    assert final["sample_seconds"] > 0
    assert main(["autoregressive", "--model", "nope"]) == 2  # refused before training, one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("python -m dgm autoregressive:") and "nope" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_every_figure_of_the_exports_builds():
    """The figures the CLI's --png, the figures zip and the GIF draw (the GIF: the first, the samples)."""
    from dgm.families.autoregressive.lessons import EXPERIMENT

    t = ARTrainer(ARConfig(model="nade", hidden=32, train_size=100), seed=0, device="cpu")
    t.step(3)
    figs = EXPERIMENT.figures(t)
    assert list(figs) == ["samples", "pixels", "dependency", "matrix", "nll"]
    titles = {name: figs[name].layout.title.text for name in figs}
    assert titles["samples"].startswith("64 samples") and "row 5, col 2" in titles["dependency"]
    assert titles["matrix"].startswith("All pairs: 0 later inputs used")
    t2 = ARTrainer(ARConfig(data="moons", hidden=32), seed=0, device="cpu")
    t2.step(3)
    figs2 = EXPERIMENT.figures(t2)
    assert list(figs2) == ["density", "target", "samples", "conditionals", "nll"]
    assert all(figs2[name].data for name in figs2)


def test_weights_carry_their_orderings_to_a_run_of_another_seed():
    from dgm.core import export as X

    cfg = ARConfig(model="made", hidden=32, orderings=2, ordering="random")
    a = ARTrainer(cfg, seed=1, device="cpu")
    a.step(20)
    b = ARTrainer(cfg, seed=2, device="cpu")  # other random orderings and connectivities
    assert not torch.equal(a.model.orders, b.model.orders)
    with torch.no_grad():
        b.model.log_prob(a.test_x[:5])  # caches b's own masks
        X.load_weights(b, X.weights_bytes(a, "autoregressive"), "autoregressive")
        assert torch.equal(a.model.log_prob(a.test_x), b.model.log_prob(a.test_x))


def _mask_offsets(k: int, kind: str) -> list[tuple[int, int]]:
    """The (row, column) offsets a k x k masked convolution reads, from the definition (raster order)."""
    h = k // 2
    return [(dr, dc) for dr in range(-h, h + 1) for dc in range(-h, h + 1)
            if dr < 0 or (dr == 0 and (dc < 0 or (dc == 0 and kind == "B")))]


def _blind_pairs_from_masks(side: int, kernel: int, layers: int) -> int:
    """Earlier (output, input) pairs that no path of a plain PixelCNN joins: from each output pixel back through
    layers - 1 3x3 "B" convolutions (residual: the centre is in B) and the first kernel x kernel "A", staying in
    the image (zero padding carries nothing)."""
    inside = lambda r, c: 0 <= r < side and 0 <= c < side  # noqa: E731
    blind = 0
    for r, c in itertools.product(range(side), repeat=2):
        reach = {(r, c)}
        for offsets in [_mask_offsets(3, "B")] * (layers - 1) + [_mask_offsets(kernel, "A")]:
            reach = {(a + dr, b + dc) for a, b in reach for dr, dc in offsets if inside(a + dr, b + dc)}
        blind += sum((r2, c2) not in reach for r2, c2 in itertools.product(range(side), repeat=2)
                     if (r2, c2) < (r, c))
    return blind


@pytest.mark.parametrize("stack,kernel,layers", [("plain", 5, 6), ("plain", 3, 4), ("plain", 5, 12), ("gated", 5, 6)])
def test_the_blind_spot_the_dependency_check_counts_is_the_masks_own(stack, kernel, layers):
    """The trainer's check (gradients) counts exactly the pairs the masks leave without a path, before and after
    training; the blind-spot lesson's watch reads that count and its point is the masks' count."""
    from dgm.core import registry
    from dgm.families.autoregressive import lessons

    cfg = ARConfig(model="pixelcnn", stack=stack, kernel=kernel, layers=layers, channels=16, train_size=200)
    t = ARTrainer(cfg, seed=3, device="cpu")
    expected = 0 if stack == "gated" else _blind_pairs_from_masks(8, kernel, layers)
    assert t.dependency_counts() == (0, expected, 64 * 63 // 2)
    for _ in range(20):
        t.train_step()
    assert t.dependency_counts(current=False) == t.dependency_counts()  # kept with its step, then measured anew
    assert t.dependency_counts()[1] == expected
    if (stack, kernel, layers) == ("plain", 5, 6):
        assert expected == lessons.BLIND_PAIRS == 210
        les = next(les for les in lessons.LESSONS if les.name == "the blind spot")
        assert les.watch.reached(registry.get("autoregressive").make(cfg, seed=0, device="cpu"))


def test_sampling_is_timed_against_one_likelihood_pass_of_the_same_images():
    """The page's sampling record: the images, the step each pixel was drawn at, and both times; the slow-sampling
    watch is their ratio (unmeasured before the page samples), about the 64 passes against one."""
    from dgm.families.autoregressive import lessons

    t = ARTrainer(ARConfig(model="pixelcnn", stack="gated", channels=16, train_size=200), seed=0, device="cpu")
    watch = next(les for les in lessons.LESSONS if les.name == "slow sampling").watch
    assert t.sampling is None and watch.value(t) is None
    watch.measure(t)
    rec = t.sampling
    assert rec["x"].shape == (36, 64) and rec["x"].min() >= 0 and rec["x"].max() <= 1
    assert sorted(rec["pos"][0].tolist()) == list(range(64)) and rec["step"] == 0
    assert 0 < rec["likelihood_seconds"] < rec["seconds"]
    assert watch.value(t) == pytest.approx(rec["seconds"] / rec["likelihood_seconds"])
    assert watch.value(t) > 5  # 64 sequential passes against one (about 60 measured; a loose bound for a busy CPU)
