"""In front of a class (issue 18): 2D views keep the samples in sight, chart titles fit, the GAN's mode panels
agree with the picture between evaluations, and every lesson says on its page what to look at, with the
number that shows its point."""

import dataclasses
import math

import numpy as np
import plotly.graph_objects as go
import pytest

from conftest import open_page
from dgm.core import registry, viz
from dgm.core.metrics import mode_stats
from dgm.families.gan import figures as gf
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import GANTrainer

BOX = (-3.0, 3.0, -3.0, 3.0)


def _notes(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_a_view_keeps_samples_inside_the_box_as_it_is():
    pts = np.random.default_rng(0).uniform(-2.9, 2.9, size=(500, 2))
    fig = viz.follow(viz.plane(BOX), BOX, pts)
    assert tuple(fig.layout.xaxis.range) == (-3, 3) and tuple(fig.layout.yaxis.range) == (-3, 3)
    assert _notes(fig) == []


def test_a_view_follows_a_cloud_that_leaves_the_box():
    pts = np.random.default_rng(0).normal(size=(500, 2)) * 0.2 + [4.5, -1.0]
    fig = viz.follow(viz.plane(BOX), BOX, pts)
    x0, x1 = fig.layout.xaxis.range
    y0, y1 = fig.layout.yaxis.range
    inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    assert inside.mean() >= 0.98 and x0 <= -3 and y1 >= 3  # the data's box stays in view too
    assert all("outside" not in n for n in _notes(fig)) or inside.mean() < 1


def test_a_cloud_too_far_away_is_named_with_its_share_and_direction():
    pts = np.random.default_rng(0).normal(size=(400, 2)) * 0.1 + [60.0, 40.0]
    pts[:100] = np.random.default_rng(1).uniform(-1, 1, size=(100, 2))  # a quarter stays in the box
    pts[0] = np.nan
    fig = viz.follow(viz.plane(BOX), BOX, pts)
    assert fig.layout.xaxis.range[1] == pytest.approx(3 + 2 * 6)  # grown by at most twice the span
    (note,) = _notes(fig)
    assert note.startswith("75% of samples outside") and "→" in note and "↑" in note and "←" not in note
    (short,) = _notes(viz.presenter(fig))  # a projector's larger font: the short form, the same share and sides
    assert short == note.replace(" of samples", "") == "75% outside → ↑"


@pytest.mark.parametrize("chars", [20, 44])
def test_long_titles_wrap_within_their_width(chars):
    title = "JS(p, q) in nats (log 2 = 0.693 is the maximum) between smoothed densities of p and q"
    fig = viz.wrap_title(go.Figure(layout=viz.layout(title, 300)), chars)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) > 1 and all(len(line) <= chars for line in lines)
    assert fig.layout.margin.t > 40
    assert viz.wrap_title(go.Figure(layout=viz.layout("Losses", 300)), chars).layout.title.text == "Losses"


def test_the_gan_mode_panels_show_the_mode_metrics_now_as_the_evaluation_would():
    t = GANTrainer(GANConfig(g_width=16, d_width=16, batch=32), seed=0, device="cpu")
    t.step(40)  # between evaluations (every 1,000 steps)
    snap = gf.snapshot(t)
    ev = t.evaluate()
    now = snap["modes_now"]
    assert now["step"] == 40
    for k in ("modes", "high_quality", "mode_kl"):
        assert now[k] == pytest.approx(ev[k])
    fig = gf.main_figures(snap, t.history.merged(), t.data)["modes"]
    assert fig.data[0].x[-1] == 40 and fig.data[0].y[-1] == now["modes"]


def test_every_lesson_says_what_to_look_at_and_watches_a_number_it_can_measure():
    for name in registry.names():
        exp = registry.get(name)
        for les in exp.lessons:
            assert les.text and les.look and len(les.look) <= 120, (name, les.name)
            assert les.watch is not None, f"{name} / {les.name}: every lesson says in a number when it lands"
            t = exp.make(exp.config(**les.values), seed=0, device="cpu")
            assert les.watch.value(t) is None or math.isfinite(les.watch.value(t))
    gan = registry.get("gan")
    w = gan.lesson("WGAN-GP covers every mode").watch
    t = gan.make(gan.config(**gan.lesson("WGAN-GP covers every mode").values), seed=0, device="cpu")
    assert w.value(t) == mode_stats(t.generate(), t.data.centers, t.data.std)["modes"] and not w.reached(t)


