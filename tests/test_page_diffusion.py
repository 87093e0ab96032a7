"""AppTest checks of the diffusion page: it renders, trains, keeps its run when only the sampling changes,
measures on request, follows links and survives bad ones."""

from conftest import charts, open_page

PAGE = "pages/diffusion.py"
SMALL = {"width": "32", "depth": "2", "batch": "64", "nfe": "5"}


def _trainer(at):
    return at.session_state["_live.diffusion"].trainer


def _clean(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _evaluated(at):
    """The run's first evaluation, done here: a Step trains at most a fixed time (main's bound), and on a
    loaded test machine the first evaluation (imports, floors, 2,500 samples) alone can use it up."""
    _trainer(at).step(0)
    return at


def _titles(at) -> list[str]:
    return [(c["layout"].get("title") or {}).get("text", "") for c in charts(at)]


def test_page_renders_learned_and_exact_fields_and_steps():
    at = open_page(PAGE, params=SMALL)
    _clean(at)
    t = _trainer(at)
    assert (t.config.model, t.config.data, t.iteration) == ("ddpm", "ring8", 0)
    titles = _titles(at)
    for part in ("Learned score", "Exact score", "Error × p_t", "Forward process", "Reverse process", "Samples"):
        assert any(part in x for x in titles), (part, titles)
    _evaluated(at).button(key="diffusion.step").click().run()
    _clean(at)
    assert _trainer(at).iteration == 10


def test_sampling_settings_keep_the_run_and_model_settings_restart_it():
    at = open_page(PAGE, params=SMALL)
    _evaluated(at).button(key="diffusion.step").click().run()
    run = _trainer(at)
    at.selectbox(key="sampler").set_value("heun").run()
    _clean(at)
    assert _trainer(at) is run and run.iteration == 10 and run.runtime.sampler == "heun"
    assert any("Samples: heun" in x for x in _titles(at))
    at.selectbox(key="model").set_value("flow").run()
    _clean(at)
    assert _trainer(at).iteration == 0 and _trainer(at).config.model == "flow"


def test_view_options_live_in_the_link_and_change_the_figures():
    at = open_page(PAGE, params={**SMALL, "diffusion.t": "0.5", "diffusion.field": "velocity",
                                 "diffusion.weighted": "false"})
    _clean(at)
    titles = _titles(at)
    assert any(x.startswith("Learned velocity · t = 0.5") for x in titles), titles
    assert any("unweighted" in x for x in titles)


def test_measure_against_nfe_draws_the_curves_and_clouds():
    at = open_page(PAGE, params=SMALL)
    at.button(key="diffusion.nfe_btn").click().run()
    _clean(at)
    titles = _titles(at)
    assert any("High-quality samples against NFE" in x for x in titles), titles
    assert any("Mode KL against NFE" in x for x in titles)
    assert any("Measured against NFE at step 0" in c.value for c in at.caption)


def test_guidance_lesson_link_sets_its_knobs_and_offers_the_sweep():
    at = open_page(PAGE, params={"preset": "guidance sharpens and forgets", **SMALL})
    _clean(at)
    t = _trainer(at)
    assert t.config.conditional and t.n_classes == 8 and t.runtime.guidance == 4.0
    assert at.button(key="diffusion.guidance_btn")


def test_guidance_without_classes_falls_back_with_a_warning():
    at = open_page(PAGE, params={**SMALL, "data": "moons", "conditional": "true"})
    _clean(at)
    assert any("not a Gaussian mixture" in w.value for w in at.warning)
    assert not _trainer(at).config.conditional
    assert any("exact score is unknown" in i.value for i in at.info)


def test_digits_show_the_denoising_row_and_samples():
    at = open_page(PAGE, params={**SMALL, "data": "digits"})
    _clean(at)
    titles = _titles(at)
    assert any("Test digits noised" in x for x in titles) and any(x.startswith("Samples") for x in titles)


def test_bad_url_parameters_give_a_warning_not_an_exception():
    at = open_page(PAGE, params={**SMALL, "model": "gan", "nfe": "5000", "T": "abc", "diffusion.t": "7",
                                 "diffusion.field": "curl", "diffusion.weighted": "yes"})
    assert not at.exception
    note = " ".join(w.value for w in at.warning).replace("\\", "").replace("\u2060", "")  # markdown escapes
    for part in ("diffusion.t='7' is not a value of that control", "diffusion.field='curl' is not a value",
                 "diffusion.weighted='yes' is not a value"):
        assert part in note, note
    t = _trainer(at)
    assert t.config.model == "ddpm" and t.runtime.nfe == 1000 and t.config.T == 1000
    assert at.slider(key="diffusion.t").value == 0.1 and at.radio(key="diffusion.field").value == "score"
