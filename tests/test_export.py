"""Exports: CSV history, weights round trip (and refusals), GIF replay, figure images."""

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from dgm.core import config as cfglib
from dgm.core import export as X
from dgm.core import registry
from dgm.families.demo.lessons import EXPERIMENT
from dgm.families.demo.trainer import DemoConfig, DemoTrainer


def trained(cfg=None, steps=30, seed=0):
    t = DemoTrainer(cfg or DemoConfig(), seed=seed)
    t.step(steps)
    return t


def test_history_csv_has_every_metric():
    t = trained(steps=100)
    t.final()
    lines = X.history_csv(t).splitlines()
    assert lines[0] == "step,heldout_nll,nll"
    assert len(lines) == 1 + len(t.history.merged())


def test_weights_round_trip_resumes_the_model():
    a = trained(steps=40)
    raw = X.weights_bytes(a, "demo")
    b = DemoTrainer(DemoConfig(), seed=5)
    it = X.load_weights(b, raw, "demo")
    assert it == 40 and b.iteration == 40
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    b.step(5)
    assert b.iteration == 45


@pytest.mark.parametrize("name", registry.names())
def test_every_pages_weights_export_and_load_back(name):
    """The weights file of every page's default model loads back into another seed's run of it (modules that
    share a tensor, such as a flow's alternating masks, are written once per module)."""
    exp = registry.get(name)
    a, b = exp.make(exp.config(), seed=0, device="cpu"), exp.make(exp.config(), seed=1, device="cpu")
    assert X.load_weights(b, X.weights_bytes(a, name), name) == 0
    for m, mod in a.modules().items():
        for k, v in mod.state_dict().items():
            assert torch.equal(v, b.modules()[m].state_dict()[k]), f"{m}.{k}"


@pytest.mark.parametrize("raw,fragment", [
    (b"", "empty"),
    (b"not a safetensors file at all", "not a safetensors"),
    (b"\xff" * 8 + b"{}", "not a safetensors"),
])
def test_bad_weight_files_are_refused(raw, fragment):
    t = trained()
    before = [p.clone() for p in t.model.parameters()]
    with pytest.raises(X.WeightsError, match=fragment):
        X.load_weights(t, raw, "demo")
    assert all(torch.equal(p, q) for p, q in zip(before, t.model.parameters()))


def test_weights_of_another_page_or_model_are_refused():
    raw = X.weights_bytes(trained(), "demo")
    with pytest.raises(X.WeightsError, match="'gan'"):
        X.load_weights(trained(), raw, "gan")
    from safetensors.torch import save

    wrong = save({"model.mean": torch.zeros(3)}, metadata={"experiment": "demo", "config": "{}"})
    with pytest.raises(X.WeightsError, match="do not fit"):
        X.load_weights(trained(), wrong, "demo")


def test_a_pickle_is_never_executed(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    with pytest.raises(X.WeightsError):
        X.load_weights(trained(), pickle.dumps(Boom()), "demo")
    assert not (tmp_path / "pwned").exists()


def test_frozen_copy_is_independent():
    a = trained(steps=20)
    c = X.frozen_copy(lambda: DemoTrainer(a.config, seed=a.seed), a)
    assert c.iteration == 20 and torch.equal(c.model.mean, a.model.mean)
    c.step(5)
    assert a.iteration == 20 and not torch.equal(c.model.mean, a.model.mean)


needs_chromium = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="kaleido needs Chromium")


@needs_chromium
def test_gif_replays_the_run():
    from PIL import Image

    gif = X.animation_gif(lambda: DemoTrainer(DemoConfig(), seed=0), lambda t: EXPERIMENT.figures(t)["fit"],
                          steps=40, frames=4)
    im = Image.open(io.BytesIO(gif))
    assert im.format == "GIF" and im.n_frames == 4


@needs_chromium
def test_figures_zip_has_png_and_svg():
    z = zipfile.ZipFile(io.BytesIO(X.figures_zip(EXPERIMENT.figures(trained()), "demo")))
    names = sorted(z.namelist())
    assert names == ["demo_fit.png", "demo_fit.svg", "demo_loss.png", "demo_loss.svg"]
    assert z.read("demo_fit.png")[:4] == b"\x89PNG" and b"<svg" in z.read("demo_fit.svg")[:400]


