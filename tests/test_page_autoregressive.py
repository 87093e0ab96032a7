"""AppTest: the autoregressive models page (issue 20)."""

from __future__ import annotations

import re

import pytest
from conftest import at_iteration, charts, open_page, settled


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _title(c: dict) -> str:
    """A chart's title as one line (the page breaks long titles into lines: dgm.ui.common.plot)."""
    return (c["layout"].get("title") or {}).get("text", "").replace("<br>", " ")


def _titles(at) -> list[str]:
    return [_title(c) for c in charts(at)]


def _chart(at, start: str) -> dict:
    return next(c for c in charts(at) if _title(c).startswith(start))


SMALL = {"hidden": "64", "train_size": "200"}


def test_page_loads_with_its_figures_and_the_measured_sampling_time():
    at = open_page("pages/autoregressive.py")
    _ok(at)
    assert at.title[0].value == "Autoregressive models"
    assert at_iteration(at) == 0
    assert at.selectbox(key="model").value == "made" and at.selectbox(key="data").value == "digits"
    titles = _titles(at)
    assert len(titles) == 5, titles  # samples, per-pixel -log p, dependency map and matrix, curves
    assert titles[0].startswith("36 samples, 64 steps each")
    assert any(t.startswith("All pairs: 0 later inputs used") for t in titles)
    timing = next(c.value for c in at.caption if c.value.startswith("Measured here"))
    assert "64 passes" in timing and "VAE decoder" in timing and "RealNVP flow" in timing
    assert any("Theory" in e.label for e in at.expander)


def test_step_play_and_the_animation_of_sampling():
    at = open_page("pages/autoregressive.py", SMALL)
    at.selectbox(key="autoregressive.speed").set_value(100).run()
    at.button(key="autoregressive.step").click().run()
    _ok(at)
    assert at_iteration(at) == 100
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["test NLL"]) > 0 and metrics["best step"] == "100"
    assert "(model at step 100)" in _titles(at)[0]  # paused: the samples are of the model shown
    at.button(key="autoregressive.play").click().run()  # one frame runs in AppTest
    _ok(at)
    assert at_iteration(at) > 100
    assert re.match(r"Sampling one pixel at a time: step \d+ of 64", _titles(at)[0]), _titles(at)[0]
    at.button(key="autoregressive.pause").click().run()
    at.button(key="autoregressive.reset").click().run()
    assert at_iteration(at) == 0


def test_the_blind_spot_lesson_and_the_gated_fix():
    at = open_page("pages/autoregressive.py", {"preset": "the blind spot"})
    _ok(at)
    assert at.selectbox(key="model").value == "pixelcnn" and at.select_slider(key="kernel").value == 5
    assert "210 of 2,016 earlier unseen" in _title(_chart(at, "All pairs"))
    assert any("Lesson: the blind spot" in i.value for i in at.info)
    at.selectbox(key="stack").set_value("gated").run()
    _ok(at)
    assert "0 of 2,016 earlier unseen" in _title(_chart(at, "All pairs"))


def test_the_vae_pages_bounds_become_reference_lines():
    at = open_page("pages/vae.py", {"width": "32", "train_size": "200"})
    at.selectbox(key="vae.speed").set_value(100).run()
    at.button(key="vae.step").click().run()
    at.button(key="vae.step").click().run()  # 200 steps: one evaluation
    _ok(at)
    at.switch_page("pages/autoregressive.py").run()
    _ok(at)
    notes = [a["text"] for a in _chart(at, "Exact NLL")["layout"].get("annotations", [])]
    assert any(n.startswith("VAE page −ELBO (z = 2") for n in notes), notes
    assert any(n.startswith("VAE page −IWAE") for n in notes), notes


def _status(at) -> str:
    return next(c.value for c in at.caption if "Iteration" in c.value)


def _leave_query(at) -> None:
    """A sidebar link: the other page's own URL (no ``preset``)."""
    for k in list(at.query_params):
        del at.query_params[k]


