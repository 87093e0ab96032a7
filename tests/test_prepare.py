"""A lesson's fast-forward is trained once per machine and kept on the server's disk (issue 18: a lesson opens at
once in class when its teacher opened it the day before, or ran ``python -m dgm prepare``); what is read back is
the run the training gives, and anything its numbers depend on names another file."""

import dataclasses
import logging

import pytest
import torch

from conftest import open_page
from dgm.core import kernels, registry
from dgm.ui import persist, prepare, scheduling, session

CFG = registry.get("gan").config(g_width=16, d_width=16, batch=64)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(persist.ENV, str(tmp_path))
    return tmp_path


def _continue(state: dict, steps: int) -> dict:
    """The run restored from ``state`` and trained ``steps`` more: its parameters."""
    exp = registry.get("gan")
    t = exp.make(CFG, seed=3, device="cpu")
    t.restore(state)
    t.run(steps=steps)
    return {k: v.clone() for k, v in t.G.state_dict().items()} | {f"D.{k}": v.clone() for k, v in t.D.state_dict().items()}


def test_a_fast_forward_is_trained_once_and_read_back_as_the_same_run(run_dir, monkeypatch):
    cj = session.config_json(CFG)
    state, took = session.fast_forward("gan", cj, 3, 30)
    assert took > 0 and state["iteration"] == 30
    assert len(list(run_dir.glob("*.warm.pt"))) == 1

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(scheduling, "replay", no_training)
    kept, took2 = session.fast_forward("gan", cj, 3, 30)
    assert took2 == 0 and kept["iteration"] == 30
    # the kept state goes on exactly as the trained one, and as a run trained 50 steps in one go
    a, b = _continue(state, 20), _continue(kept, 20)
    t = registry.get("gan").make(CFG, seed=3, device="cpu")
    t.run(steps=50)
    whole = {k: v for k, v in t.G.state_dict().items()} | {f"D.{k}": v for k, v in t.D.state_dict().items()}
    assert a.keys() == b.keys() == whole.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], whole[k]) for k in a)


def test_a_damaged_fast_forward_is_trained_again(run_dir, caplog):
    cj = session.config_json(CFG)
    session.fast_forward("gan", cj, 3, 10)
    (f,) = run_dir.glob("*.warm.pt")
    f.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        state, took = session.fast_forward("gan", cj, 3, 10)
    assert took > 0 and state["iteration"] == 10 and "could not read the fast-forward" in caplog.text


def test_everything_a_run_depends_on_names_another_fast_forward(monkeypatch):
    cj = session.config_json(CFG)
    key = persist.warm_key("gan", cj, 0, 100)
    assert key == persist.warm_key("gan", cj, 0, 100)
    others = {persist.warm_key("gan", cj, 1, 100), persist.warm_key("gan", cj, 0, 101),
              persist.warm_key("gan", session.config_json(dataclasses.replace(CFG, batch=65)), 0, 100),
              persist.warm_key("vae", cj, 0, 100)}
    monkeypatch.setenv("DGM_KERNELS", "native")  # other kernels, other numbers
    others.add(persist.warm_key("gan", cj, 0, 100))
    monkeypatch.delenv("DGM_KERNELS")
    maker = kernels.vendor()
    monkeypatch.setattr(kernels, "vendor", lambda: "amd" if maker == "intel" else "intel")  # another maker's MKL
    others.add(persist.warm_key("gan", cj, 0, 100))
    monkeypatch.undo()
    monkeypatch.setattr(persist, "_CODE", ["other code"])
    others.add(persist.warm_key("gan", cj, 0, 100))
    assert key not in others and len(others) == 7


def _short_lesson(monkeypatch, name: str = "vae", lesson: str = "posterior collapse"):
    """The VAE and its posterior-collapse lesson (or another), fast-forwarded 20 steps instead of its hundreds (the
    mechanism, not the time)."""
    exp = registry.get(name)
    les = exp.lesson(lesson)
    short = dataclasses.replace(exp, lessons=tuple(dataclasses.replace(x, start=20) if x is les else x
                                                   for x in exp.lessons))
    get = registry.get
    monkeypatch.setattr(registry, "get", lambda n: short if n == name else get(n))
    return exp, les


def test_prepare_trains_the_state_a_lesson_link_opens_at(run_dir, monkeypatch, capsys):
    """The command keeps what the lesson's page asks for (the same key: the link's config, seed 0); run again, it
    finds it on disk."""
    exp, les = _short_lesson(monkeypatch)
    assert [le.name for _, le in prepare.lessons("POSTERIOR")] == [les.name]
    assert prepare.main(["--only", "posterior collapse"]) == 0
    assert "vae · posterior collapse: step 20, trained in" in capsys.readouterr().out
    (f,) = run_dir.glob("*.warm.pt")
    session._pretrained.clear()
    monkeypatch.setattr(scheduling, "replay", lambda *a, **k: pytest.fail("the page trained the lesson again"))
    at = open_page("pages/vae.py", params={"preset": les.name})
    assert not at.exception
    assert at.session_state["_live.vae"].trainer.iteration == 20
    assert list(run_dir.glob("*.warm.pt")) == [f]
    assert prepare.main(["--only", "posterior collapse"]) == 0
    assert "step 20, on disk already" in capsys.readouterr().out