def test_a_lesson_page_states_its_point_and_opens_at_its_fast_forward(monkeypatch):
    exp = registry.get("vae")
    les = exp.lesson("posterior collapse")
    assert les.start > 0
    # the same lesson, fast-forwarded 20 steps instead of its hundreds (the mechanism, not the time)
    short = dataclasses.replace(exp, lessons=tuple(dataclasses.replace(x, start=20) if x is les else x
                                                   for x in exp.lessons))
    get = registry.get
    monkeypatch.setattr(registry, "get", lambda name: short if name == "vae" else get(name))
    at = open_page("pages/vae.py", params={"preset": les.name})
    assert not at.exception
    assert any(f"Lesson: {les.name}" in i.value and les.look in i.value for i in at.info)
    assert any(les.text[:40] in m.value for m in at.markdown)  # the whole note, under "About"
    assert at.session_state["_live.vae"].trainer.iteration == 20
    assert any("active units" in c.value and "the point: ≤ 2" in c.value for c in at.caption)


def test_log_axes_over_decades_are_labelled_at_powers_of_ten_only():
    wide = viz.curves([{"step": i, "v": 10.0 ** -i} for i in range(5)], ["v"], title="t", log_y=True)
    narrow = viz.curves([{"step": i, "v": 1 + 0.1 * i} for i in range(5)], ["v"], title="t", log_y=True)
    assert viz.tidy_axes(wide).layout.yaxis.dtick == 1
    assert viz.tidy_axes(narrow).layout.yaxis.dtick is None and narrow.layout.yaxis.automargin


def test_a_watch_on_an_evaluated_number_waits_for_the_first_evaluation():
    from types import SimpleNamespace

    gap = registry.evaluated("nll", minus=lambda t: 2.5)
    diff = registry.evaluated("val_nll", minus="best_val_nll")
    assert gap(SimpleNamespace(latest_eval={})) is None and diff(SimpleNamespace(latest_eval={})) is None
    assert gap(SimpleNamespace(latest_eval={"nll": 3.0})) == 0.5
    assert diff(SimpleNamespace(latest_eval={"val_nll": 115.0, "best_val_nll": 110.0})) == 5.0
    w = registry.Watch("x", diff, lambda v: v >= 5, "≥ 5")
    assert w.value(SimpleNamespace(iteration=9, latest_eval={"val_nll": 1.0})) is None  # its other half missing
    pct = registry.evaluated("high_quality", scale=100)
    assert pct(SimpleNamespace(latest_eval={"high_quality": 0.875})) == pytest.approx(87.5)


def test_the_manifold_lesson_counts_the_digits_the_pages_grid_shows():
    """The 2D-manifold lesson's number: the classes the digits classifier gives the cells of the page's own grid
    (the figure's 15 × 15 decoded means) with probability ≥ 0.9; one grey blur at the start, nine or ten
    digits once the grid has organised itself (step 800 on seed 0). The classifier is also built when its first
    caller is inside ``no_grad``, as a watch is (it once failed there)."""
    import torch

    from dgm.core import quality
    from dgm.families.vae import figures as vf

    exp = registry.get("vae")
    les = exp.lesson("2D manifold of digits")
    t = exp.make(exp.config(**les.values), seed=0, device="cpu")
    quality.digits_classifier.cache_clear()
    with torch.no_grad():
        assert les.watch.value(t) <= 1 and not les.watch.reached(t)
    t.step(800)
    cells = torch.as_tensor(vf.snapshot(t)["manifold"]).reshape(-1, 64)
    top = torch.softmax(quality.digits_classifier()(cells), 1).max(1)
    shown = {int(c) for c, p in zip(top.indices, top.values) if p >= quality.CONFIDENT}
    assert les.watch.value(t) == len(shown) >= 9 and les.watch.reached(t)


def test_the_lessons_played_in_the_browser_exist_and_watch_a_number():
    from test_browser_classroom import PLAYED, WATCHED

    assert sorted(les.name for _, les in WATCHED) == sorted(PLAYED)


def _sidebar_of_a_link():
    import streamlit as st

    from dgm.core import config as cfglib
    from dgm.core import registry
    from dgm.ui import controls, pages

    pages._run.active = True  # the sidebar alone, without app.py's navigation around it
    exp = registry.get(st.session_state["_exp"])
    st.session_state["_cfg"] = cfglib.to_dict(controls.config_sidebar(exp))


@pytest.mark.parametrize("name", [n for n in registry.names() if registry.get(n).lessons])
def test_a_lesson_link_sets_every_knob_to_the_lessons_value(name):
    """The sidebar a lesson's link opens gives exactly the lesson's config, so the page trains what the lesson
    describes (a learning rate off the sliders' 1-2-5 steps, e.g. 4e-4, once fell back to the default, and the
    lesson's watch and fast-forward never showed)."""
    from streamlit.testing.v1 import AppTest

    from dgm.core import config as cfglib

    exp = registry.get(name)
    for les in exp.lessons:
        at = AppTest.from_function(_sidebar_of_a_link, default_timeout=60)
        at.session_state["_exp"] = name
        at.query_params["preset"] = les.name
        at.run()
        assert not at.exception, (name, les.name)
        want = cfglib.to_dict(exp.config(**les.values))
        got = at.session_state["_cfg"]
        assert got == want, (les.name, {k: (got[k], want[k]) for k in want if got.get(k) != want[k]})


