"""Many seeds at once for the flows, the VAE and diffusion (dgm/core/many.py, dgm/core/stacked.py FuncStack):
a batch of one is the single-run trainer, run k of a batch is the run of its seed, a batch replays, a run
that diverges stops without touching the others, and a batch's checkpoint continues it exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dgm.core import cli
from dgm.core.stacked import FuncStack, clip_per_run_
from dgm.families.diffusion.seeds import DiffusionSeeds
from dgm.families.diffusion.trainer import DiffusionConfig, DiffusionTrainer
from dgm.families.flows.seeds import FlowSeeds
from dgm.families.flows.trainer import FlowConfig, FlowTrainer
from dgm.families.vae.seeds import VAESeeds
from dgm.families.vae.trainer import VAEConfig, VAETrainer

#: (single-run trainer, batched trainer, config, the stacked module that holds the trained weights)
CASES = {
    "flow-realnvp": (FlowTrainer, FlowSeeds, FlowConfig(batch=256), "model"),
    "flow-spline-lu": (FlowTrainer, FlowSeeds, FlowConfig(flow="spline", mixing="lu", batch=256), "model"),
    "flow-reverse-kl": (FlowTrainer, FlowSeeds, FlowConfig(objective="reverse_kl", data="U1", flow="planar",
                                                           batch=256), "model"),
    "vae-digits": (VAETrainer, VAESeeds, VAEConfig(width=64), "model"),
    "vae-iwae-vamp": (VAETrainer, VAESeeds, VAEConfig(width=64, objective="iwae", prior="vamp"), "model"),
    "vae-2d-mog-freebits": (VAETrainer, VAESeeds, VAEConfig(data="8gaussians", prior="mog", free_bits=0.5,
                                                            width=64), "model"),
    "diffusion-ddpm-ema": (DiffusionTrainer, DiffusionSeeds, DiffusionConfig(batch=128), "net"),
    # a small network sampled with 20 steps: the pairs drawn at the reflow and the evaluations are its ODE's
    "flow-matching-ot-reflow": (DiffusionTrainer, DiffusionSeeds,
                                DiffusionConfig(model="flow", coupling="ot", reflow_at=6, batch=128, width=32, depth=2,
                                                nfe=20), "net"),
    "diffusion-conditional": (DiffusionTrainer, DiffusionSeeds, DiffusionConfig(conditional=True, batch=128), "net"),
}


def _quiet(*trainers):
    """Trainers that evaluate only when asked (the tests compare weights and losses)."""
    for t in trainers:
        t.eval_every = 0
    return trainers


def _weights(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_a_func_stack_is_its_modules_side_by_side_and_clips_each_run_alone():
    torch.manual_seed(0)
    mods = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)) for _ in range(3)]
    stack = FuncStack(mods)
    x = torch.randn(3, 5, 3)
    out = stack.vmap(lambda m, v: m(v).pow(2).sum())(x)  # (3,)
    want = torch.stack([m(x[k]).pow(2).sum() for k, m in enumerate(mods)])
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    out[1].backward()  # run 1's gradient lands in run 1's slices only
    assert all(float(p.grad[[0, 2]].abs().max()) == 0 and float(p.grad[1].abs().max()) > 0 for p in stack.parameters())
    fresh = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    torch.testing.assert_close(_weights(stack.load_into(2, fresh)), _weights(mods[2]))
    # per-run clipping is torch's clip_grad_norm_ applied to each run's own gradients
    stack.zero_grad()
    out = stack.vmap(lambda m, v: m(v).pow(2).sum())(x * torch.tensor([1.0, 30.0, 0.01])[:, None, None])
    out.sum().backward()
    want = []
    for k in range(3):
        ps = [nn.Parameter(p[k].detach().clone()) for p in stack.parameters()]
        for p, q in zip(ps, stack.parameters()):
            p.grad = q.grad[k].clone()
        nn.utils.clip_grad_norm_(ps, 5.0)
        want.append(torch.cat([p.grad.flatten() for p in ps]))
    clip_per_run_(list(stack.parameters()), 5.0)
    got = [torch.cat([p.grad[k].flatten() for p in stack.parameters()]) for k in range(3)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert float(got[1].norm()) == pytest.approx(5.0, rel=1e-4) and float(got[2].norm()) < 5.0


@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_of_one_is_the_single_run(case):
    """Same initial weights, the same random stream drawn in the same order, the same loss and optimiser:
    after 12 steps the weights agree to float rounding (a batched product rounds differently from a plain
    one, and Adam carries such differences along), and so do the logged losses."""
    single_cls, batch_cls, cfg, name = CASES[case]
    single, batch = _quiet(single_cls(cfg, seed=3, device="cpu"), batch_cls(cfg, seeds=[3], device="cpu"))
    single.step(12)
    batch.step(12)
    with batch.as_run(0) as run:
        torch.testing.assert_close(_weights(getattr(run, name)), _weights(getattr(single, name)), rtol=0, atol=2e-5)
        for key, value in single.latest.items():
            assert run.latest[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert run.iteration == single.iteration == 12


@pytest.mark.parametrize("case", ["flow-realnvp", "vae-digits", "flow-matching-ot-reflow"])
def test_run_k_of_a_batch_is_the_run_of_its_seed_and_a_batch_replays(case):
    _, batch_cls, cfg, name = CASES[case]
    big, alone, again = _quiet(*(batch_cls(cfg, seeds=s, device="cpu") for s in ([3, 5, 7], [5], [3, 5, 7])))
    for b in (big, alone, again):
        b.step(10)
    with big.as_run(1) as r1:
        w_big = _weights(getattr(r1, name)).clone()
    with alone.as_run(0) as r0:
        torch.testing.assert_close(_weights(getattr(r0, name)), w_big, rtol=0, atol=2e-5)
    assert torch.equal(_weights(getattr(big, name)), _weights(getattr(again, name))), "the same seeds gave another batch"
    first = next(getattr(big, name).parameters())
    assert not torch.equal(first[0], first[1]), "two seeds gave the same run"


@pytest.mark.parametrize("case", ["flow-realnvp", "vae-digits", "diffusion-ddpm-ema"])
def test_a_run_that_diverges_stops_and_leaves_the_others_alone(case):
    _, batch_cls, cfg, name = CASES[case]
    clean, hit = _quiet(batch_cls(cfg, seeds=[0, 1, 2], device="cpu"), batch_cls(cfg, seeds=[0, 1, 2], device="cpu"))
    clean.step(5)
    hit.step(5)
    with torch.no_grad():
        for p in getattr(hit, name).parameters():
            p[1].fill_(float("nan"))  # run 1 breaks
    clean.step(6)
    hit.step(6)
    assert hit.diverged == {1: 6} and clean.diverged == {}
    for k in (0, 2):  # the other runs went on exactly as without the broken one
        for pa, pb in zip(getattr(clean, name).parameters(), getattr(hit, name).parameters()):
            assert torch.equal(pa[k], pb[k])
    stopped = [p[1].clone() for p in getattr(hit, name).parameters()]
    assert all(torch.isfinite(p).all() for p in stopped), "the stopped run keeps its last finite weights"
    hit.step(3)
    assert all(torch.equal(p[1], s) for p, s in zip(getattr(hit, name).parameters(), stopped)), "it must not move"
    rows = hit.finals()
    assert rows[1]["diverged_at"] == 6 and "diverged_at" not in rows[0] and rows[2]["seed"] == 2
    assert hit.summary()["diverged"] == 1


@pytest.mark.parametrize("case", ["vae-digits", "flow-matching-ot-reflow"])
def test_a_batch_checkpoint_continues_it_exactly(case):
    """Each run's stream, batch pool, reflow pairs and own modules (the VAE's best checkpoint) travel with it."""
    _, batch_cls, cfg, name = CASES[case]
    b = batch_cls(cfg, seeds=[2, 9], device="cpu")
    b.eval_every = 4
    b.step(4)
    ckpt = b.checkpoint()
    b.step(5)
    want = _weights(getattr(b, name)).clone()
    finals = b.finals()
    b.restore(ckpt)
    b.step(5)
    assert torch.equal(_weights(getattr(b, name)), want)
    assert b.finals() == finals


@pytest.mark.parametrize("exp, key", [("flow", "nll"), ("vae", "val_elbo"), ("diffusion", "mmd")])
def test_cli_trains_many_seeds_of_every_batched_family(exp, key, tmp_path):
    res = cli.run([exp, "--seeds", "2", "--seed", "4", "--steps", "10", "--out", str(tmp_path)])
    assert res["seeds"] == [4, 5] and [x["seed"] for x in res["runs"]] == [4, 5]
    assert res["summary"][f"{key}_median"] == pytest.approx(float(np.median([x[key] for x in res["runs"]])))
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape[:2] == (2, 2500) and np.isfinite(samples).all()
    single = cli.run([exp, "--seed", "5", "--steps", "10"])["final"]
    assert single[key] == pytest.approx(res["runs"][1][key], rel=1e-3)
