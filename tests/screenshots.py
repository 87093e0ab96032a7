"""Screenshot comparison in the manner of Streamlit's own e2e tests: pixelmatch with a per-pixel
threshold of 0.05 and at most 0.2% of the pixels different."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from pixelmatch.contrib.PIL import pixelmatch

BASELINES = Path(__file__).resolve().parent / "screenshots"
FAILURES = BASELINES / "_failures"
PIXEL_THRESHOLD = 0.05
MAX_DIFF_FRACTION = 0.002


class ScreenshotMismatch(AssertionError):
    pass


def diff_fraction(actual: Image.Image, expected: Image.Image, diff: Image.Image | None = None) -> float:
    if actual.size != expected.size:
        return 1.0
    n = pixelmatch(actual.convert("RGBA"), expected.convert("RGBA"), diff, threshold=PIXEL_THRESHOLD)
    return n / (actual.size[0] * actual.size[1])


def compare(png: bytes, name: str, update: bool) -> float:
    """Compare a screenshot with ``tests/screenshots/<name>.png``; with ``update`` rewrite it.
    On a mismatch write actual, expected and diff images to tests/screenshots/_failures/."""
    import io

    path = BASELINES / f"{name}.png"
    actual = Image.open(io.BytesIO(png))
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
