"""The "your own data" panel: upload a CSV or draw points; bad input never loses the data in use.

The active data set of a session is kept under ``_custom.*`` keys in ``st.session_state``, the data set
itself included: the run-time registry keeps a data set for as long as someone holds it, so no other
session's uploads can evict this one (``dgm.core.data``). A bad upload shows a message naming the problem
and leaves the previous data in place. File names and cell values are shown as text (``common.plain``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import dgm.core.data
from dgm.core import userdata as U
from dgm.core import viz
from dgm.ui import persist
from dgm.ui.common import plain

NAME, SCALING, ERROR, DRAWING = "_custom.name", "_custom.scaling", "_custom.error", "_custom.drawing"
DIST = "_custom.dist"  # the data set itself: holding it keeps it registered
ORIGIN = "_custom.origin"  # where this session's data came from (the same data may come from other sessions)
UPLOAD, BRUSH, NOISE, PER_CLICK = "custom_upload", "custom_brush", "custom_noise", "custom_per_click"
TOOL, RESCALE = "custom_tool", "custom_rescale"
DRAW_BOX = (-4.0, 4.0, -4.0, 4.0)
_GRID = np.stack(np.meshgrid(np.linspace(-3.9, 3.9, 40), np.linspace(-3.9, 3.9, 40)), -1).reshape(-1, 2)


def active() -> str | None:
    """The registered name of the session's data, if it has any."""
    name, dist = st.session_state.get(NAME), st.session_state.get(DIST)
    if not name:
        return None
    if dgm.core.data.lookup(name) is None:
        if dist is None or dist.name != name:  # not held (cannot happen while the session holds it)
            st.session_state[NAME] = None
            st.session_state[ERROR] = "Your data is no longer on the server; upload it or draw it again."
            return None
        dgm.core.data.register(dist)
    return name


def _use(points: np.ndarray, description: str, rescale: bool = True) -> None:
    try:
        dist, scaling = U.make_distribution(points, description, rescale=rescale)
    except U.UserDataError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state[NAME], st.session_state[SCALING], st.session_state[ERROR] = dist.name, scaling, None
    st.session_state[DIST], st.session_state[ORIGIN] = dist, description
    persist.save_data(dist.name, dist.points, description, dataclasses.asdict(scaling))  # for links that name it


def from_link(name: str) -> str | None:
    """Make the data set a link names (``data=custom:<digest>``) this session's data: one in use on this server,
    or one it keeps (``persist.save_data``). Returns None, or a note saying why the link's data is not here."""
    if st.session_state.get(NAME) == name and active() == name:
        return None
    kept = persist.load_data(name)
    if kept is None:
        return (f"data={name} is a data set uploaded or drawn on another server, or too long ago (this "
                f"one keeps them for {persist.MAX_AGE / 86400:.0f} days); upload it again")
    dist = U.rebuild(name, kept["points"], kept["description"])
    sc = kept["scaling"]
    scaling = U.Scaling(center=tuple(sc["center"]), scale=float(sc["scale"]), n_points=int(sc["n_points"]),
                        n_used=int(sc.get("n_used", 0)))
    st.session_state[NAME], st.session_state[SCALING], st.session_state[ERROR] = dist.name, scaling, None
    st.session_state[DIST], st.session_state[ORIGIN] = dist, f"from a link: {kept['description']}"
    return None


def _on_upload() -> None:
    f = st.session_state.get(UPLOAD)
    if f is None:
        return
    if f.size > U.MAX_BYTES:
        st.session_state[ERROR] = f"{f.name}: the file is {f.size / 1e6:.1f} MB; the limit is {U.MAX_BYTES / 1e6:.0f} MB."
        return
    try:
        pts = U.parse_csv(f.getvalue())
    except U.UserDataError as e:
        st.session_state[ERROR] = f"{f.name}: {e}"
        return
    _use(pts, f"uploaded {f.name}")
    if st.session_state.get(ERROR):
        st.session_state[ERROR] = f"{f.name}: {st.session_state[ERROR]}"


def _selection_centres(event) -> np.ndarray:
    idx = [p.get("point_index") for p in (event or {}).get("selection", {}).get("points", [])]
    idx = [i for i in idx if i is not None and 0 <= i < len(_GRID)]
    return _GRID[idx]


