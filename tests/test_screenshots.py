"""Screenshot regression: every model page in replay mode (?seed=0&steps=N), its figures compared
with the baselines in tests/screenshots/. Rewrite them with `make screenshots`
(pytest tests/test_screenshots.py --update-screenshots).

The CPU kernels are pinned (dgm/core/kernels.py), so on any machine of the baseline's class (its kernel tier
and its processor's maker: every Intel x86-64 with AVX2, every AMD one) the replay's numbers are the same to the
last bit and the pictures match. The shared baselines were recorded on one class (their ``kernels``); another
class keeps its own numbers, and its own copy of each picture that differs, in tests/screenshots/<class>/
(`make screenshots` on a machine of that class writes them). On a class with no baselines (ARM, x86-64
without AVX2) the numbers can only agree to within a tolerance: the baseline also records how far the same
replay moves under the other x86 tier (``spread``, measured when the baselines are written), each number must
lie within 3 spreads of the baseline, and the pictures are not compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import figure_geometry, flat_numbers, overflowing_titles, wait_for_app, wait_for_charts
from dgm.core import registry, kernels
from dgm.ui.pages import all_pages
from screenshots import BASELINES, ScreenshotMismatch, baseline, compare

pytestmark = pytest.mark.browser

#: replay length per page: enough to show the phenomenon, short enough for CI
STEPS = {"demo": 60, "divergences": 150, "gan": 300, "flows": 200, "vae": 150, "autoregressive": 150, "latents": 100}
STEPS["diffusion"] = 500  # DDPM on ring8: every mode found
STEPS["arena"] = 10  # every family 10 steps and measured once (its early measurement): the replay takes seconds
#: more replays of a page, with knobs set in the link: (page, knobs, steps)
VARIANTS = [("latents", {"model": "gumbel"}, 100), ("latents", {"model": "vqvae"}, 100),
            # four GAN seeds at once, each measured five times (steps 0, 10, 20, 50, 100): the page's eight runs
            # cost twice the time and show nothing more to a picture comparison
            ("gan_seeds", {"runs": 4}, 100)]
_PAGES = {p.url: p for p in all_pages() if p.experiment in registry.names()}
CASES = ([(p, STEPS[url], {}) for url, p in _PAGES.items() if url in STEPS]
         + [(_PAGES[url], steps, knobs) for url, knobs, steps in VARIANTS])


def chart_pngs(page, url: str) -> list[bytes]:
    """Screenshots of the page's charts; first (before a screenshot scrolls) the figure must start in the top
    third of a 1400×900 window, the Play button be in view and no chart title run past its chart (issue 18; the
    projector's presenter mode: tests/test_browser_classroom.py)."""
    page.goto(url)
    wait_for_app(page, timeout_ms=300_000)  # the lottery's replay evaluates eight runs six times
    page.mouse.move(0, 0)
    charts = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]')
    # every chart drawn by plotly.js (it loads once per page, then draws after the script has finished)
    wait_for_charts(page)
    cut = page.locator('[data-testid="stMain"] [data-testid="stAlert"]', has_text="This link replays")
    assert cut.count() == 0, cut.first.inner_text()  # a replay stopped short (the server too slow): not the replay
    g = figure_geometry(page)
    assert g["scroll"] == 0 and g["fig"] is not None and g["play"] is not None, g
    assert g["fig"][0] <= 900 / 3 and 0 <= g["play"][0] and g["play"][1] <= 900, (url, g)
    assert not overflowing_titles(page), url
    page.wait_for_timeout(300)
    return [charts.nth(i).screenshot(animations="disabled", caret="hide") for i in range(charts.count())]


def replay_final(exp_name: str, steps: int, seed: int = 0, knobs: dict | None = None) -> dict:
    """Every number in the replayed run's final metrics, flattened (name, name.key, name[i]), but measured
    times (``*_seconds``): they are measurements of this machine, not part of the replay."""
    exp = registry.get(exp_name)
    t = exp.make(exp.config(**(knobs or {})), seed=seed, device="cpu")
    t.step(steps)
    return {k2: v2 for k, v in t.final().items() if not k.endswith("_seconds") for k2, v2 in flat_numbers(v, k).items()}


