"""Exports: CSV history, weights round trip (and refusals), GIF replay, figure images."""

import io
import zipfile
from pathlib import Path

import pytest
import torch

from dgm.core import export as X
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