# ---- issue 16: crafted weights files are refused before anything is loaded; exports are bounded ----

def _crafted(meta_changes: dict, tensors=None) -> bytes:
    from safetensors.torch import save

    t = trained()
    meta = {"experiment": "demo", "config": json.dumps(cfglib.to_dict(t.config)), "seed": "0", "iteration": "30"}
    meta.update(meta_changes)
    tensors = tensors or {f"model.{k}": v.clone() for k, v in t.model.state_dict().items()}
    return save(tensors, metadata={k: v for k, v in meta.items() if v is not None})


@pytest.mark.parametrize("changes,fragment", [
    ({"config": "null"}, "not a table of settings"),
    ({"config": "[1, 2]"}, "not a table of settings"),
    ({"config": "{not json"}, "not readable"),
    ({"config": json.dumps({"lr": "nan"})}, "lr: expected a finite number"),
    ({"config": json.dumps({"data": "x" * 5000})}, "(5,000 characters)"),
    ({"iteration": "abc"}, "iteration: expected a number"),
    ({"iteration": "-500"}, "iteration=-500 is outside"),
    ({"iteration": "1e26"}, "iteration=1e26 is outside"),
    ({"iteration": "nan"}, "expected a finite number"),
    ({"seed": "-1"}, "seed=-1 is outside"),
    ({"experiment": "<b>" + "g" * 300}, "characters)"),
], ids=["config-null", "config-list", "config-not-json", "config-nan", "config-long", "iteration-text",
        "iteration-negative", "iteration-1e26", "iteration-nan", "seed-negative", "experiment-long"])
def test_crafted_metadata_is_refused_with_a_message_and_nothing_loaded(changes, fragment):
    t = trained(seed=4)
    before = [p.clone() for p in t.model.parameters()]
    with pytest.raises(X.WeightsError) as e:
        X.load_weights(t, _crafted(changes), "demo")
    assert fragment in str(e.value) and len(str(e.value)) < 400
    assert t.iteration == 30 and all(torch.equal(p, q) for p, q in zip(before, t.model.parameters()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused(bad):
    t = trained(seed=4)
    tensors = {f"model.{k}": v.clone() for k, v in t.model.state_dict().items()}
    next(iter(tensors.values())).view(-1)[0] = bad
    before = [p.clone() for p in t.model.parameters()]
    with pytest.raises(X.WeightsError, match="NaN or infinite"):
        X.load_weights(t, _crafted({}, tensors), "demo")
    assert all(torch.equal(p, q) for p, q in zip(before, t.model.parameters()))


def test_weights_of_the_users_own_data_still_load():
    import numpy as np

    from dgm.core import userdata

    dist, _ = userdata.make_distribution(np.random.default_rng(0).normal(size=(50, 2)))
    a = trained(DemoConfig(data=dist.name), steps=10)
    b = DemoTrainer(DemoConfig(data=dist.name), seed=1)
    assert X.load_weights(b, X.weights_bytes(a, "demo"), "demo") == 10


def test_a_gif_of_absurd_length_is_refused_at_once_and_a_stop_ends_one():
    calls = []

    def make():
        calls.append(1)
        return DemoTrainer(DemoConfig(), seed=0)

    with pytest.raises(X.ExportStopped, match="at most 50,000 steps"):
        X.animation_gif(make, lambda t: None, steps=10**26)
    assert not calls, "refused before any training"
    with pytest.raises(X.ExportStopped, match="stopping"):
        X.animation_gif(make, lambda t: None, steps=1000, should_stop=lambda: True)
    with pytest.raises(X.ExportStopped, match="took longer than 0 s"):
        X.animation_gif(make, lambda t: None, steps=1000, max_seconds=0.0)


def _chromium_children() -> list[int]:
    import os

    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"chrom" in cmd.lower():
            found.append(int(pid))
    return found


@needs_chromium
def test_png_exports_leave_no_chromium_running():
    import time

    X.figures_zip(EXPERIMENT.figures(trained()), "demo", svg=False)
    deadline = time.monotonic() + 10
    while _chromium_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _chromium_children()