def _add_brush(centres: np.ndarray) -> None:
    if not len(centres):
        return
    width = float(st.session_state.get(BRUSH, 0.3))
    noise = float(st.session_state.get(NOISE, 0.05))
    per = int(st.session_state.get(PER_CLICK, 20))
    seed = len(st.session_state.get(DRAWING, []))
    new = U.spray(centres, per, width, noise, seed=seed)
    st.session_state[DRAWING] = list(st.session_state.get(DRAWING, [])) + new.tolist()


#: how a pick is made on the drawing canvas: the chart's drag mode. A click selects a spot only when dragging
#: does not select (Streamlit turns click selection off in lasso and box modes), so the user chooses the tool.
TOOLS = {"click a spot": False, "lasso": "lasso", "box": "select"}


def _drawing_figure(points: list, dragmode: str | bool = False) -> go.Figure:
    fig = viz.plane(DRAW_BOX, height=420)
    fig.add_trace(go.Scatter(x=_GRID[:, 0], y=_GRID[:, 1], mode="markers", name="canvas",
                             marker=dict(size=9, color="rgba(0,0,0,0.04)"), hoverinfo="none", showlegend=False))
    if points:
        viz.add_points(fig, np.asarray(points), name="your points", color=viz.PALETTE[1], size=4, opacity=0.7)
    fig.update_layout(dragmode=dragmode)
    return fig


@st.dialog("Draw your data", width="large")
def _draw_dialog() -> None:
    st.caption("Pick spots with a click, or brush over a region with the lasso or a box: points are sprayed around "
               "every spot you pick. Then press **Use this drawing**.")
    tool = st.radio("Pick with", list(TOOLS), horizontal=True, key=TOOL)
    a, b, c = st.columns(3)
    a.slider("Brush width", 0.05, 1.5, 0.3, 0.05, key=BRUSH)
    b.slider("Spray noise", 0.0, 0.5, 0.05, 0.01, key=NOISE)
    c.slider("Points per spot", 1, 100, 20, key=PER_CLICK)
    event = st.plotly_chart(_drawing_figure(st.session_state.get(DRAWING, []), TOOLS[tool]), on_select="rerun",
                            selection_mode=("points", "box", "lasso"), key="custom_canvas",
                            config={"displaylogo": False})
    centres = _selection_centres(event)
    mark = hash(centres.tobytes()) if len(centres) else None
    if mark is not None and mark != st.session_state.get("_custom.last_brush"):
        st.session_state["_custom.last_brush"] = mark  # each new selection sprays once
        _add_brush(centres)
        st.rerun(scope="fragment")
    points = st.session_state.get(DRAWING, [])
    x, y, z = st.columns(3)
    if x.button("Clear drawing"):
        st.session_state[DRAWING] = []
        st.rerun(scope="fragment")
    y.write(f"{len(points)} points")
    rescale = st.checkbox(f"Centre and rescale the drawing (standard deviation {U.TARGET_STD}, as uploads are)",
                          key=RESCALE, help="Off: the models see the points where you drew them.")
    if z.button("Use this drawing", disabled=not points):
        _use(np.asarray(points, dtype=np.float64).reshape(-1, 2), "your drawing", rescale=rescale)
        if st.session_state.get(ERROR) is None:
            st.rerun()
        st.error(plain(st.session_state[ERROR]))


def panel() -> str | None:
    """Render the upload/draw controls (in the current container); return the active data name."""
    st.file_uploader("Upload a CSV (two numeric columns)", type=["csv", "txt"], key=UPLOAD, on_change=_on_upload,
                     help=f"x and y per row, with or without a header; up to {U.MAX_ROWS:,} rows.")
    if st.button("Draw points…", width="stretch"):
        _draw_dialog()
    name = active()
    if st.session_state.get(ERROR):
        kept = " Your previous data is still in use." if name else ""
        st.error(plain(st.session_state[ERROR]) + kept, icon=":material/error:")
    if name:
        scaling = st.session_state.get(SCALING)
        origin = st.session_state.get(ORIGIN) or "your data"
        st.caption(f"**Using your data** ({plain(origin, 120)}): "
                   f"{plain(scaling.describe()) if scaling else ''} Its density is a kernel density estimate.")
    else:
        st.info("No data of your own yet: upload a CSV or draw points. Until then the page uses its default data.",
                icon=":material/upload_file:")
    return name
