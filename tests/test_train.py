"""The trainer contract, on the demonstration trainer (a Gaussian fitted by maximum likelihood)."""

import math

import pytest
import torch

import dgm.core.data as data
from dgm.families.demo.figures import snapshot
from dgm.families.demo.trainer import DemoConfig, DemoTrainer
from dgm.core import registry
from dgm.core.train import History, TrainingDiverged


def params(t):
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def test_step_advances_and_returns_latest_metrics():
    t = DemoTrainer(DemoConfig(), seed=0)
    out = t.step(5)
    assert t.iteration == 5 and set(out) == {"nll"} and math.isfinite(out["nll"])
    assert [r["step"] for r in t.history.rows] == [1, 2, 3, 4, 5]


def test_converges_to_moment_matching():
    t = DemoTrainer(DemoConfig(data="bimodal", lr=0.01, batch=2048), seed=0)
    t.step(2000)
    p = data.get("bimodal")
    w, m, c = p.weights, p.means, p.covs
    mean = (w[:, None] * m).sum(0)
    cov = (w[:, None, None] * (c + m[:, :, None] * m[:, None, :])).sum(0) - mean[:, None] * mean[None, :]
    s = snapshot(t)
    assert torch.allclose(s["mean"], mean, atol=0.03)  # stochastic gradients, batch 2048
    assert torch.allclose(s["cov"], cov, atol=0.08)


def test_same_seed_same_numbers_whatever_the_bursts():
    a, b = DemoTrainer(DemoConfig(), seed=7), DemoTrainer(DemoConfig(), seed=7)
    a.step(120)
    for _ in range(12):
        b.step(10)
    assert torch.equal(params(a), params(b))
    assert a.final() == b.final()
    c = DemoTrainer(DemoConfig(), seed=8)
    c.step(120)
    assert not torch.equal(params(a), params(c))


def test_evaluation_does_not_disturb_training():
    a = DemoTrainer(DemoConfig(), seed=1)
    b = DemoTrainer(DemoConfig(), seed=1)
    b.eval_every = 7  # evaluate often in one run, never in the other
    a.eval_every = 0
    a.step(50)
    b.step(50)
    assert torch.equal(params(a), params(b))
    assert [r["step"] for r in b.history.evals] == [0, 7, 14, 21, 28, 35, 42, 49]


def test_evaluation_schedule_is_geometric_early_then_regular_and_by_steps_only():
    """Curves fill from the start: evaluations at 10, 20, 50 (the early steps below eval_every), then every
    eval_every steps; the same steps whatever the bursts (a replay gets the same curves)."""
    a, b = DemoTrainer(DemoConfig(), seed=2), DemoTrainer(DemoConfig(), seed=2)
    assert a.eval_every == 100
    a.step(450)
    for n in (3, 9, 1, 88, 349):
        b.step(n)
    steps = [r["step"] for r in a.history.evals]
    assert steps == [0, 10, 20, 50, 100, 200, 300, 400] == [r["step"] for r in b.history.evals]
    assert a.history.evals == b.history.evals
    assert a.eval_schedule() == "at steps 10, 20 and 50, then every 100 steps"
    a.eval_every = 1000
    assert a.eval_schedule() == "at steps 10, 20, 50, 100, 200 and 500, then every 1,000 steps"
    assert [s for s in range(3001) if a.eval_due(s)] == [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 3000]
    for every in (1000, 100, 7):  # what a replay's time estimate counts ahead: the schedule's evaluations in (a, b]
        a.eval_every = every
        for lo, hi in [(0, 3000), (0, 10), (10, 10), (15, 500), (499, 501), (1000, 999), (1, 7), (3, 2001)]:
            assert a.evals_between(lo, hi) == sum(a.eval_due(s) for s in range(lo + 1, hi + 1)), (every, lo, hi)
    a.eval_every = 0
    assert a.eval_schedule() == "at the end only" and not a.eval_due(10) and a.evals_between(0, 100) == 0


