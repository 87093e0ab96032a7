"""The arena page in AppTest: a replay link trains every family the budget and fills the measured table, the
small multiples and the linked altair charts; the contrasts are shown; a bad budget gives a note."""

import json

from conftest import charts, open_page

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
