"""The GAN lottery page in AppTest: K runs side by side with their table, a replay link trains the whole
set, the lesson link sets its knobs, and settings the batch cannot train give a message."""

import base64

import numpy as np
import torch

from conftest import charts, open_page

PAGE = "pages/gan_seeds.py"
SMALL = {"g_width": "16", "d_width": "16", "batch": "32", "runs": "3"}


def _values(a) -> np.ndarray:
    """A trace's coordinates as sent: a list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(a, dict):
        return np.frombuffer(base64.b64decode(a["bdata"]), dtype=np.dtype(a["dtype"]))
    return np.asarray(a, dtype=float)


def _state(at):
    return at.session_state["_live.gan_seeds"]


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_page_shows_every_run_with_its_metrics():
    at = open_page(PAGE, params={**SMALL, "seed": "5", "steps": "10"})
    _clean(at)
    batch = _state(at).trainer
    assert batch.seeds == [5, 6, 7] and batch.iteration == 10
    specs = charts(at)
    multiples = next(s for s in specs if "seeds, same settings" in str(s["layout"].get("title")))
    titles = [a["text"] for a in multiples["layout"]["annotations"]]
    assert [t.split(":")[0] for t in titles] == ["seed 5", "seed 6", "seed 7"]
    # each panel holds its own run's samples: the batch's run k, as drawn
    orange = [t for t in multiples["data"] if t["name"] == "G's samples"]
    assert len(orange) == 3
    for k, trace in enumerate(orange):
        want = batch.samples(400)[k]
        assert torch.allclose(torch.tensor(_values(trace["x"])[:5], dtype=torch.float32), want[:5, 0], atol=1e-5)
    table = at.dataframe[0].value
    assert list(table["seed"]) == ["5", "6", "7"] and "modes" in table.columns


def test_a_replay_link_trains_the_whole_set():
    at = open_page(PAGE, params={**SMALL, "steps": "30"})
    _clean(at)
    batch = _state(at).trainer
    assert batch.iteration == 30 and all(r.iteration == 30 for r in batch.runs)
    assert all(r.latest_eval for r in batch.runs)


def test_lesson_link_and_unsupported_settings():
    at = open_page(PAGE, params={"preset": "WGAN-GP across seeds", **SMALL})
    _clean(at)
    cfg = _state(at).trainer.config
    assert cfg.loss == "wgan_gp" and cfg.runs == 3  # the link's own runs wins over the preset's
    at = open_page(PAGE, params={**SMALL, "sn": "true"})  # not for a batch: the knob is not offered, and kept off
    _clean(at)
    assert _state(at).trainer.config.sn is False