def test_a_lesson_with_sampling_settings_is_still_the_lessons_run_on_the_diffusion_page():
    """The diffusion page's sampler and NFE are runtime settings (``Experiment.split``), the rest its training
    config; a lesson that sets them (4 NFE, a one-step Euler) is still that lesson's run, with its watch on the
    status line (they once lost it: the training config alone has the default sampler)."""
    import dataclasses

    from dgm.ui.view import _is_lessons_run

    exp = registry.get("diffusion")
    for les in exp.lessons:
        cfg = exp.config(**les.values)
        assert _is_lessons_run(exp, les, cfg), les.name
        assert not _is_lessons_run(exp, les, dataclasses.replace(cfg, nfe=cfg.nfe + 1)), les.name
    les = exp.lesson("few steps, blurry samples")
    at = open_page("pages/diffusion.py", params={"preset": les.name})
    assert not at.exception
    assert any(les.watch.label in c.value and "(the point: ≤ 10%" in c.value for c in at.caption)


def test_the_density_network_lesson_counts_the_modes_its_mean_curve_passes():
    """The number is the curve's, not the samples': a decoder mean drawn round the whole ring passes all eight
    modes, one along the x-axis only the two at (±2, 0); the lesson's own run bends its curve through all eight
    by step 500 (seed 0; 10 of seeds 0-9 in the closing note's probe), from fewer at the start."""
    import torch

    exp = registry.get("latents")
    les = exp.lesson("density network on ring8")
    t = exp.make(exp.config(**les.values), seed=0, device="cpu")
    assert les.watch.value(t) < 8 and not les.watch.reached(t)
    t.step(500)
    assert les.watch.value(t) == 8 and les.watch.reached(t)
    ring = lambda z: (torch.cat([2 * torch.cos(1.6 * z), 2 * torch.sin(1.6 * z)], 1), None)  # noqa: E731 (±5.3 rad)
    line = lambda z: (torch.cat([z, 0 * z], 1), None)  # noqa: E731
    for curve, passes in ((ring, 8), (line, 2)):
        t.decoder.gaussian = curve
        assert les.watch.value(t) == passes
    other = exp.make(exp.config(**{**les.values, "latent": 2}), seed=0, device="cpu")
    assert les.watch.value(other) is None  # a surface, not a curve


def test_the_learned_prior_lesson_divides_the_marginal_kl_by_the_codes_kl_to_n01():
    from types import SimpleNamespace

    w = registry.get("vae").lesson("learned prior").watch
    at = lambda a, step=600: SimpleNamespace(iteration=step, analysis=a)  # noqa: E731
    assert w.value(at({})) is None  # not evaluated yet (e.g. just restored)
    assert w.value(at({"surgery": {"marginal_kl": 0.3, "marginal_kl_standard": 2.4}})) == pytest.approx(0.125)
    assert w.reached(at({"surgery": {"marginal_kl": 0.3, "marginal_kl_standard": 2.4}}))
    assert not w.reached(at({"surgery": {"marginal_kl": 0.3, "marginal_kl_standard": 0.9}}))
    assert w.value(at({"surgery": {"marginal_kl": 0.0, "marginal_kl_standard": 0.7}}, step=100)) is None  # too soon


def test_the_off_data_lesson_shows_training_fixing_the_score_only_where_the_data_is():
    """At t = 0.05 the plane's mean error over its p_t-weighted mean: about 80 before training (the exact
    score is steep away from the ring), past 1,000 by step 500 as the weighted error falls and the other
    does not (seed 0)."""
    from dgm.families.diffusion.figures import field_snapshot

    exp = registry.get("diffusion")
    les = exp.lesson("the score is wrong where there is no data")
    t = exp.make(exp.config(**les.values), seed=0, device="cpu")
    before = field_snapshot(t, 0.05)
    assert 40 < les.watch.value(t) < 200 and not les.watch.reached(t)
    t.step(500, evaluate=False)  # (the number is the field's, not an evaluation's)
    after = field_snapshot(t, 0.05)
    assert les.watch.reached(t)
    assert after["error_at_t"] < before["error_at_t"] / 20  # where the data is: fixed
    assert float(after["error"].mean()) > float(before["error"].mean()) / 3  # elsewhere: about as wrong


