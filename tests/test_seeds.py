"""Many seeds at once (dgm/core/stacked.py, dgm/families/gan/seeds.py): a batch of one is the single-run
trainer, run k of a batch is the run of its seed, and a run that diverges stops without touching the others."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dgm.core import cli, nets
from dgm.core.stacked import StackedMLP
from dgm.families.gan.seeds import GANSeeds
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import GANTrainer


def _no_eval(*trainers):
    """Trainers that evaluate only when asked (the tests below compare weights and losses)."""
    for t in trainers:
        t.eval_every = 0
    return trainers


def _weights(net) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_a_stacked_mlp_is_its_networks_side_by_side():
    torch.manual_seed(0)
    mlps = [nets.mlp(3, 2, 16, 2, act="leaky_relu") for _ in range(4)]
    net = StackedMLP.from_mlps(mlps)
    x = torch.randn(4, 10, 3)
    want = torch.stack([m(x[k]) for k, m in enumerate(mlps)])
    torch.testing.assert_close(net(x), want, rtol=1e-6, atol=1e-6)
    # gradients of run k land in run k's slice only
    net(x)[1].sum().backward()
    assert all(float(p.grad[[0, 2, 3]].abs().max()) == 0 and float(p.grad[1].abs().max()) > 0 for p in net.parameters())
    other = nets.mlp(3, 2, 16, 2, act="leaky_relu")
    torch.testing.assert_close(_weights(net.load_into(2, other)), _weights(mlps[2]))
    with pytest.raises(ValueError, match="spectral"):
        StackedMLP.from_mlps([nets.mlp(2, 1, 8, 1, spectral_norm=True)])


@pytest.mark.parametrize("kw", [dict(ema=0.99), dict(loss="wgan_gp", optimizer="sgd"), dict(loss="wgan", optimizer="sgd"),
                                dict(loss="cfg", d_steps=1), dict(pack=4, r1=1.0, r2=0.1), dict(loss="wgan_gp", pack=2,
                                                                                                 optimizer="sgd")],
                         ids=["ns-adam-ema-decay", "wgan_gp-sgd", "wgan-sgd", "cfg-adam", "pacgan4-r1-r2", "pacgan2-wgan_gp"])
def test_a_batch_of_one_is_the_single_run(kw):
    """Same initial weights, same random stream in the same order, same losses and optimiser: the
    weights agree to float rounding (batched and plain matrix products round differently) after 40
    steps, across two refills of the sample pools, and so do the losses and the evaluation. (Adam and
    RMSprop divide each gradient by its running scale: where a gradient is near zero, e.g. under the
    critic losses, a rounding difference becomes a step of the order of the learning rate, so those
    losses are checked with SGD, which carries a difference along without amplifying it.)"""
    cfg = GANConfig(batch=64, **kw)
    single, batch = _no_eval(GANTrainer(cfg, seed=3, device="cpu"), GANSeeds(cfg, seeds=[3], device="cpu"))
    single.step(40)
    batch.step(40)
    with batch.as_run(0) as run:
        for a, b in ((single.G, run.G), (single.D, run.D)):
            torch.testing.assert_close(_weights(b), _weights(a), rtol=0, atol=2e-5)
        for key in ("d_loss", "g_loss"):
            assert run.latest[key] == pytest.approx(single.latest[key], rel=1e-4, abs=1e-5)
    if "ema" in kw:  # evaluation: each run by its own trainer, on its own evaluation material
        f_single, f_batch = single.final(), batch.finals()[0]
        assert f_batch["seed"] == 3 and f_batch["modes"] == f_single["modes"]
        for key in ("mmd", "w1", "js"):
            assert f_batch[key] == pytest.approx(f_single[key], rel=1e-3)


def test_run_k_of_a_batch_is_the_run_of_its_seed_and_a_batch_replays():
    cfg = GANConfig(batch=64, optimizer="sgd")  # SGD: see the test above
    big, alone, again = _no_eval(*(GANSeeds(cfg, seeds=s, device="cpu") for s in ([3, 5, 7], [5], [3, 5, 7])))
    for b in (big, alone, again):
        b.step(60)
    with big.as_run(1) as r1:
        w_big = _weights(r1.G).clone()
    with alone.as_run(0) as r0:
        torch.testing.assert_close(_weights(r0.G), w_big, rtol=0, atol=1e-5)
    assert torch.equal(_weights(big.G), _weights(again.G)), "the same seeds gave another batch"
    assert not torch.equal(big.G.weights[0][0], big.G.weights[0][1]), "two seeds gave the same run"


def test_a_run_that_diverges_stops_and_leaves_the_others_alone():
    cfg = GANConfig(batch=64, decay=1.0)
    clean, hit = _no_eval(GANSeeds(cfg, seeds=[0, 1, 2], device="cpu"), GANSeeds(cfg, seeds=[0, 1, 2], device="cpu"))
    clean.step(20)
    hit.step(20)
    with torch.no_grad():
        hit.G.weights[0][1].fill_(float("nan"))  # run 1's generator breaks
    clean.step(30)
    hit.step(30)
    assert hit.diverged == {1: 21} and clean.diverged == {}
    for k in (0, 2):  # the other runs went on exactly as without the broken one
        for a, b in ((clean.G, hit.G), (clean.D, hit.D)):
            for pa, pb in zip(a.parameters(), b.parameters()):
                assert torch.equal(pa[k], pb[k])
    stopped = [p[1].clone() for p in hit.G.parameters()]
    assert all(torch.isfinite(p).all() for p in stopped), "the stopped run keeps its last finite weights"
    hit.step(10)
    assert all(torch.equal(p[1], s) for p, s in zip(hit.G.parameters(), stopped)), "a stopped run must not move"
    rows = hit.finals()
    assert rows[1]["diverged_at"] == 21 and "diverged_at" not in rows[0]
    s = hit.summary()
    assert s["diverged"] == 1 and s["runs"] == 3
    assert s["modes_median"] == float(np.median([rows[0]["modes"], rows[2]["modes"]]))


def test_all_modes_counts_the_runs_that_cover_every_mode_with_quality():
    """``all_modes``: the fraction of runs on every mode with >= 90% high quality; ``every_mode``: how many runs
    are on every mode at all (the PacGAN lottery lesson's number), a diverged run not counted."""
    b = GANSeeds(GANConfig(batch=64), seeds=[0, 1], device="cpu")
    n = len(b.data.centers)
    b.runs[0].latest_eval = dict(modes=n, high_quality=0.95)
    b.runs[1].latest_eval = dict(modes=n, high_quality=0.85)
    assert b.summary()["all_modes"] == 0.5 and b.summary()["every_mode"] == 2
    b.runs[1].latest_eval.update(modes=n - 1, high_quality=0.99)
    assert b.summary()["all_modes"] == 0.5 and b.summary()["every_mode"] == 1
    b.runs[1].latest_eval.update(modes=n, high_quality=0.9)
    assert b.summary()["all_modes"] == 1.0
    b.diverged[1] = 10  # run 1 diverged at step 10
    assert b.summary()["every_mode"] == 1


def test_cli_trains_many_seeds_and_reports_each(tmp_path, capsys):
    res = cli.run(["gan", "--seeds", "3", "--seed", "4", "--steps", "30", "--batch", "64", "--out", str(tmp_path)])
    assert res["seeds"] == [4, 5, 6] and [x["seed"] for x in res["runs"]] == [4, 5, 6]
    assert res["summary"]["modes_median"] == float(np.median([x["modes"] for x in res["runs"]]))
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (3, 2500, 2) and np.isfinite(samples).all()
    assert json.loads((tmp_path / "final.json").read_text())["runs"] == res["runs"]
    single = cli.run(["gan", "--seed", "5", "--steps", "30", "--batch", "64"])["final"]
    assert single["modes"] == res["runs"][1]["modes"]
    assert single["mmd"] == pytest.approx(res["runs"][1]["mmd"], rel=1e-3)
    for bad, why in ((["--seeds", "0"], "1 to 1024"), (["--seeds", "x"], "whole number"),
                     (["--seeds", "2", "--png", str(tmp_path)], "--png"), (["--seeds", "2", "--sn", "true"], "spectral"), (["--seeds", "2", "--unroll", "2"], "unroll=2")):
        assert cli.main(["gan", "--steps", "5", *bad]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err
