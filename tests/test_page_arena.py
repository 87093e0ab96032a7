"""The arena page in AppTest: a replay link trains every family the budget and fills the measured table, the
small multiples and the linked altair charts; the contrasts are shown; a bad budget gives a note."""

import json

from conftest import charts, open_page
from dgm.core import config as cfglib
from dgm.core import registry

PAGE = "pages/arena.py"


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_a_replay_link_fills_the_measured_table_and_every_familys_panel():
    at = open_page(PAGE, params={"budget": "10", "measures": "1", "seed": "0", "steps": "10"})
    _clean(at)
    t = at.session_state["_live.arena"].trainer
    assert t.iteration == 10 and t.finished and t.arena.done_rounds == 1
    fams = [e.family for e in t.arena.entrants]
    assert fams == ["GAN", "flow", "VAE", "autoregressive", "diffusion"]
    multiples = next(s for s in charts(at) if "Samples at step" in str(s["layout"].get("title")))
    labels = [a["text"] for a in multiples["layout"]["annotations"]]
    assert [lab.split(" (")[0] for lab in labels] == fams
    assert labels[-1] == "diffusion (100% outside)"  # 10 steps: its samples are not near the data yet
    table = at.dataframe[0].value
    assert list(table["family"]) == fams
    assert table.set_index("family").loc["GAN", "likelihood"] == "none"
    assert table.set_index("family").loc["flow", "likelihood"] == "exact"
    # the linked altair charts: the table, precision vs recall, curves vs steps and vs seconds, one selection
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert len(spec["vconcat"]) == 4
    (param,) = spec["params"]
    assert param["select"]["fields"] == ["family"] and param["bind"] == "legend"
    uses = json.dumps(spec["vconcat"][1:])
    assert uses.count(f'"param": "{param["name"]}"') >= 3  # the table's pick dims the other charts too
    text = " ".join(m.value for m in at.markdown)
    assert "≤ log 100" in text and "memorising KDE" in text


def test_digits_skip_the_2d_only_families():
    at = open_page(PAGE, params={"data": "digits", "budget": "10", "measures": "1", "seed": "0", "steps": "10"})
    _clean(at)
    table = at.dataframe[0].value.set_index("family")
    assert table.loc["GAN", "likelihood"].startswith("skipped") and table.loc["flow", "likelihood"].startswith("skipped")
    assert "Digits-FID" in table.columns and table.loc["autoregressive", "likelihood"] == "exact"


def test_your_own_data_trains_every_family_whose_page_takes_it():
    import numpy as np

    from dgm.core.userdata import make_distribution
    from dgm.ui import userdata

    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal((-2, 0), 0.3, (200, 2)), rng.normal((2, 1), 0.5, (200, 2))])
    dist, scaling = make_distribution(points, "two blobs")
    at = open_page()
    at.session_state[userdata.NAME], at.session_state[userdata.DIST] = dist.name, dist
    at.session_state[userdata.SCALING] = scaling
    for k, v in {"data": "custom", "budget": "10", "measures": "1", "seed": "0", "steps": "10"}.items():
        at.query_params[k] = v
    at.switch_page(PAGE).run()
    _clean(at)
    t = at.session_state["_live.arena"].trainer
    assert t.config.data == dist.name and t.finished
    table = at.dataframe[0].value.set_index("family")
    takes = {e.arena.label: "custom" in cfglib.knob_map(e.config)["data"].choices for e in registry.arena_entries()}
    assert list(table.index) == list(takes)
    for fam, yes in takes.items():  # the families whose pages take your data (today all) train and are measured
        assert table.loc[fam, "likelihood"].startswith("skipped") != yes, fam
        assert (table.loc[fam, "precision"] != "—") == yes, fam
    assert t.arena.real.shape == (2500, 2) and abs(float(t.arena.real[:, 0].mean())) < 0.2  # your data, standardised


def test_a_seconds_budget_from_the_link_trains_by_the_clock_and_says_it_is_not_a_replay():
    at = open_page(PAGE, params={"unit": "seconds", "budget_s": "2", "measures": "1", "seed": "0"})
    _clean(at)
    labels = [w.label for w in at.sidebar.slider]
    assert "Budget (seconds per family)" in labels and "Budget (steps per family)" not in labels
    t = at.session_state["_live.arena"].trainer
    assert t.config.limit.seconds == 2.0
    at.button(key="arena.step").click().run()
    while not t.finished:  # Step until the budget is spent (each press one slice of every family)
        at.button(key="arena.step").click().run()
    at.button(key="arena.step").click().run()  # one more: the spent budget is news, not an error
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("budget is spent" in w.value for w in at.warning)
    assert all(e.seconds >= 2.0 or e.failed for e in t.arena.entrants)
    assert any("gives the same settings, not the same numbers" in c.value for c in at.caption)


def test_a_step_shows_every_family_at_once_and_a_worker_measures_them():
    """A Step that reaches a measurement (sampling and scoring every family: seconds) trains to it here, shows
    the families' models at once and leaves the measuring to a worker process (issue 18: controls answer at
    once); the page says so, and the table that comes is the one a run trained here in one go has."""
    import time

    from dgm.core import worker
    from dgm.ui import scheduling

    at = open_page(PAGE, params={"budget": "20", "measures": "1", "seed": "0"})  # measurements at 10 and 20
    _clean(at)
    s = at.session_state["_live.arena"]
    assert s.trainer.iteration == 0
    deadline = time.monotonic() + 120
    while worker._POOL.spare is None or not worker._POOL.spare.alive():  # the page has one made ready
        assert time.monotonic() < deadline, "no worker process became ready"
        time.sleep(0.1)
    at.button(key="arena.step").click().run()
    _clean(at)
    t = s.trainer
    assert t.iteration == 10 and t.eval_pending() and s.tail is not None
    assert any("evaluating this step" in c.value for c in at.caption)
    with s.lock:
        assert scheduling.collect_tail(s, 120) and s.error is None
    assert t.iteration == 10 and t.arena.done_rounds == 1 and not t.eval_pending()
    assert all([r["step"] for r in e.rows] == [10] for e in t.arena.entrants)
    at.run()  # what the page's fragment does when the measured run comes
    _clean(at)
    assert list(at.dataframe[0].value["family"]) == [e.family for e in t.arena.entrants]
    assert not any("evaluating this step" in c.value for c in at.caption)


def test_a_bad_budget_in_the_link_gives_a_note():
    at = open_page(PAGE, params={"budget": "-5"})
    assert not at.exception
    assert any("budget" in w.value for w in [*at.warning, *at.info, *at.caption, *at.markdown])


def test_the_home_pages_taxonomy_table_links_to_the_measured_one():
    at = open_page()
    links = [e for e in at.get("page_link") if "arena" in e.proto.page]
    assert any("measured table" in e.proto.label for e in links)
    md = " ".join(m.value for m in at.markdown)
    assert "typed in from the lectures" in md and "Arena" in md