def test_a_diffusion_lesson_opens_at_a_fast_forward_evaluated_with_its_sampling(run_dir, monkeypatch, capsys):
    """Diffusion's sampler and NFE are runtime settings (``Experiment.split``): they never restart a run, but
    the evaluations measure them. A lesson's fast-forward is trained with the lesson's (one Euler step here),
    not the default 100-step sampler (it once was: the status line said "the lesson's point" on opening, until
    the next evaluation), and ``prepare`` keys it as the page does (it once keyed by the whole config: the page
    never found it)."""
    exp, les = _short_lesson(monkeypatch, "diffusion", "straight paths sample in one step")
    cfg, runtime = exp.split(exp.config(**les.values))
    assert runtime["sampler"] == "euler" and runtime["nfe"] == 1
    assert prepare.main(["--only", "straight paths"]) == 0
    assert "step 20, trained in" in capsys.readouterr().out
    state, took = session.fast_forward("diffusion", session.config_json(cfg), 0, 20,
                                       runtime_json=session.runtime_json(runtime))
    assert took == 0.0  # what prepare trained
    default, _ = session.fast_forward("diffusion", session.config_json(cfg), 0, 20)
    assert default["latest_eval"]["high_quality"] != state["latest_eval"]["high_quality"]  # another sampler
    session._pretrained.clear()
    monkeypatch.setattr(scheduling, "replay", lambda *a, **k: pytest.fail("the page trained the lesson again"))
    at = open_page("pages/diffusion.py", params={"preset": les.name})
    assert not at.exception
    t = at.session_state["_live.diffusion"].trainer
    assert t.iteration == 20 and t.runtime.sampler == "euler" and t.runtime.nfe == 1
    assert t.latest_eval == state["latest_eval"]


def test_prepare_trains_whole_a_fast_forward_a_page_would_cut(run_dir, monkeypatch, capsys):
    """Ahead of a class there is time: a fast-forward longer than a page may train (REPLAY_SECONDS; the lottery's
    2,000 steps of eight runs on two cores) is cut on the page and trained whole by the command, which the page
    then opens at once."""
    exp, les = _short_lesson(monkeypatch)
    monkeypatch.setattr(scheduling, "REPLAY_SECONDS", 0.0)  # no time at all on a page
    cj = session.config_json(exp.config(**les.values))
    with pytest.raises(scheduling.ReplayCut):
        session.fast_forward("vae", cj, 0, 20)
    assert not list(run_dir.glob("*.warm.pt"))
    assert prepare.main(["--only", "posterior collapse"]) == 0
    assert "vae · posterior collapse: step 20, trained in" in capsys.readouterr().out
    state, took = session.fast_forward("vae", cj, 0, 20)
    assert took == 0.0 and state["iteration"] == 20


@pytest.mark.parametrize("name", registry.names())
def test_every_experiments_run_is_kept_as_tensors_and_plain_containers(name, run_dir):
    """A run on disk is read back with torch.load(weights_only=True): a numpy array in a checkpoint (the arena's
    shown samples were one) makes every restart and every fast-forward of that page start again."""
    exp = registry.get(name)
    steps = 10 if name == "arena" else 2  # the arena measures (and keeps samples to show) after its first round
    t = exp.make(exp.config(), seed=0, device="cpu")
    t.run(steps=steps)
    assert persist.save_warm("k" + name, t.checkpoint())
    kept = persist.load_warm("k" + name)
    assert kept is not None and kept["iteration"] == steps
    again = exp.make(exp.config(), seed=0, device="cpu")
    again.restore(kept)
    assert again.iteration == steps


def test_a_module_reimported_under_a_running_server_keeps_the_code_it_started_with(monkeypatch):
    """Streamlit re-imports a module whose file changed under a running server; its fast-forwards keep the key of
    the code the server started with (another version's key would name a state its older modules trained)."""
    import importlib

    assert persist._CODE[0] == persist._code_digest()  # this process started with this checkout
    # a server that started with other code (its digest in its environment), whose persist.py is then re-imported
    monkeypatch.setenv("_DGM_CODE_DIGEST", "the code the server started with")
    try:
        importlib.reload(persist)
        assert persist._CODE == ["the code the server started with"]
    finally:
        monkeypatch.undo()
        importlib.reload(persist)
    assert persist._CODE[0] == persist._code_digest()
