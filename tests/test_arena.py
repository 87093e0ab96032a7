"""The arena (dgm/arena): families enter by registering, train round-robin under one budget, are measured on
the same points; its trainer moves between processes whole; the likelihood-vs-samples contrasts; its CLI."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import subprocess
import sys

import pytest
import torch

from dgm.arena import contrasts
from dgm.arena.cli import main as cli_main
from dgm.arena.run import ArenaRun, Budget
from dgm.arena.trainer import ArenaConfig, ArenaTrainer, BudgetSpent
from dgm.core import registry
from dgm.core.metrics import kde_log_prob


def test_families_enter_by_registering_and_skip_data_they_do_not_train_on():
    entries = {e.name for e in registry.arena_entries()}
    assert {"gan", "flow", "vae", "autoregressive", "diffusion"} <= entries
    assert "arena" not in entries and "divergence" not in entries
    a = ArenaRun("digits", Budget(steps=1), families=["gan", "vae"])
    assert [e.family for e in a.entrants] == ["VAE"] and "GAN" in a.skipped


def test_budget_parsing():
    assert Budget.parse("3000") == Budget(steps=3000) and Budget.parse("60s") == Budget(seconds=60.0)
    for bad in ("0", "5x", "-3", "0s", "1e9"):
        with pytest.raises(ValueError):
            Budget.parse(bad)


def test_round_robin_fills_the_table_on_the_same_points():
    a = ArenaRun("ring8", Budget(steps=30), seeds=2, rounds=2, families=["gan", "flow"], samples=400)
    a.advance(7)
    assert [e.trainer.iteration for e in a.entrants] == [7, 7, 7, 7] and a.done_rounds == 0
    a.advance(100)
    assert a.iteration == 30 and a.done_rounds == 3 and not a.round()
    assert [r["step"] for r in a.entrants[0].rows] == [10, 15, 30]  # an early measurement, then two equal parts
    table = {r["family"]: r for r in a.table()}
    gan, flow = table["GAN"], table["flow"]
    assert gan["likelihood"] == "none" and "nll" not in gan and gan["latent"] == 2
    assert flow["likelihood"] == "exact" and gan["seeds"] == 2 and "precision_sd" in gan
    # the flow's NLL is its exact log-likelihood on the arena's held-out points
    t = a.entrants[2].trainer
    with torch.no_grad():
        assert a.entrants[2].rows[-1]["nll"] == pytest.approx(float(-t.model.log_prob(a.heldout).mean()), rel=1e-6)
    for m in ("precision", "recall", "density", "coverage", "mmd", "w1", "modes", "samples_per_s"):
        assert math.isfinite(gan[m]) and math.isfinite(flow[m]), m


def test_the_arena_trainer_moves_between_processes_and_replays_exactly():
    cfg = ArenaConfig(budget=20, measures=2)
    t = ArenaTrainer(cfg, seed=0, device="cpu")
    t.arena.entrants = [e for e in t.arena.entrants if e.exp.name == "autoregressive"]  # one cheap family
    t.step(12)
    full = pickle.loads(pickle.dumps(t.export_state(full=True)))
    r = ArenaTrainer(cfg, seed=0, device="cpu")
    r.arena.entrants = [e for e in r.arena.entrants if e.exp.name == "autoregressive"]
    r.import_state(full)
    assert r.iteration == 12 and r.arena.done_rounds == 1
    t.step(50)
    r.step(50)
    assert t.finished and r.finished and t.iteration == 20
    with pytest.raises(BudgetSpent, match="budget is spent"):  # a playing page stops here, not in a busy loop
        t.step(1)
    a, b = t.evaluate(), r.evaluate()
    assert a == b and a["autoregressive.nll"] > 0


def test_a_run_taken_from_just_before_a_measurement_makes_it_first_and_ends_the_same():
    """What a worker keeps for a Pause during a measurement (the trainer's ``eval_guard``, entered around each
    one): that state continues with the measurement first, and reaches the same table; before the last
    measurement, the budget is not spent yet."""
    cfg = ArenaConfig(budget=20, measures=1)  # measurements at steps 10 and 20

    def cheap(t):
        t.arena.entrants = [e for e in t.arena.entrants if e.exp.name == "autoregressive"]
        return t

    t = cheap(ArenaTrainer(cfg, seed=0, device="cpu"))
    kept = []

    @contextlib.contextmanager
    def guard():
        kept.append(pickle.loads(pickle.dumps(t.export_state(full=True))))
        yield

    t.eval_guard = guard
    t.step(50)
    assert t.finished and [k["state"]["iteration"] for k in kept] == [10, 20]
    for k in kept:
        r = cheap(ArenaTrainer(cfg, seed=0, device="cpu"))
        r.import_state(k)
        assert r.eval_pending() and not r.finished and r.arena.done_rounds == (0 if r.iteration == 10 else 1)
        r.step(50)
        assert r.finished and not r.eval_pending() and r.iteration == 20
        assert r.evaluate() == t.evaluate() and r.evaluate()["measurements"] == 2


def test_a_steps_budgets_measurements_are_its_evaluation_schedule_and_a_preview_measures_nothing():
    """What a Step on the page relies on (dgm.ui.scheduling.step: a measurement, every family's samples and
    likelihood, takes seconds): with a steps budget the measurements are on the run's evaluation schedule, so a
    Step knows it meets one; its preview (``evaluate=False``) trains every family to the same models as the
    measured run and measures nothing. A seconds budget's measurements come by the clock, at no step known in
    advance."""
    cfg = ArenaConfig(budget=40, measures=2)  # measurements at steps 10, 20 and 40

    def cheap(t):
        t.arena.entrants = [e for e in t.arena.entrants if e.exp.name in ("autoregressive", "flow")]
        assert len(t.arena.entrants) == 2
        return t

    t = cheap(ArenaTrainer(cfg, seed=3, device="cpu"))
    assert t.slow_eval and [i for i in range(61) if t.eval_due(i)] == [10, 20, 40]
    t.step(25)
    assert t.arena.done_rounds == 2 and all([r["step"] for r in e.rows] == [10, 20] for e in t.arena.entrants)
    p = cheap(ArenaTrainer(cfg, seed=3, device="cpu"))
    p.step(25, evaluate=False)
    assert p.iteration == 25 and p.arena.done_rounds == 0 and all(not e.rows for e in p.arena.entrants)
    for a, b in zip(t.arena.entrants, p.arena.entrants):
        weights = [[v for m in e.trainer.modules().values() for v in m.state_dict().values()] for e in (a, b)]
        assert len(weights[0]) > 0 and all(torch.equal(x, y) for x, y in zip(*weights))
    assert not ArenaTrainer(ArenaConfig(unit="seconds", budget_s=2), seed=0, device="cpu").eval_due(10)


def test_a_seconds_budget_trains_each_family_its_time_in_slices_and_measures_at_equal_parts():
    a = ArenaRun("ring8", Budget(seconds=0.6), rounds=2, families=["gan", "autoregressive"])
    assert a.marks == [0.3, 0.6]
    slices = 0
    while a.advance_time(5):
        slices += 1
        assert slices < 1000
        # between measurements no family runs past the next one's time by more than one slice of 5 steps
        assert a.done_rounds == 2 or all(e.seconds < a.marks[a.done_rounds] + 1.0 for e in a.entrants)
    assert a.done_rounds == 2 and a.iteration == 5 * slices
    for e in a.entrants:
        assert 0.6 <= e.seconds < 1.6, (e.family, e.seconds)  # its time, cut at the budget (one burst over at most)
        assert [r["seconds"] >= m for r, m in zip(e.rows, a.marks)] == [True, True]
        assert e.trainer.iteration >= 5 and e.rows[-1]["step"] == e.trainer.iteration
    # each family trains what it manages in its time: the cheap autoregressive model more steps than the GAN
    steps = {e.family: e.trainer.iteration for e in a.entrants}
    assert steps["autoregressive"] != steps["GAN"]


def test_the_arena_trainer_with_a_seconds_budget_stops_when_it_is_spent():
    cfg = ArenaConfig(unit="seconds", budget_s=1, measures=1)
    assert str(cfg.limit) == "1s" and str(ArenaConfig(budget=30).limit) == "30 steps"
    t = ArenaTrainer(cfg, seed=0, device="cpu")
    t.arena.entrants = [e for e in t.arena.entrants if e.exp.name == "autoregressive"]  # one cheap family
    while not t.finished:
        t.step(20)
    assert t.arena.done_rounds == 1 and t.latest["measurements"] == 1.0
    with pytest.raises(BudgetSpent, match=r"its budget \(1s\)"):
        t.step(1)


def test_loaded_weights_go_on_from_their_step_and_are_measured_at_once():
    from dgm.core import export as X

    def cheap(seed):  # two families: enough to see each one's run take the file's weights and step
        t = ArenaTrainer(ArenaConfig(budget=40, measures=2), seed=seed, device="cpu")
        t.arena.entrants = [e for e in t.arena.entrants if e.exp.name in ("autoregressive", "flow")]
        return t

    a, b = cheap(0), cheap(3)
    a.step(20)
    assert X.load_weights(b, X.weights_bytes(a, "arena"), "arena") == 20
    assert b.iteration == b.arena.iteration == 20 and not b.finished
    assert [e.trainer.iteration for e in b.arena.entrants] == [20, 20]
    assert [len(e.rows) for e in b.arena.entrants] == [1, 1] and b.latest["measurements"] == 0.0
    for m, mod in a.modules().items():
        assert all(torch.equal(v, b.modules()[m].state_dict()[k]) for k, v in mod.state_dict().items()), m
    b.step(100)
    assert b.finished and b.iteration == 40 and [e.trainer.iteration for e in b.arena.entrants] == [40, 40]


def test_a_mixture_with_one_percent_of_a_good_model_loses_at_most_log_100_nats():
    m = contrasts.noise_mixture("ring8", good=0.01)
    assert 0 < m["change"] <= math.log(100) + 1e-9
    assert m["change"] > 0.9 * math.log(100)  # on a peaked mixture the bound is nearly reached
    assert m["precision_good"] > 0.95 and m["precision_mixture"] < 0.05  # while 99% of its samples are noise


def test_a_memorising_kde_has_perfect_looking_samples_and_a_poor_heldout_likelihood():
    k = contrasts.memorising_kde("8gaussians")
    assert k["precision_narrow"] > 0.95 and k["recall_narrow"] > 0.9
    assert k["nll_narrow"] > k["nll_scott"] + 10 and k["nll_narrow"] > k["nll_true"] + 10
    # the KDE's likelihood is the mean of its kernels (checked against a direct sum at one point)
    x = torch.tensor([[0.3, -0.2]])
    pts = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    h = 0.5
    direct = math.log(sum(math.exp(-float(((x - p) ** 2).sum()) / (2 * h * h)) for p in pts) / (2 * 2 * math.pi * h * h))
    assert float(kde_log_prob(pts, x, bandwidth=h)) == pytest.approx(direct, rel=1e-6)


def test_precision_vs_recall_reads_the_gan_and_the_flow_from_the_table():
    row = {"density": 0.5, "coverage": 0.4}
    table = [{"family": "GAN", "precision": 0.9, "recall": 0.3, **row}, {"family": "flow", "precision": 0.2,
             "recall": 1.0, **row}, {"family": "VAE", "skipped": "no"}]
    line = contrasts.precision_recall(table)
    assert "GAN: precision 0.90, recall 0.30" in line and "Sharper samples: GAN; more of the data covered: flow" in line
    assert contrasts.precision_recall(table[:1]) is None


def test_cli_prints_the_table_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert cli_main(["--data", "ring8", "--budget", "10", "--rounds", "1", "--families", "autoregressive",
                     "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["budget"] == "10 steps" and res["table"][0]["family"] == "autoregressive"
    assert res["table"][0]["steps"] == 10 and res["table"][0]["likelihood"] == "exact"
    assert out.read_text().splitlines()[0].startswith("family,")


def test_cli_trains_on_your_own_data(tmp_path, capsys):
    f = tmp_path / "points.csv"
    g = torch.Generator().manual_seed(0)
    f.write_text("x,y\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in torch.randn(300, 2, generator=g).tolist()))
    assert cli_main(["--data-file", str(f), "--budget", "5", "--rounds", "1", "--families", "gan,flow"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["data"].startswith("custom:") and [r["family"] for r in res["table"]] == ["GAN", "flow"]
    assert all(math.isfinite(r["precision"]) and "modes" not in r for r in res["table"])  # no mode centres
    assert cli_main(["--data-file", str(tmp_path / "missing.csv")]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.mark.parametrize("argv,says", [(["--budget", "5x"], "budget"), (["--data", "nope"], "unknown distribution"),
                                        (["--seeds", "99"], "seeds"), (["--families", "gan,zzz"], "zzz")])
def test_cli_refuses_bad_flags_in_one_line(argv, says, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_python_m_dgm_arena_dispatches():
    r = subprocess.run([sys.executable, "-m", "dgm", "arena", "--budget", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("refused: budget")