def test_the_elbo_lesson_asks_for_the_vae_page_first_and_is_open_again_after_it():
    lesson = "exact likelihood beats the ELBO"
    at = open_page("pages/autoregressive.py", {"preset": lesson})
    _ok(at)
    assert "not measured yet: play the **VAE** page first" in _status(at)
    _leave_query(at)
    at.switch_page("pages/vae.py").run()
    at.selectbox(key="vae.speed").set_value(100).run()
    at.button(key="vae.step").click().run()
    at.button(key="vae.step").click().run()  # 200 steps: one evaluation, -ELBO about 108 nats
    _ok(at)
    _leave_query(at)
    at.switch_page("pages/autoregressive.py").run()  # back, by a link without the lesson in it
    _ok(at)
    assert at.selectbox(key="preset").value == lesson and any(f"Lesson: {lesson}" in i.value for i in at.info)
    assert "play the **VAE** page first" not in _status(at)
    at.selectbox(key="autoregressive.speed").set_value(100).run()
    at.button(key="autoregressive.step").click().run()
    at.button(key="autoregressive.step").click().run()
    _ok(at)
    vae_bound = -at.session_state["_live.vae"].trainer.latest_eval["elbo"]
    m = re.search(r"this exact NLL \(nats\) \*\*([-\d.,]+)\*\*", _status(at))
    assert m is not None, _status(at)
    nll = float(next(x.value for x in at.metric if x.label == "test NLL"))
    assert float(m.group(1)) == pytest.approx(vae_bound - nll, abs=0.06)
    assert float(m.group(1)) >= 5 and "✓ the lesson's point" in _status(at)  # 200 steps of each (issue 18)
    at.selectbox(key="preset").set_value(None).run()  # cleared on its own page: it stays cleared
    at.run()
    assert at.selectbox(key="preset").value is None and not any("Lesson:" in i.value for i in at.info)


def test_the_flows_pages_nll_becomes_a_reference_line_on_the_same_2d_data():
    at = open_page("pages/flows.py", {"data": "moons", "layers": "2", "batch": "128"})  # values the AR page takes too
    at.selectbox(key="flow.speed").set_value(100).run()
    settled(at.button(key="flow.step").click().run(), "flow")  # a Step evaluates (a worker, or here)
    _ok(at)
    at.switch_page("pages/autoregressive.py").run()
    at.selectbox(key="data").set_value("moons").run()
    _ok(at)
    notes = [a["text"] for a in _chart(at, "Exact NLL")["layout"].get("annotations", [])]
    assert any(n.startswith("flows page NLL (realnvp, step ") for n in notes), notes
    at.selectbox(key="data").set_value("8gaussians").run()  # another target: no line
    notes = [a["text"] for a in _chart(at, "Exact NLL")["layout"].get("annotations", [])]
    assert not any(n.startswith("flows page") for n in notes), notes


def test_two_d_data_shows_density_slices_and_samples():
    at = open_page("pages/autoregressive.py", {"data": "8gaussians", "hidden": "32"})
    _ok(at)
    at.button(key="autoregressive.step").click().run()
    _ok(at)
    assert at_iteration(at) == 10
    titles = _titles(at)
    assert len(titles) == 5, titles
    assert any(t.startswith("target 8gaussians: log p") for t in titles)
    assert any(t.startswith("Slices p(x₂ | x₁)") for t in titles)


def test_the_link_sets_the_view_controls_and_an_ensemble_samples_each_ordering():
    at = open_page("pages/autoregressive.py", {"autoregressive.row": "3", "autoregressive.col": "6",
                                               "autoregressive.digits": "#2: a 2", "autoregressive.ordering": "2",
                                               "orderings": "4", "ordering": "random", **SMALL})
    _ok(at)
    assert not at.warning, [w.value for w in at.warning]
    assert at.slider(key="autoregressive.row").value == 3 and at.slider(key="autoregressive.col").value == 6
    assert at.slider(key="autoregressive.ordering").value == 2
    assert at.multiselect(key="autoregressive.digits").value == [2]
    assert "(row 3, col 6)" in _title(_chart(at, "Inputs of the conditional"))
    timing = next(c.value for c in at.caption if c.value.startswith("Measured here"))
    assert "64 passes of the network (each pass runs every ordering at once)" in timing, timing


def test_bad_link_parameters_give_a_note():
    at = open_page("pages/autoregressive.py", {"model": "nope", "orderings": "3", "layers": "99",
                                               "autoregressive.row": "9", "autoregressive.digits": "zz",
                                               "autoregressive.ordering": "x"})
    _ok(at)
    text = at.warning[0].value.replace("\\", "")
    assert "'nope'" in text and "orderings" in text
    for bad in ("autoregressive.row='9'", "autoregressive.digits='zz'", "autoregressive.ordering='x'"):
        assert bad in text, text
    assert at.selectbox(key="model").value == "made"
    assert at.slider(key="autoregressive.row").value == 5  # the default kept
