"""A plotly chart that updates in place: the chart element every page draws its figures with.

``st.plotly_chart`` gives each chart an identity computed from its figure, so a live page that
sends a new figure five times a second has the browser tear the chart down and build it anew
every time (a new React element, ``Plotly.newPlot``, every SVG node created again). This element
keeps one chart per key and hands each new figure to ``Plotly.react``, which updates only what
changed; a figure identical to the one shown costs nothing. On the GAN page that halves the
browser's work per frame (``bench/browser_figures.py`` times each figure's update).

plotly.js is the copy shipped with the plotly package (the same version that wrote the figure),
served by Streamlit's static file serving from ``static/`` next to ``app.py`` and loaded once per
page.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import plotly
import plotly.graph_objects as go
import streamlit as st

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"  # served at app/static/ (server.enableStaticServing in .streamlit/config.toml)
PLOTLY_JS = "plotly.min.js"
CLASS = "dgm-plot"  # the chart's container (screenshot tests select it)


def ensure_plotly_js() -> Path:
    """Copy the plotly package's plotly.js into the served folder when missing or stale."""
    src = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    dst = STATIC / PLOTLY_JS
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        STATIC.mkdir(exist_ok=True)
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)  # atomic: a browser never loads half a file
    return dst


JS = """
const SRC = "app/static/%(js)s";

function loadPlotly() {
  // one <script> per page, shared by every chart
  if (!window.__dgmPlotly) {
    window.__dgmPlotly = new Promise((resolve, reject) => {
      if (window.Plotly) return resolve(window.Plotly);
      const s = document.createElement("script");
      s.src = new URL(SRC, document.baseURI).href;
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => { window.__dgmPlotly = null; reject(new Error("plotly.js did not load")); };
      document.head.appendChild(s);
    });
  }
  return window.__dgmPlotly;
}

export default function (component) {
  const { data, parentElement } = component;
  let root = parentElement.querySelector(".%(cls)s");
  if (!root) {
    root = document.createElement("div");
    root.className = "%(cls)s";
    root.setAttribute("data-testid", "dgmPlot");
    parentElement.appendChild(root);
  }
  // on unmount: once the chart has left the page, free plotly's state and its resize listener
  const cleanup = () => setTimeout(() => { if (!root.isConnected && window.Plotly) window.Plotly.purge(root); }, 0);
  const spec = data && data.spec;
  if (!spec || root.__dgmSpec === spec) return cleanup;  // the same figure again: nothing to redraw
  root.__dgmSpec = spec;
  const fig = JSON.parse(spec);
  if (fig.layout && fig.layout.height) root.style.minHeight = fig.layout.height + "px";
  const config = { displaylogo: false, responsive: true };
  // updates are chained: a figure waits for the previous one to be drawn
  root.__dgmQueue = (root.__dgmQueue || Promise.resolve())
    .then(loadPlotly)
    .then((Plotly) => {
      if (root.__dgmSpec !== spec) return;  // a newer figure came meanwhile: draw that one
      const layout = Object.assign({}, fig.layout, { autosize: true });
      delete layout.width;
      return Plotly.react(root, fig.data || [], layout, config);
    })
    .then(() => root.setAttribute("data-drawn", "true"))
    .catch((e) => {
      root.textContent = "This chart could not be drawn: " + e.message;
    });
  return cleanup;
}
"""

_component = None
_unavailable = False  # plotly.js could not be put where the server serves it


def _get_component():
    global _component, _unavailable
    if _component is None and not _unavailable:
        try:
            ensure_plotly_js()
        except OSError:  # e.g. a read-only checkout: fall back to st.plotly_chart
            log.warning("could not copy plotly.js to %s; charts are redrawn from scratch", STATIC, exc_info=True)
            _unavailable = True
            return None
        _component = st.components.v2.component(
            "dgm.plotly_live", js=JS % {"js": PLOTLY_JS, "cls": CLASS}, isolate_styles=False,
            css=f".{CLASS} {{ width: 100%; }}")
    return _component


def chart(fig: go.Figure | str, key: str) -> None:
    """Show ``fig`` (a figure or its plotly JSON), updating the chart with key ``key`` in place."""
    spec = fig if isinstance(fig, str) else fig.to_json()
    component = _get_component()
    if component is None:
        st.plotly_chart(go.Figure(json.loads(spec)), key=key, config={"displaylogo": False}, theme=None)
    else:
        component(key=key, data={"spec": spec}, width="stretch")
