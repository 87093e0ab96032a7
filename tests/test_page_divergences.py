"""AppTest of the Divergences page: it opens fitted, Step and Play train, presets and links set the
knobs, bad links give a warning, the restarts button stores its result."""

from __future__ import annotations

import pytest
from conftest import open_page

from dgm.ui import divergences as ui

PAGE = "pages/divergences.py"
LIVE = "_live.divergence"


def _trainer(at):
    return at.session_state[LIVE].trainer


def _button(at, label):
    return next(b for b in at.button if b.label.startswith(label))


def test_page_opens_fitted_and_step_and_play_train():
    at = open_page(PAGE, params={"res": "48"})
    assert not at.exception and not at.error
    t = _trainer(at)
    assert t.iteration == ui.WARM_STEPS
    assert t.config.target == "bimodal" and t.config.res == 48
    assert len(at.dataframe) == 1  # the cross table: each value ± its quadrature error, and W1
    table = at.dataframe[0].value
    assert "W1" in table.columns and table.shape == (7, 8)
    assert "±" in str(table.iloc[0, 0]) and table.iloc[0, 6] == f"{float(table.iloc[0, 6]):.4g}"  # MMD: exact
    assert any("Quadrature: 48 × 48 cells" in c.value and "estimated error" in c.value for c in at.caption)
    _button(at, "Step").click().run()
    assert _trainer(at).iteration == ui.WARM_STEPS + 10
    _button(at, "Play").click().run()
    assert not at.exception
    assert _trainer(at).iteration > ui.WARM_STEPS + 10


def test_preset_link_sets_its_knobs_and_1d_page_draws():
    at = open_page(PAGE, params={"preset": "1D: two humps, one Gaussian", "res": "32"})
    assert not at.exception and not at.error
    assert at.selectbox(key="target").value == "mix1d"
    assert at.slider(key="sep").value == 5.0 and at.slider(key="w1").value == 0.5
    cfg = _trainer(at).config
    assert (cfg.target, cfg.sep, cfg.sd1, cfg.sd2) == ("mix1d", 5.0, 0.6, 0.6)
    assert any("cells of length" in c.value for c in at.caption)


def test_bad_link_parameters_give_a_warning_not_an_exception():
    at = open_page(PAGE, params={"target": "nope", "k": "99", "alpha": "abc", "res": "50", "foo": "1"})
    assert not at.exception
    assert at.warning, "a bad link should say what it changed"
    text = at.warning[0].value
    assert "target" in text and "alpha" in text and "foo" in text
    cfg = _trainer(at).config
    assert cfg.target == "bimodal" and cfg.res in (48, 64)


def test_restarts_button_stores_and_draws_its_result():
    at = open_page(PAGE, params={"target": "mix1d", "res": "32"})
    at.select_slider(key="div.restarts_n").set_value(16)
    at.select_slider(key="div.restarts_steps").set_value(100)
    at.run()
    _button(at, "Run the restarts").click().run()
    assert not at.exception and not at.error
    saved = at.session_state[ui.RESTARTS_KEY]
    assert len(saved["res"]["mode"]) == 16 and sum(saved["res"]["counts"].values()) == 16
    assert any(c.value.startswith("Of 16 runs") for c in at.caption)


def test_restarts_interrupted_by_another_click_are_fitted_in_the_next_run(monkeypatch):
    """A click elsewhere (the scan's button) while the restarts fit reruns the page and stops the fitting run
    (simulated: the first fit is interrupted by a rerun); the request survives, and the next run fits them."""
    from streamlit.runtime.scriptrunner_utils.exceptions import RerunException
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData

    fits, real = [], ui.restarts

    def interrupted_once(*args, **kwargs):
        fits.append(kwargs["n"])
        if len(fits) == 1:
            raise RerunException(RerunData())
        return real(*args, **kwargs)

    monkeypatch.setattr(ui, "restarts", interrupted_once)
    at = open_page(PAGE, params={"target": "mix1d", "res": "32"})
    at.select_slider(key="div.restarts_n").set_value(16)
    at.select_slider(key="div.restarts_steps").set_value(100)
    at.run()
    _button(at, "Run the restarts").click().run()  # the run that fits them is interrupted by a rerun
    assert fits == [16]
    at.run()  # the next run (the other click's)
    assert not at.exception and not at.error
    assert len(fits) == 2  # fitted again (AppTest's run after an interrupted one has the sliders at their defaults)
    assert len(at.session_state[ui.RESTARTS_KEY]["res"]["mode"]) == fits[1]
    assert any(c.value.startswith(f"Of {fits[1]} runs") for c in at.caption)
    at.run()  # the request is cleared once kept: no third fit
    assert len(fits) == 2


def test_mixture_family_and_mc_reverse_kl_run():
    at = open_page(PAGE, params={"target": "trimodal", "family": "mixture", "k": "2", "mc": "true", "res": "32"})
    assert not at.exception and not at.error
    cfg = _trainer(at).config
    assert (cfg.family, cfg.k, cfg.mc) == ("mixture", 2, True)
    assert any("Monte Carlo" in c.value or "reparameterised" in c.value for c in at.caption)


def test_separation_scan_button_draws_where_each_fit_switches():
    at = open_page(PAGE, params={"target": "mix1d", "res": "32"})
    _button(at, "Run the scan").click().run()
    assert not at.exception and not at.error
    assert at.session_state[ui.SCAN_KEY]["res"]["fits"]["js"]["switch"] is not None
    assert any("Jensen-Shannon: covers up to" in c.value for c in at.caption)


def test_a_lesson_link_opens_fitted_with_its_number_at_the_lessons_point():
    """The page opens fitted (WARM_STEPS), so a lesson's number is there at once: here the forward-KL fit 4.28
    times as wide as the reverse-KL fit (between the humps against on one hump; the point: ≥ 3)."""
    from dgm.families.divergences import lessons

    at = open_page(PAGE, params={"preset": "1D: two humps, one Gaussian"})
    assert not at.exception and not at.error
    t = _trainer(at)
    line = next(c.value for c in at.caption if "Iteration" in c.value)
    want = lessons._covers_over_seeks(t)
    assert t.iteration == ui.WARM_STEPS and want == pytest.approx(4.28, abs=0.01)
    assert f"forward-KL width ÷ reverse-KL width **{want:.3g}** ✓ the lesson's point" in line