def test_the_diffusion_digits_lesson_measures_how_far_samples_lie_from_the_training_digits():
    exp = registry.get("diffusion")
    les = exp.lesson("digits")
    t = exp.make(exp.config(**les.values), seed=0, device="cpu")
    t.step(0)  # the evaluation at step 0
    assert t.latest_eval["nearest"] > 3 and not les.watch.reached(t)  # the untrained network draws noise
    from dgm.ui.diffusion import _caption

    assert "3.7" in _caption(t) and "as far from their nearest training digit" in _caption(t)
    at = open_page("pages/diffusion.py", params={"preset": les.name})
    assert not at.exception
    assert any(les.watch.label in c.value and "(the point: ≤ 1.4)" in c.value for c in at.caption)


def test_the_guidance_lesson_measures_its_samples_leaving_the_data():
    """Scale 4 puts the run's samples several times the true samples' MMD² from the data by step 250, where
    the same network sampled at scale 1 sits at about 1 (seed 0: 44 and 1.2); before step 250 the number waits
    (untrained samples are off the data at any scale)."""
    exp = registry.get("diffusion")
    les = exp.lesson("guidance sharpens and forgets")
    t = exp.make(exp.config(**les.values), seed=0, device="cpu")
    t.latest_eval = {"mmd": 0.66, "mmd_floor": 0.0024}  # what the untrained network's evaluation gives
    assert les.watch.value(t) is None
    t.step(250, evaluate=False)
    t.latest_eval = t.evaluate()  # the evaluation at step 250 alone
    assert les.watch.reached(t)
    t.runtime = dataclasses.replace(t.runtime, guidance=1.0)
    ev = t.evaluate()
    assert ev["mmd"] / ev["mmd_floor"] < 2


def test_the_pacgan_lottery_lesson_watches_the_runs_on_every_mode():
    """The lesson reads the lottery's own count (``every_mode``, tests/test_seeds.py) and opens where seven or
    eight of the eight runs have got there on seeds 0-4 (the plain loss's two or three)."""
    from types import SimpleNamespace

    les = registry.get("gan_seeds").lesson("PacGAN across seeds")
    at = lambda ev: SimpleNamespace(iteration=6000, latest_eval=ev)  # noqa: E731
    assert les.watch.value(at({})) is None  # not evaluated yet
    assert les.watch.value(at({"every_mode": 6.0})) == 6 and not les.watch.reached(at({"every_mode": 6.0}))
    assert les.watch.reached(at({"every_mode": 7.0})) and les.watch.reached(at({"every_mode": 8.0}))
    assert les.start >= 6000


def test_a_number_measured_on_request_names_its_button_and_is_kept_with_the_run():
    """The Gumbel-softmax lessons' numbers come from the estimator table, measured when the page's button is
    pressed: until then the status line names the button; the table is kept with its step on the trainer (a
    worker's older state does not overwrite it, a Reset clears it)."""
    from dgm.ui.view import _watch_text

    exp = registry.get("latents")
    les = exp.lesson("temperature trades bias for variance")
    t = exp.make(exp.config(**{**les.values, "width": 32}), seed=0, device="cpu")
    assert "not measured yet: press **Measure the estimators now**" in _watch_text(les, t)
    t.step(20)
    old = t.export_state()
    les.watch.measure(t)
    assert t.estimators[0] == 20 and les.watch.reached(t)  # small τ scatters far more (41-45 times at step 300)
    t.import_state(old)  # e.g. a worker's state from before the measurement
    assert t.estimators is not None and t.estimators[0] == 20
    assert "** (at step 20)" in _watch_text(les, t)  # how old the measurement is
    t.reset()
    assert t.estimators is None


def test_a_measurement_on_request_taken_too_early_does_not_count_and_the_page_says_so():
    """Straight-through's variance over the soft estimator's is about 1 at step 0 (an untrained decoder hardly
    tells one code from another: the lesson's point not shown) and 1.3-1.7 by step 50 on seeds 0-4: a measurement
    from before step 100 does not count, and the status line asks for another from step 100 on."""
    from dgm.ui.view import _watch_text

    exp = registry.get("latents")
    les = exp.lesson("hard samples (straight-through)")
    t = exp.make(exp.config(**les.values), seed=0, device="cpu")
    assert "not measured yet: press **Measure the estimators now** from step 100 on" in _watch_text(les, t)
    t.step(20)
    les.watch.measure(t)
    assert les.watch.value(t) is None and les.watch.metric(t) is not None
    assert "measured at step 20, too early: press **Measure the estimators now** again from step 100 on" in \
        _watch_text(les, t)
    t.step(80)
    assert "measured at step 20, too early" in _watch_text(les, t)  # the table is still step 20's
    les.watch.measure(t)
    assert les.watch.reached(t) and "** (at step 100) ✓ the lesson's point" in _watch_text(les, t)