def test_history_stays_bounded_and_spans_the_run():
    h = History(max_rows=100)
    for s in range(1, 10_001):
        h.record(s, {"x": float(s)})
    assert 50 <= len(h) <= 100
    steps = [r["step"] for r in h.rows]
    assert steps == sorted(steps) and steps[-1] > 9_000 and steps[0] <= h.stride
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert gaps == {h.stride}, "rows are evenly spaced"


def test_trainer_history_bounded_over_a_long_run():
    t = DemoTrainer(DemoConfig(batch=8), seed=0)
    t.history.max_rows = 64
    t.step(3000)
    assert len(t.history) <= 64 and t.history.rows[-1]["step"] >= 2900


def test_forced_nan_is_caught_and_trainer_can_be_reset():
    t = DemoTrainer(DemoConfig(), seed=0)
    t.step(20)
    good = params(t).clone()
    with torch.no_grad():
        t.model.mean.fill_(float("nan"))
    with pytest.raises(TrainingDiverged) as e:
        t.step(10)
    assert e.value.step == 21 and "nll" in str(e.value)
    t.restore_last_good()
    assert t.iteration == 20 and torch.equal(params(t), good)
    t.step(5)
    assert math.isfinite(t.latest["nll"])
    t.reset()
    assert t.iteration == 0 and len(t.history) == 0
    fresh = DemoTrainer(DemoConfig(), seed=0)
    assert torch.equal(params(t), params(fresh))


def test_divergence_from_a_huge_learning_rate():
    t = DemoTrainer(DemoConfig(optimizer="sgd", lr=100.0), seed=0)
    with pytest.raises(TrainingDiverged):
        t.step(100)
    t.reset()
    assert t.iteration == 0


def test_snapshot_does_not_change_state():
    t = DemoTrainer(DemoConfig(), seed=0)
    t.step(10)
    before, gen = params(t).clone(), t.gen.get_state().clone()
    snapshot(t)
    t.final()
    assert torch.equal(before, params(t)) and torch.equal(gen, t.gen.get_state())


def test_run_with_a_time_budget():
    t = DemoTrainer(DemoConfig(), seed=0)
    n = t.run(seconds=0.2, burst=10)
    assert n >= 10 and n % 10 == 0 and t.iteration == n


@pytest.mark.parametrize("name", registry.names())
def test_every_experiment_resets_to_a_fresh_run_of_its_settings(name):
    """The page's Reset (``Trainer.reset``): the GAN lottery's reset once re-ran its constructor with one seed
    in place of its list of seeds, and the page crashed."""
    exp = registry.get(name)
    t = exp.make(seed=3, device="cpu")
    t.step(2)
    t.reset()
    fresh = exp.make(seed=3, device="cpu")
    assert t.iteration == 0 and len(t.history) == 0
    a, b = t.checkpoint()["objects"], fresh.checkpoint()["objects"]
    assert a.keys() == b.keys() and all(torch.equal(x, y) for x, y in zip(tensors_of(a), tensors_of(b), strict=True))


def tensors_of(obj) -> list[torch.Tensor]:
    """Every tensor in nested dicts and lists (state dicts), in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in obj for t in tensors_of(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_of(v)]
    return []


@pytest.mark.parametrize("name", [n for n in registry.names() if n != "arena"])  # the arena's: tests/test_arena.py
def test_a_preview_without_evaluations_trains_the_same_model(name):
    """A Step's preview (``step(evaluate=False)``, dgm.ui.scheduling.step) is the run's model at that step: the
    evaluations it leaves out (here at steps 0 and 10) never touch the training stream. (What they make, the
    best-validation checkpoint of the VAE and autoregressive pages, the preview has not: the job brings it.)"""
    exp = registry.get(name)
    a, b = exp.make(seed=5, device="cpu"), exp.make(seed=5, device="cpu")
    a.step(11)
    b.step(11, evaluate=False)
    assert a.iteration == b.iteration == 11 and b.history.evals == [] and (not a.eval_every or a.history.evals)
    x, y = ({k: v for k, v in t.checkpoint()["objects"].items() if not k.startswith("best")} for t in (a, b))
    assert x.keys() and x.keys() == y.keys()
    assert all(torch.equal(p, q) for p, q in zip(tensors_of(x), tensors_of(y), strict=True))
