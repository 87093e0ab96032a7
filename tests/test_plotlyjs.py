"""plotly.js for the charts (dgm/ui/plotlyjs.py): the cartesian partial bundle pinned by digest, fetched whole or
not at all, served only when it is the plotly package's own plotly.js version, and enough for every chart."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from pathlib import Path

import plotly.graph_objects as go
import pytest
from plotly.basedatatypes import BaseTraceType

from dgm.ui import plotlyjs

ROOT = Path(__file__).resolve().parents[1]


def _tarball(version: str) -> bytes:
    js = f"/**\n* plotly.js (cartesian - minified) v{version}\n*/\nwindow.Plotly = {{}};\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(plotlyjs.MEMBER)
        info.size = len(js)
        tar.addfile(info, io.BytesIO(js))
    return buf.getvalue()


def _opener(blob: bytes):
    def urlopen(url, timeout):
        return io.BytesIO(blob)
    return urlopen


def _integrity(blob: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()


def test_a_partial_bundle_is_pinned_for_the_plotly_packages_own_plotlyjs():
    """Upgrading plotly without pinning its plotly.js's partial bundle would quietly serve the full one."""
    assert plotlyjs.bundled_version() in plotlyjs.PINNED, plotlyjs.bundled_version()


def test_fetch_keeps_the_bundle_only_when_it_is_the_pinned_file(tmp_path, monkeypatch):
    want = plotlyjs.bundled_version()
    good, other = _tarball(want), _tarball("0.0.1")
    monkeypatch.setitem(plotlyjs.PINNED, want, ("https://registry.example/p.tgz", _integrity(good)))
    with pytest.raises(ValueError, match="not the pinned file"):
        plotlyjs.fetch(tmp_path / "a", opener=_opener(good + b"x"))  # a changed download
    assert not (tmp_path / "a").exists()  # nothing written
    path = plotlyjs.fetch(tmp_path / "b", opener=_opener(good))
    assert path == tmp_path / "b" / plotlyjs.FILE and plotlyjs.version(path) == want
    assert [p.name for p in (tmp_path / "b").iterdir()] == [plotlyjs.FILE]  # no partial file left
    # the pin's file holding another plotly.js than the package's: refused too
    monkeypatch.setitem(plotlyjs.PINNED, want, ("https://registry.example/p.tgz", _integrity(other)))
    with pytest.raises(ValueError, match="holds plotly.js 0.0.1"):
        plotlyjs.fetch(tmp_path / "c", opener=_opener(other))
    monkeypatch.setattr(plotlyjs, "bundled_version", lambda: "9.9.9")
    with pytest.raises(LookupError):
        plotlyjs.fetch(tmp_path / "d", opener=_opener(good))


def test_setup_goes_on_without_the_bundle_when_it_cannot_be_fetched(tmp_path, monkeypatch, capsys):
    """Offline (or a changed download), `make setup` reports it and goes on; the app serves the full bundle."""
    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(plotlyjs, "PARTIAL_DIR", tmp_path / "js")
    monkeypatch.setattr(plotlyjs, "fetch", offline)
    plotlyjs.main()
    assert "not fetched (no network)" in capsys.readouterr().err
    assert plotlyjs.bundle_dir() == plotlyjs.FULL_DIR and not (tmp_path / "js").exists()


def test_the_partial_bundle_is_served_only_in_the_plotly_packages_version(tmp_path, monkeypatch):
    monkeypatch.setattr(plotlyjs, "PARTIAL_DIR", tmp_path)
    assert plotlyjs.bundle_dir() == plotlyjs.FULL_DIR  # not fetched: the full bundle
    (tmp_path / plotlyjs.FILE).write_text("/**\n* plotly.js (cartesian - minified) v0.0.1\n*/\n")
    assert plotlyjs.bundle_dir() == plotlyjs.FULL_DIR  # another version: the full bundle
    (tmp_path / plotlyjs.FILE).write_text(f"/**\n* plotly.js (cartesian - minified) v{plotlyjs.bundled_version()}\n*/\n")
    assert plotlyjs.bundle_dir() == tmp_path
    assert plotlyjs.version(plotlyjs.FULL_DIR / plotlyjs.FILE) == plotlyjs.bundled_version()


def test_every_trace_the_app_draws_is_in_the_partial_bundle():
    """Every plotly trace class the app's code builds (``go.Scatter(...)`` and the like) draws with the
    cartesian bundle (a WebGL ``go.Scattergl`` would not: plotly.js would draw nothing for it)."""
    used = set()
    for path in list((ROOT / "dgm").rglob("*.py")) + list((ROOT / "pages").glob("*.py")):
        used |= set(re.findall(r"\bgo\.([A-Z]\w*)\(", path.read_text()))
    traces = {name: getattr(go, name)().type for name in used
              if isinstance(getattr(go, name, None), type) and issubclass(getattr(go, name), BaseTraceType)}
    assert {"scatter", "heatmap"} <= set(traces.values()), traces  # the scan found the app's traces
    assert set(traces.values()) <= plotlyjs.TRACES, {k: v for k, v in traces.items() if v not in plotlyjs.TRACES}
