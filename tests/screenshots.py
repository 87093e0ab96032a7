"""Screenshot comparison in the manner of Streamlit's own e2e tests: pixelmatch with a per-pixel
threshold of 0.05 and at most 0.2% of the pixels different.

An element's screenshot can start one pixel higher or lower when text above it changes its height
by a fraction of a pixel (the browser rounds the element's box), so a comparison that fails as it
stands is tried again with the whole picture moved by one pixel in each direction; the best of
those counts. A different figure differs under every such shift.

pixelmatch is pure Python (seconds per chart, even for equal pictures when it draws a diff image), so
its first test runs in numpy first: the pixels whose colour difference is over the threshold
(``over_threshold``, pixelmatch's own formula). pixelmatch then leaves out those it reads as
anti-aliasing, so it counts at most as many: where numpy's count is within the limit, so is
pixelmatch's, and the comparison passes without it. Only a picture that numpy finds too different
goes through pixelmatch (and its diff image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pixelmatch.contrib.PIL import pixelmatch

BASELINES = Path(__file__).resolve().parent / "screenshots"
FAILURES = BASELINES / "_failures"
PIXEL_THRESHOLD = 0.05
MAX_DIFF_FRACTION = 0.002


class ScreenshotMismatch(AssertionError):
    pass


SHIFTS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]


def _yiq(img: Image.Image) -> np.ndarray:
    """(H, W, 3) YIQ of an RGBA picture blended with white, as pixelmatch computes it (the same operations in
    the same order, in doubles: the same values)."""
    x = np.asarray(img, dtype=np.float64)
    alpha = x[..., 3:] / 255
    r, g, b = np.moveaxis(np.where(x[..., 3:] < 255, 255 + (x[..., :3] - 255) * alpha, x[..., :3]), -1, 0)
    return np.stack([r * 0.29889531 + g * 0.58662247 + b * 0.11448223,
                     r * 0.59597799 - g * 0.27417610 - b * 0.32180189,
                     r * 0.21147017 - g * 0.52261711 + b * 0.31114694], -1)


def over_threshold(a: Image.Image, e: Image.Image, threshold: float = PIXEL_THRESHOLD) -> int:
    """How many pixels of two RGBA pictures of one size differ by more than ``threshold`` in pixelmatch's
    colour metric: pixelmatch's count with its anti-aliasing pixels included (``includeAA=True``)."""
    d = _yiq(a) - _yiq(e)
    delta = 0.5053 * d[..., 0] * d[..., 0] + 0.299 * d[..., 1] * d[..., 1] + 0.1957 * d[..., 2] * d[..., 2]
    return int((delta > 35215 * threshold * threshold).sum())


def diff_fraction(actual: Image.Image, expected: Image.Image, diff: Image.Image | None = None) -> float:
    (wa, ha), (we, he) = actual.size, expected.size
    if abs(wa - we) > 1 or abs(ha - he) > 1:
        return 1.0
    # the element's box may round one pixel larger or smaller: compare the common part, as it stands and moved
    # by (dx, dy) (the overlap of the picture and the baseline)
    box = (0, 0, min(wa, we), min(ha, he))
    a, e = actual.convert("RGBA").crop(box), expected.convert("RGBA").crop(box)
    if diff is not None and diff.size != a.size:
        diff = None
    w, h = a.size
    pairs = [(a, e)] + [(a.crop((max(dx, 0), max(dy, 0), w + min(dx, 0), h + min(dy, 0))),
                         e.crop((max(-dx, 0), max(-dy, 0), w - max(dx, 0), h - max(dy, 0)))) for dx, dy in SHIFTS]
    bound = min(over_threshold(pa, pe) for pa, pe in pairs) / (w * h)  # numpy: an upper bound (module docstring)
    if bound <= MAX_DIFF_FRACTION:
        return bound
    best = pixelmatch(a, e, diff, threshold=PIXEL_THRESHOLD) / (w * h)
    for pa, pe in pairs[1:]:
        if best <= MAX_DIFF_FRACTION:
            break
        best = min(best, pixelmatch(pa, pe, None, threshold=PIXEL_THRESHOLD) / (w * h))
    return best


def baseline(name: str, machine_class: str | None = None) -> Path:
    """The baseline file ``name`` (a picture or a page's numbers) for a class of machines: its own copy in
    ``tests/screenshots/<class>/`` where that class's replay differs, else the shared one (the class that
    recorded the shared files is named in their numbers: ``kernels``)."""
    own = BASELINES / machine_class / name if machine_class else None
    return own if own is not None and own.exists() else BASELINES / name


def compare(png: bytes, name: str, update: bool, machine_class: str | None = None) -> float:
    """Compare a screenshot with ``tests/screenshots/<name>.png`` (or the machine class's own copy, see
    ``baseline``); with ``update`` rewrite it: the shared picture, or with ``machine_class`` the class's own copy
    when it differs from the shared one (and none when it does not). On a mismatch write actual, expected and
    diff images to tests/screenshots/_failures/."""
    import io

    actual = Image.open(io.BytesIO(png))
    shared = BASELINES / f"{name}.png"
    if update and machine_class and shared.exists():
        own = BASELINES / machine_class / f"{name}.png"
        own.unlink(missing_ok=True)
        if diff_fraction(actual, Image.open(shared)) > MAX_DIFF_FRACTION:
            own.parent.mkdir(exist_ok=True)
            actual.save(own, optimize=True)
        return 0.0
    path = baseline(f"{name}.png", machine_class)
    if update or not path.exists():
        if not update:
            raise ScreenshotMismatch(f"no baseline {path}; run `make screenshots` to create it")
        actual.save(path, optimize=True)
        return 0.0
    expected = Image.open(path)
    diff = Image.new("RGBA", actual.size)
    frac = diff_fraction(actual, expected, diff if actual.size == expected.size else None)
    if frac > MAX_DIFF_FRACTION:
        FAILURES.mkdir(parents=True, exist_ok=True)
        actual.save(FAILURES / f"{name}.actual.png")
        expected.save(FAILURES / f"{name}.expected.png")
        if actual.size == expected.size:
            diff.save(FAILURES / f"{name}.diff.png")
        raise ScreenshotMismatch(
            f"{name}: {frac:.3%} of pixels differ (limit {MAX_DIFF_FRACTION:.1%}, sizes {actual.size} vs "
            f"{expected.size}); see {FAILURES}/{name}.{{actual,expected,diff}}.png")
    return frac
