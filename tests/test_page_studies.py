"""AppTest of the Studies page: the form, its refusals, a study run in the background to its table and
altair chart, and a run's replay link opening that run on its own page."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

from conftest import open_page, text


def _run_demo_study(params=None):
    at = open_page("pages/studies.py", params or {})
    at.selectbox(key="studies.exp").set_value("demo").run()
    assert at.selectbox(key="studies.knob1.demo").value == "lr"
    assert at.text_input(key="studies.values1.demo.lr").value == "0.05,0.1"
    at.number_input(key="studies.seeds").set_value(2)
    at.number_input(key="studies.steps").set_value(20)
    at.button(key="studies.run").click().run()
    job = at.session_state["studies.job"]
    job.thread.join(120)
    assert job.done and job.error is None
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at, job


def test_the_page_opens_on_a_gan_study_of_two_losses():
    at = open_page("pages/studies.py")
    assert not at.exception and not at.error
    assert at.title[0].value == "Studies"
    assert at.selectbox(key="studies.exp").value == "gan"
    assert at.selectbox(key="studies.knob1.gan").value == "loss"
    assert at.text_input(key="studies.values1.gan.loss").value == "minimax,nonsaturating"
    assert any("press Run" in i.value for i in at.info)


def test_bad_values_are_refused_with_a_message_and_nothing_runs():
    at = open_page("pages/studies.py")
    at.text_input(key="studies.values1.gan.loss").set_value("hinge,banana").run()
    at.button(key="studies.run").click().run()
    assert not at.exception
    assert "'banana' is not one of" in text(at.error[0].value)
    assert "studies.job" not in at.session_state
    at.selectbox(key="studies.knob2.gan").set_value("lr_d").run()
    at.text_input(key="studies.values2.gan.lr_d").set_value("1e-3,1e-4,2e-4,5e-4,1e-2").run()
    at.text_input(key="studies.values1.gan.loss").set_value("hinge,lsgan,wgan_gp").run()
    at.button(key="studies.run").click().run()
    assert "15 settings: at most 12 here" in at.error[0].value


def test_a_study_runs_in_the_background_to_its_table_chart_and_replay_links():
    at, job = _run_demo_study({"seed": "5"})
    summary = at.dataframe[0].value
    assert list(summary["setting"]) == ["lr=0.05", "lr=0.1"] and list(summary["runs"]) == [2, 2]
    runs = at.dataframe[1].value
    assert sorted(runs["seed"]) == [5, 5, 6, 6]  # from the sidebar's seed on
    assert "done: 4/4 runs, 100% of steps" in at.get("progress")[0].proto.text
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["circle", "rule", "tick"]
    assert spec["layer"][0]["encoding"]["href"]["field"] == "replay"  # a click on a seed's point opens its run
    link = runs[(runs["setting"] == "lr=0.1") & (runs["seed"] == 6)]["replay"].iloc[0]
    parts = urlsplit(link)
    assert parts.path == "demo" and dict(parse_qsl(parts.query)) == {"lr": "0.1", "seed": "6", "steps": "20"}
    page = open_page("pages/demo.py", dict(parse_qsl(parts.query)))
    assert not page.exception
    assert page.select_slider(key="lr").value == 0.1 and page.number_input(key="seed").value == 6
    assert any("Iteration 20" in c.value for c in page.caption)  # the replay trained exactly the run's steps