def other_tier_final(exp_name: str, steps: int, knobs: dict) -> dict:
    """The same replay on the other x86 kernel tier, in a subprocess (a tier is chosen per process)."""
    other = "sse2" if kernels.tier() == "avx2" else "avx2"
    code = ("import json, sys; sys.path.insert(0, 'tests'); from test_screenshots import replay_final;"
            f"print(json.dumps(replay_final({exp_name!r}, {steps}, knobs={knobs!r})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                       text=True, timeout=600, env=kernels.unpinned_env(os.environ, **{kernels.ENV: other}))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_numbers(final: dict, expected: dict) -> bool:
    """Exact on the baseline's machine class (True: compare the pictures too); else within 3 measured spreads."""
    same_tier = expected.get("kernels") == kernels.machine_class()
    for k, v in expected["final"].items():
        if same_tier:
            assert final[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        else:
            tol = 3 * expected["spread"][k] + 1e-9
            assert abs(final[k] - v) <= tol, f"{k}: {final[k]} vs {v} (tolerance {tol:.3g}, another kernel tier)"
    return same_tier


def _name(info, knobs: dict) -> str:
    return "-".join([info.url, *map(str, knobs.values())])


@pytest.mark.parametrize("info,steps,knobs", CASES, ids=[_name(c[0], c[2]) for c in CASES])
def test_page_figures_match_baselines(app_server, page, update_screenshots, info, steps, knobs):
    link = "".join(f"&{k}={v}" for k, v in knobs.items())
    # the figures' data: the same replay, headless, must give the same numbers. It runs here while the server
    # replays for the page (the server's replay takes one core, this one another: one thread each)
    with ThreadPoolExecutor(1) as pool:
        headless = pool.submit(replay_final, info.experiment, steps, knobs=knobs)
        pngs = chart_pngs(page, f"{app_server.url}/{info.url}?seed=0&steps={steps}{link}")
        final = headless.result()
    assert pngs, "the page shows no figures"
    assert page.locator('[data-testid="stException"]').count() == 0
    name, cls = _name(info, knobs), kernels.machine_class()
    shared = BASELINES / f"{name}.json"
    own = not shared.exists() or json.loads(shared.read_text())["kernels"] != cls  # this class's own baselines
    if update_screenshots:
        other = other_tier_final(info.experiment, steps, knobs)
        spread = {k: abs(v - other[k]) for k, v in final.items()}
        path = BASELINES / cls / f"{name}.json" if own and shared.exists() else shared
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"figures": len(pngs), "kernels": cls, "final": final, "spread": spread},
                                   indent=1, sort_keys=True))
    expected = json.loads(baseline(f"{name}.json", cls).read_text())
    assert len(pngs) == expected["figures"]
    if not check_numbers(final, expected):
        pytest.skip(f"numbers agree within the measured spread; pictures are compared on the {expected['kernels']} "
                    f"machines only (this machine: {cls}; `make screenshots` here records its own baselines)")
    for i, png in enumerate(pngs):
        compare(png, f"{name}_{i}", update_screenshots, cls if own else None)


def test_a_different_seed_fails_the_comparison(app_server, page, update_screenshots):
    if update_screenshots:
        pytest.skip("baselines are being rewritten")
    pngs = chart_pngs(page, f"{app_server.url}/demo?seed=1&steps={STEPS['demo']}")
    with pytest.raises(ScreenshotMismatch):
        compare(pngs[0], "demo_0", update=False)


def test_the_numpy_count_is_pixelmatchs_count_with_anti_aliasing_included():
    """The fast first test (tests/screenshots.py) counts exactly the pixels pixelmatch finds over its threshold
    before it sets the anti-aliased ones aside: the same number as pixelmatch with ``includeAA=True``, and never
    fewer than pixelmatch's own count, on pictures with transparency and small and large differences."""
    import numpy as np
    from PIL import Image
    from pixelmatch.contrib.PIL import pixelmatch

    from screenshots import PIXEL_THRESHOLD, over_threshold

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    a[..., 3] = np.where(rng.random((40, 50)) < 0.5, 255, a[..., 3])  # half opaque, half translucent
    for noise in (1, 12, 20, 40):  # 0, 18, 466 and 1,360 of 2,000 pixels over the threshold
        b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
        ia, ib = Image.fromarray(a, "RGBA"), Image.fromarray(b, "RGBA")
        n_all = pixelmatch(ia, ib, None, threshold=PIXEL_THRESHOLD, includeAA=True)
        assert over_threshold(ia, ib) == n_all >= pixelmatch(ia, ib, None, threshold=PIXEL_THRESHOLD)
    assert over_threshold(ia, ia) == 0


def test_a_picture_moved_by_one_pixel_matches_and_a_moved_figure_does_not():
    """The comparison forgives the element's box rounding one pixel either way, not a change inside it."""
    import numpy as np
    from PIL import Image

    from screenshots import diff_fraction

    rng = np.random.default_rng(0)
    base = np.full((120, 160, 3), 255, np.uint8)
    base[20:100, 30:130] = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)  # a busy picture
    moved = np.roll(base, 1, axis=0)  # the whole screenshot one pixel lower
    assert diff_fraction(Image.fromarray(moved), Image.fromarray(base)) == 0.0
    taller = np.concatenate([base, base[-1:]], axis=0)  # the element's box one pixel taller, same picture
    assert diff_fraction(Image.fromarray(taller), Image.fromarray(base)) == 0.0
    two_taller = np.concatenate([base, base[-2:]], axis=0)
    assert diff_fraction(Image.fromarray(two_taller), Image.fromarray(base)) == 1.0
    changed = base.copy()
    changed[40:70, 60:90] = np.roll(changed[40:70, 60:90], 3, axis=1)  # one part of the figure moved
    assert diff_fraction(Image.fromarray(changed), Image.fromarray(base)) > 0.002
