"""A plotly chart that updates in place: the chart element every page draws its figures with.

``st.plotly_chart`` gives each chart an identity computed from its figure, so a live page that
sends a new figure five times a second has the browser tear the chart down and build it anew
every time (a new React element, ``Plotly.newPlot``, every SVG node created again). This element
keeps one chart per key and hands each new figure to ``Plotly.react``, which updates only what
changed; a figure identical to the one shown costs nothing. On the GAN page that halves the
browser's work per frame (``bench/browser_figures.py`` times each figure's update).

Dense traces are drawn on a canvas laid over the plot instead of by plotly as SVG: scatter traces of
many points drawn only as circles of one colour and size, or only as solid lines of one colour and
width, and heatmaps of evenly spaced cells with a set colour range, on axes of fixed range (the
samples, arrows, warped grids and heatmaps of a live view). Only the last traces qualify, so that
the order of drawing stays; each stays in the figure with one point far outside the plot, for its
legend entry and colour bar. The rest of the figure then is often the same from one frame to the
next but for its title, and ``Plotly.react`` has almost nothing to do: a frame of the GAN page's
main view costs the browser a few milliseconds instead of some 40. Zooming, panning, resizing and
the legend redraw the canvas (and ``uirevision`` keeps them from one frame to the next); points
drawn there show no hover labels.

The element's JavaScript is ``assets/plotly_live.js``; plotly.js is plotly's cartesian partial bundle of the
version the plotly package ships, which setup fetches, or else the package's own full bundle (``plotlyjs``). Both
are served by Streamlit's route for component assets, from where they lie (nothing is written into the
checkout), and plotly.js is loaded once per page.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

import dgm
from dgm.ui import plotlyjs

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent / "assets"  # plotly_live.js
NAME = "dgm.plotly_live"
CLASS = "dgm-plot"  # the chart's container (screenshot tests select it; the JS names it too)


def _register_assets() -> bool:
    """Make this runtime serve our JS and plotly.js at ``/_stcore/bidi-components/<component>/<file>``.

    Streamlit reads a component's asset folder from the ``pyproject.toml`` of an installed package;
    this app runs from its checkout, so it registers the two folders itself, through Streamlit's
    internal component registry (tests/test_streamlit_internals.py fails loudly if that API changes).
    Returns False where that is not possible; the charts are then drawn by ``st.plotly_chart``."""
    from streamlit.components.v2.manifest_scanner import ComponentConfig, ComponentManifest
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return False
    registry = Runtime.instance().bidi_component_registry
    if registry.get_component_path(NAME) is None:
        js = plotlyjs.bundle_dir()  # plotly.min.js: the partial bundle where setup fetched it, else the full one
        for folder, comp, asset_dir in ((ASSETS.parent, "plotly_live", ASSETS.name), (js.parent, "plotlyjs", js.name)):
            registry.register_from_manifest(
                ComponentManifest(name="dgm", version=dgm.__version__,
                                  components=[ComponentConfig(name=comp, asset_dir=asset_dir)]), folder)
    return registry.get_component_path(NAME) is not None


_component = None
_unavailable = False  # the assets could not be registered: charts fall back to st.plotly_chart


def _get_component():
    global _component, _unavailable
    if _unavailable:
        return None
    try:
        if not _register_assets():
            raise RuntimeError("no Streamlit runtime")
        if _component is None:
            _component = st.components.v2.component(NAME, js="plotly_live.js", isolate_styles=False,
                                                    css=f".{CLASS} {{ width: 100%; }}")
    except Exception:  # noqa: BLE001 - Streamlit changed: plain charts still work
        log.warning("could not register the live chart's assets; charts are redrawn from scratch", exc_info=True)
        _unavailable = True
        return None
    return _component


def chart(fig: go.Figure | str, key: str) -> None:
    """Show ``fig`` (a figure or its plotly JSON), updating the chart with key ``key`` in place."""
    spec = fig if isinstance(fig, str) else fig.to_json()
    component = _get_component()
    if component is None:
        st.plotly_chart(go.Figure(json.loads(spec)), key=key, config={"displaylogo": False}, theme=None)
    else:
        component(key=key, data={"spec": spec}, width="stretch")
