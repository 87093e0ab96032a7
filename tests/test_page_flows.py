"""AppTest checks of the normalizing-flows page: it renders, trains, follows links and survives bad ones."""

from conftest import charts, open_page

PAGE = "pages/flows.py"
SMALL = {"layers": "2", "hidden": "16", "batch": "64"}


def _trainer(at):
    return at.session_state["_live.flow"].trainer


def _clean(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_page_renders_the_default_lesson():
    at = open_page(PAGE)
    _clean(at)
    t = _trainer(at)
    assert t.config.flow == "realnvp" and t.config.data == "8gaussians"
    assert any("Layer by layer" in s.value for s in at.subheader)
    assert len(charts(at)) >= 7
    assert at.slider(key="flow.layer").value == t.config.layers


def test_step_and_play_advance_the_trainer():
    at = open_page(PAGE, params=SMALL)
    _clean(at)
    assert _trainer(at).iteration == 0
    at.button(key="flow.step").click().run()
    _clean(at)
    assert _trainer(at).iteration == 10
    at.button(key="flow.play").click().run()
    _clean(at)
    assert _trainer(at).iteration > 10


def test_layer_slider_picks_a_layer():
    at = open_page(PAGE, params={**SMALL, "layers": "3"})
    at.slider(key="flow.layer").set_value(1).run()
    _clean(at)
    assert at.slider(key="flow.layer").value == 1


def test_preset_link_sets_its_knobs():
    at = open_page(PAGE, params={"preset": "too few layers"})
    _clean(at)
    assert _trainer(at).config.layers == 2
    at = open_page(PAGE, params={"preset": "planar flow on U1-U4", "layers": "4"})
    _clean(at)
    c = _trainer(at).config
    assert (c.flow, c.objective, c.data, c.layers) == ("planar", "reverse_kl", "U3", 4)


def test_bad_url_parameters_give_a_warning_not_an_exception():
    at = open_page(PAGE, params={**SMALL, "flow": "glow", "layers": "999", "lr": "abc", "bogus": "1"})
    assert not at.exception
    assert at.warning, "a note about the adjusted link was expected"
    assert _trainer(at).config.layers == 64 and _trainer(at).config.flow == "realnvp"


def test_reverse_kl_on_a_sampled_target_falls_back_with_a_warning():
    at = open_page(PAGE, params={**SMALL, "data": "moons", "objective": "reverse_kl"})
    _clean(at)
    assert any("Reverse KL needs" in w.value for w in at.warning)
    assert _trainer(at).config.objective == "forward_kl"


def test_one_layer_and_a_sampled_target_render():
    at = open_page(PAGE, params={"layers": "1", "hidden": "16", "flow": "iaf", "data": "moons"})
    _clean(at)
    at.button(key="flow.step").click().run()
    _clean(at)
    assert _trainer(at).iteration == 10
    assert any("known only through samples" in i.value for i in at.info)
