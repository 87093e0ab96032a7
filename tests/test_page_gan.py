"""The GAN page in AppTest: it renders, Step and Play train, step modes keep the run, presets and
bad links behave."""

from conftest import open_page

PAGE = "pages/gan.py"
SMALL = {"g_width": "32", "d_width": "32", "batch": "64"}


def _state(at):
    return at.session_state["_live.gan"]


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_page_renders_with_figures_and_theory():
    at = open_page(PAGE, params=SMALL)
    _clean(at)
    assert at.title[0].value == "GAN dynamics"
    assert any("Theory" in e.label for e in at.expander)
    assert len(at.latex) >= 4
    assert _state(at).trainer.iteration == 0


def test_step_and_play_advance_the_trainer():
    at = open_page(PAGE, params=SMALL)
    at.button(key="gan.step").click().run()
    _clean(at)
    assert _state(at).trainer.iteration == 10
    at.button(key="gan.play").click().run()
    _clean(at)
    s = _state(at)
    assert s.playing and s.trainer.iteration > 10


def test_step_modes_do_not_reset_the_run():
    at = open_page(PAGE, params=SMALL)
    at.button(key="gan.step").click().run()
    trainer = _state(at).trainer
    g0 = [p.clone() for p in trainer.G.parameters()]
    at.radio(key="gan.mode").set_value("d").run()
    _clean(at)
    assert _state(at).trainer is trainer and trainer.iteration == 10 and trainer.runtime.mode == "d"
    at.button(key="gan.step").click().run()
    _clean(at)
    assert trainer.iteration == 20
    assert all((a == b).all() for a, b in zip(g0, trainer.G.parameters())), "only D trains in 'Only D' mode"
    at.radio(key="gan.mode").set_value("both").run()
    assert _state(at).trainer is trainer and trainer.runtime.mode == "both"


def test_preset_link_sets_its_knobs():
    at = open_page(PAGE, params={"preset": "WGAN-GP covers every mode", **SMALL})
    _clean(at)
    cfg = _state(at).trainer.config
    assert cfg.loss == "wgan_gp" and cfg.d_steps == 5 and cfg.beta1 == 0.0
    assert cfg.g_width == 32  # a knob the link sets itself wins over the preset
    assert any("Lesson" in i.value for i in at.info)


def test_cfg_preset_shows_particles_and_runs():
    at = open_page(PAGE, params={"preset": "CFG particles", **SMALL})
    at.button(key="gan.step").click().run()
    _clean(at)
    assert _state(at).trainer.config.loss == "cfg" and _state(at).trainer.iteration == 10


def test_bad_link_parameters_warn_instead_of_failing():
    at = open_page(PAGE, params={"loss": "bogus", "lr_d": "abc", "batch": "99999", "nope": "1", **{
        k: v for k, v in SMALL.items() if k != "batch"}})
    assert not at.exception
    assert at.warning, "a note about the adjusted link is shown"
    cfg = _state(at).trainer.config
    assert cfg.loss == "nonsaturating" and cfg.batch == 2048


def test_timeline_slider_appears_when_paused():
    at = open_page(PAGE, params=SMALL)
    for _ in range(2):
        at.button(key="gan.step").click().run()
    _clean(at)
    sliders = [s for s in at.select_slider if s.key and s.key.startswith("gan.timeline")]
    assert sliders and list(sliders[0].options)[-1] == "20"
    sliders[0].set_value(10).run()
    _clean(at)
    assert any("iteration 10" in c.value for c in at.caption)
