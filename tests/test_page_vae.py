"""AppTest: the VAE page (issue 6)."""

from __future__ import annotations


from conftest import at_iteration, charts, open_page, text


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


SMALL = {"width": "32", "train_size": "200"}


def test_page_loads_with_its_figures():
    at = open_page("pages/vae.py")
    _ok(at)
    assert at.title[0].value == "VAE"
    assert at_iteration(at) == 0
    assert at.selectbox(key="data").value == "digits" and at.slider(key="latent").value == 2
    assert len(charts(at)) == 5  # manifold, latent, 3 image grids; the rest after an evaluation
    assert any("first evaluation" in i.value for i in at.info)
    assert any("Theory" in e.label for e in at.expander)


def test_step_and_play_advance_the_trainer_and_metrics_appear():
    at = open_page("pages/vae.py", SMALL)
    at.selectbox(key="vae.speed").set_value(100).run()
    at.button(key="vae.step").click().run()
    at.button(key="vae.step").click().run()
    _ok(at)
    assert at_iteration(at) == 200
    labels = [m.label for m in at.metric]
    assert "test ELBO" in labels and "active units" in labels
    assert len(charts(at)) == 10  # + 2 curves, IWAE(k), surgery, KL per dimension
    elbo = next(m for m in at.metric if m.label == "test ELBO")
    assert float(elbo.value) < 0
    at.button(key="vae.play").click().run()  # one frame runs in AppTest
    _ok(at)
    assert at_iteration(at) > 200
    at.button(key="vae.pause").click().run()
    at.button(key="vae.reset").click().run()
    assert at_iteration(at) == 0


def test_preset_link_sets_its_knobs():
    at = open_page("pages/vae.py", {"preset": "posterior collapse"})
    _ok(at)
    from dgm.families.vae.lessons import EXPERIMENT

    for k, v in EXPERIMENT.presets["posterior collapse"].items():
        value = None
        for kind in ("selectbox", "select_slider", "slider", "toggle"):
            found = [x for x in getattr(at, kind) if x.key == k]
            if found:
                value = found[0].value
                break
        assert value == v, (k, value, v)


def test_two_d_data_and_learned_prior():
    at = open_page("pages/vae.py", {**SMALL, "data": "ring8", "prior": "mog", "components": "5"})
    _ok(at)
    at.button(key="vae.step").click().run()
    _ok(at)
    assert at_iteration(at) == 10
    assert at.select_slider(key="components").value == 5


def test_bad_link_parameters_give_a_warning():
    at = open_page("pages/vae.py", {"latent": "99", "decoder": "nope", "beta": "abc", "k": "7"})
    _ok(at)
    note = text(at.warning[0].value)
    for part in ("latent=99", "'nope'", "beta"):
        assert part in note, part
    assert at.slider(key="latent").value == 16
    assert at.selectbox(key="decoder").value == "categorical17"


def test_gradient_estimator_panel():
    at = open_page("pages/vae.py", SMALL)
    at.button(key="vae.gradvar_btn").click().run()
    _ok(at)
    df = at.dataframe[0].value
    assert list(df["estimator"]) == ["reparameterisation", "score function", "score function + baseline"]
    assert df["total variance"][1] > df["total variance"][0]


def test_binarised_digits_page_hides_the_grey_level_decoders():
    at = open_page("pages/vae.py", {**SMALL, "data": "binarised_digits"})
    _ok(at)
    assert not any(s.key == "decoder" for s in at.selectbox)  # always a Bernoulli decoder here
    assert at.session_state["_live.vae"].trainer.model.decoder_kind == "bernoulli"
