"""AppTest: the app shell, every page, the shared sidebar, links with bad parameters, the live loop."""

import pytest

from conftest import charts, open_page, text
from dgm.ui.pages import all_pages


def status(at) -> str:
    """The live loop's status line ("Iteration N · ... · paused")."""
    return next(c.value for c in at.caption if "Iteration" in c.value)


def _no_failure(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_home_renders_taxonomy_and_links():
    at = open_page()
    _no_failure(at)
    assert at.title[0].value == "DGM Explorer"
    md = " ".join(m.value for m in at.markdown)
    for word in ("Autoregressive", "Normalizing flow", "GAN", "VAE", "exact likelihood", "sampling", "compression"):
        assert word in md
    assert at.number_input(key="seed").value == 0
    assert any("Computing on" in c.value for c in at.caption)
    # issue 15, item 7: as the lectures' table, flows sample fast (couplings, IAF) or slowly (MAF, one pass per
    # dimension) and do not compress (the row used to say "fast (one pass z → x)" and "yes, but ...")
    flows = next(line for line in md.splitlines() if line.startswith("| **Normalizing flow**"))
    assert "one per dimension for MAF" in flows and "| no: z has the size of x" in flows


@pytest.mark.parametrize("info", [p for p in all_pages() if p.url != "home"], ids=lambda p: p.url)
def test_every_page_loads(info):
    at = open_page(info.path)
    _no_failure(at)
    assert at.title and at.title[0].value.startswith(info.title.split()[0])


def test_demo_step_advances_the_trainer():
    at = open_page("pages/demo.py")
    _no_failure(at)
    assert "Iteration 0" in status(at)
    at.button(key="demo.step").click().run()
    assert "Iteration 10" in status(at)
    at.selectbox(key="demo.speed").set_value(100).run()
    at.button(key="demo.step").click().run()
    assert "Iteration 110" in status(at)
    at.button(key="demo.reset").click().run()
    assert "Iteration 0" in status(at)


def test_changing_a_setting_starts_a_new_run():
    at = open_page("pages/demo.py")
    at.button(key="demo.step").click().run()
    assert "Iteration 10" in status(at)
    at.selectbox(key="data").set_value("ring8").run()
    assert "Iteration 0" in status(at)


def test_link_parameters_set_knobs():
    at = open_page("pages/demo.py", {"data": "moons", "lr": "0.2", "batch": "64"})
    _no_failure(at)
    assert at.selectbox(key="data").value == "moons"
    assert at.select_slider(key="lr").value == 0.2
    assert at.slider(key="batch").value == 64
    assert not at.warning


def test_bad_link_parameters_give_a_note_not_an_exception():
    at = open_page("pages/demo.py", {"lr": "1e9", "data": "nope", "batch": "abc", "zzz": "1", "steps": "-4"})
    _no_failure(at)
    note = text(at.warning[0].value)
    for part in ("lr=1e9", "'nope'", "batch", "'zzz'", "steps=-4"):
        assert part in note, part
    assert at.select_slider(key="lr").value == 100.0  # clamped to the widget's limit
    assert at.selectbox(key="data").value == "bimodal"  # default kept


def test_bad_global_parameters():
    at = open_page(None, {"seed": "-3", "presenter": "perhaps"})
    _no_failure(at)
    assert at.number_input(key="seed").value == 0
    assert "seed" in at.warning[0].value and "presenter" in at.warning[0].value


def test_replay_link_trains_exactly_n_steps():
    at = open_page("pages/demo.py", {"steps": "37", "seed": "2"})
    _no_failure(at)
    assert "Iteration 37" in status(at) and "paused" in status(at)


def test_divergence_shows_a_message_and_reset_recovers():
    at = open_page("pages/demo.py", {"optimizer": "sgd", "lr": "100"})
    at.button(key="demo.step").click().run()
    assert not at.exception
    assert at.error and "diverged" in at.error[0].value
    assert at.button(key="demo.restore")
    at.button(key="demo.reset_err").click().run()
    assert not at.error and "Iteration 0" in status(at)


def test_on_off_link_values_as_people_type_them():
    """app.py folds the sidebar for presenter mode from the raw link, before the sidebar corrects it: the same
    reading of the value (dgm.ui.pages.switch) serves both."""
    from dgm.ui.pages import switch

    assert [switch(v) for v in ("true", "1", "Yes", " ON ", "TRUE")] == [True] * 5
    assert [switch(v) for v in ("false", "0", "no", "Off")] == [False] * 4
    assert [switch(v) for v in ("", "perhaps", "2", "truee")] == [None] * 4


def test_presenter_mode_from_a_typed_link_with_1_or_yes():
    """?presenter=1 (or yes, on, TRUE) turns presenter mode on, ?presenter=0 off, without a warning."""
    for raw, on in (("1", True), ("yes", True), ("TRUE", True), ("0", False), ("off", False)):
        at = open_page("pages/demo.py", {"presenter": raw})
        assert not at.exception and not at.warning, (raw, [w.value for w in at.warning])
        assert at.toggle(key="presenter").value is on, raw


def test_presenter_mode_scales_the_figures():
    def font_sizes(at):
        specs = charts(at)
        return [s["layout"]["font"]["size"] for s in specs]

    normal = open_page("pages/demo.py")
    big = open_page("pages/demo.py", {"presenter": "true"})
    _no_failure(big)
    assert big.toggle(key="presenter").value is True
    assert min(font_sizes(big)) > max(font_sizes(normal))


def test_view_settings_live_in_the_link_too():
    at = open_page("pages/gan.py", {"gan.mode": "Only D", "gan.arrows": "false"})
    _no_failure(at)
    assert at.radio(key="gan.mode").value == "d"
    assert at.toggle(key="gan.arrows").value is False
    bad = open_page("pages/gan.py", {"gan.mode": "nonsense"})
    _no_failure(bad)
    assert bad.radio(key="gan.mode").value == "both"
