"""plotly.js for the charts: plotly's own "cartesian" partial bundle where setup could fetch it, else the full
bundle that ships inside the plotly package.

Every chart of the app uses only the trace types of the cartesian bundle (``TRACES``; tests/test_plotlyjs.py
checks the figures). That bundle is a third of the full one (1.5 MB against 4.8 MB, 0.5 MB against 1.5 MB
gzipped), and a browser parses and starts it in half the time (headless Chromium on a 2-core Intel Xeon: 0.43 s
against 0.85 s, median of six, `bench/browser_figures.py --bundles`; the first chart of a first visit waits for
it). It is not part of the plotly Python package, so ``make setup`` fetches the npm package of the same plotly.js
version from the npm registry, checks it against the digest pinned here, and keeps the one file under the virtual
environment (``python -m dgm.ui.plotlyjs``). Offline, or for another plotly version, the app serves the full bundle: the
same charts, a larger download.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

import plotly

#: plotly.js version -> (npm tarball, its sha512 as npm's registry states it: the "integrity" of the version)
PINNED = {
    "4.1.1": ("https://registry.npmjs.org/plotly.js-cartesian-dist-min/-/plotly.js-cartesian-dist-min-4.1.1.tgz",
              "sha512-o8GrFeusncwBIxbBynRJpY4pkgVB6caM+JLpwrLYbbsO7dZ8FJ+SVN2Fr+L7kiG/Z6w4P5O0Jus/Qr5EefHVeg=="),
}
#: the trace types the cartesian bundle draws (plotly.js's lib/index-cartesian.js)
TRACES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour", "image",
                    "pie", "scatter", "scatterternary", "violin"})
FULL_DIR = Path(plotly.__file__).resolve().parent / "package_data"  # plotly.min.js, the full bundle
PARTIAL_DIR = Path(sys.prefix) / "share" / "dgm" / "plotlyjs"  # plotly.min.js, the partial bundle, once fetched
FILE = "plotly.min.js"  # the name both folders serve it under
MEMBER = "package/plotly-cartesian.min.js"  # in the npm tarball


def version(path: Path) -> str | None:
    """The plotly.js version a bundle's header names, or None."""
    try:
        with open(path, "rb") as f:
            return _version(f.read(300))
    except OSError:
        return None


def _version(js: bytes) -> str | None:
    m = re.search(rb"plotly\.js (?:\([^)]*\) )?v(\d+\.\d+\.\d+)", js[:300])  # "plotly.js (cartesian - minified) v4.1.1"
    return m.group(1).decode() if m else None


def bundled_version() -> str | None:
    """The plotly.js version inside the installed plotly package (the one its figures are written for)."""
    return version(FULL_DIR / FILE)


def bundle_dir() -> Path:
    """The folder whose ``plotly.min.js`` the app serves: the partial bundle when it is there and of the same
    version as the plotly package's own, else the package's full bundle."""
    want = bundled_version()
    if want is not None and version(PARTIAL_DIR / FILE) == want:
        return PARTIAL_DIR
    return FULL_DIR


def fetch(dest: Path = PARTIAL_DIR, opener=urllib.request.urlopen) -> Path:
    """Fetch the partial bundle of the installed plotly's plotly.js version into ``dest``/plotly.min.js, checked
    against its pinned digest (nothing is written otherwise). Raises LookupError for a version with no pin,
    ValueError for a download that is not the pinned one, OSError for a failed download."""
    want = bundled_version()
    if want not in PINNED:
        raise LookupError(f"no partial bundle is pinned for plotly.js {want} (dgm/ui/plotlyjs.py: PINNED)")
    url, integrity = PINNED[want]
    with opener(url, timeout=20) as r:
        blob = r.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != integrity:
        raise ValueError(f"{url} is not the pinned file (its digest is {digest}, the pin {integrity})")
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        js = tar.extractfile(MEMBER).read()
    if _version(js) != want:
        raise ValueError(f"{url} holds plotly.js {_version(js)}, not {want}")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / (FILE + ".part")
    tmp.write_bytes(js)
    tmp.replace(dest / FILE)  # whole or not at all
    return dest / FILE


def main() -> None:
    """``python -m dgm.ui.plotlyjs``: fetch the partial bundle (make setup runs it). A failure is reported, not
    fatal: the app then serves the full bundle, and the next ``make`` tries again."""
    if bundle_dir() == PARTIAL_DIR:
        (PARTIAL_DIR / FILE).touch()  # newer than the requirements' stamp: make does not ask again
        print(f"plotly.js partial bundle: {PARTIAL_DIR / FILE} (present)")
        return
    try:
        print(f"plotly.js partial bundle: {fetch()}")
    except (LookupError, ValueError, OSError, KeyError, tarfile.TarError) as e:
        print(f"plotly.js partial bundle not fetched ({e}); the app serves plotly's full bundle", file=sys.stderr)


if __name__ == "__main__":
    main()
