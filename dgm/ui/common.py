"""Page setup and the sidebar every page shares: compute device, global seed, presenter mode."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Mapping

import plotly.graph_objects as go
import streamlit as st
from streamlit.errors import StreamlitAPIException

from dgm.core import config as cfglib
from dgm.core import device as devlib
from dgm.core import viz
from dgm.core.registry import Experiment
from dgm.ui import pages, plotly_live
from dgm.ui.pages import ensure_app

log = logging.getLogger(__name__)

SEED_MAX = cfglib.SEED_MAX
PLAIN_CHARS = 400  # user text shown on a page is cut to this many characters
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation mark: each may start markdown
_AUTOLINK = re.compile(r"(?i)([:@]|www(?=\.))")  # where GitHub markdown would start a link of bare text
WORD_JOINER = "\u2060"  # invisible; it breaks "https://", "www." and "a@b.c" for the autolinker


def plain(text: object, limit: int = PLAIN_CHARS) -> str:
    """Text that includes a user's words (a link's value, a file name, a file's metadata) as markdown that
    shows it literally: every punctuation mark escaped (no link, image, HTML, formula, colour or icon can
    start), an invisible word joiner after ":" and "@" and in "www." (Streamlit's markdown turns bare
    addresses into links, escaped or not), line breaks flattened, and cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[:limit] + "…"
    return _PUNCTUATION.sub(r"\\\1", _AUTOLINK.sub("\\1" + WORD_JOINER, s))

# widget keys of the shared sidebar (also their URL parameter names)
SEED, DEVICE, PRESENTER = "seed", "device", "presenter"


def fix_url(changes: dict[str, str | None]) -> None:
    """Rewrite URL parameters (None deletes one) before the widgets bound to them read the URL.

    A bound widget seeds itself from the URL as it was when the page loaded; so that it takes
    the corrected value instead, the load-time copy is refreshed from the corrected parameters."""
    if not changes:
        return
    qp = st.query_params
    for name, value in changes.items():
        try:
            if value is None:
                qp.pop(name, None)
            else:
                qp[name] = value
        except StreamlitAPIException:  # bound to a widget of an earlier run (back from another page): its own value
            log.warning("URL parameter %s is bound to a widget; left to it", name)
    from streamlit.runtime.state.session_state_proxy import get_session_state

    with get_session_state().query_params() as q:
        q.set_initial_query_params_from_current()


def check_run_param(name: str, setting: str, notes: list[str], fix: dict[str, str | None]) -> None:
    """A URL parameter that is a run setting (``config.RunSettings``: the seed, a replay's steps), checked
    as the command line checks it: clamped to its range, or dropped if it is not a whole number."""
    qp = st.query_params
    if name not in qp:
        return
    v, note = cfglib.run_setting(setting, qp[name])
    if v is None:
        notes.append(f"{note.replace(setting, name, 1)}; ignored")
        fix[name] = None
    elif note is not None:
        notes.append(f"{note.replace(setting, name, 1)}; set to {v}")
        fix[name] = str(v)
    elif str(v) != qp[name]:
        fix[name] = str(v)


def _sanitize_globals() -> list[str]:
    """Clamp or drop bad values of the shared URL parameters before their widgets read them."""
    notes: list[str] = []
    fix: dict[str, str | None] = {}
    qp = st.query_params
    check_run_param(SEED, "seed", notes, fix)
    if DEVICE in qp and qp[DEVICE] not in ("auto", "cpu"):
        notes.append(f"device={cfglib.shown(qp[DEVICE])} is not available here; using auto")
        fix[DEVICE] = None
    if PRESENTER in qp:  # a teacher may well type ?presenter=1: the usual spellings of on and off are taken
        on = pages.switch(qp[PRESENTER])
        if on is None:
            notes.append(f"presenter={cfglib.shown(qp[PRESENTER])} is not true or false; ignored")
        spelled = None if on is None else "true" if on else "false"  # the toggle's own spelling
        if spelled != qp[PRESENTER]:
            fix[PRESENTER] = spelled
    fix_url(fix)
    return notes


def sidebar() -> None:
    """The shared sidebar; called once per run by app.py, before the page."""
    add_notes(_sanitize_globals())
    with st.sidebar:
        st.number_input("Seed", min_value=0, max_value=SEED_MAX, value=0, step=1, key=SEED, bind="query-params",
                        help="A seed fixes a run: the same seed and settings give the same numbers and figures.")
        if devlib.cuda_available():
            st.radio("Compute device", ["auto", "cpu"], key=DEVICE, bind="query-params", horizontal=True,
                     help="auto uses the GPU; cpu forces the CPU (replay links always use the CPU).")
        st.caption(f"Computing on **{devlib.describe(devlib.resolve(device()))}**")
        st.toggle("Presenter mode", key=PRESENTER, bind="query-params",
                  help="Larger fonts and thicker lines, for a projector.")
    # live figures redraw several times a second: no fading of "stale" elements, no transitions; the figure
    # first: little room above the title, a compact title
    st.html("<style>[data-stale='true'] {opacity: 1 !important; transition: none !important;}"
            " *, *::before, *::after {animation-duration: 0s !important; transition-duration: 0s !important;}"
            " [data-testid=stMainBlockContainer] {padding-top: 3.5rem !important; padding-bottom: 2rem !important;}"
            " [data-testid=stMain] h1 {font-size: 1.9rem !important; padding: 0 0 0.2rem 0 !important;}"
            "</style>")
    # presenter mode's larger root font makes Streamlit's header (3.75rem) taller too: the first row starts under it
    # (the "About" box's top border was hidden under it)
    if presenter():  # larger text; the figure still first (the sidebar starts folded: app.py)
        st.html("<style>html, .stMarkdown p, .stMarkdown li {font-size: 1.2rem !important;}"
                " [data-testid=stMainBlockContainer] {padding-top: 3.9rem !important;"
                " padding-left: 2rem !important; padding-right: 2rem !important;}"
                " [data-testid=stMain] h1 {font-size: 1.7rem !important;}</style>")


def seed() -> int:
    return int(st.session_state.get(SEED, 0) or 0)


def device() -> str:
    return st.session_state.get(DEVICE, "auto") if devlib.cuda_available() else "cpu"


def presenter() -> bool:
    return bool(st.session_state.get(PRESENTER, False))


def add_notes(notes: list[str]) -> None:
    """Queue notes about adjusted link parameters; ``show_notes`` displays them once."""
    if notes:
        st.session_state.setdefault("_notes", []).extend(notes)


def show_notes() -> None:
    """The notes about the link's parameters, each shown as plain text (they quote the link's values)."""
    notes = st.session_state.pop("_notes", [])
    if notes:
        st.warning("Some settings in the link were adjusted:\n\n" + "\n".join(f"- {plain(n)}" for n in notes),
                   icon=":material/link:")


def header(title: str, intro: str) -> None:
    ensure_app()
    st.title(title)
    st.markdown(intro)
    show_notes()


def page_header(exp: Experiment) -> None:
    """The figure first: the page's title, then its introduction folded into "About" (with the open
    lesson's whole note, if any), the notes about its link, and one line that says what the open lesson
    shows and what to look at."""
    ensure_app()
    title, about = st.columns([1.5, 1], vertical_alignment="center")
    title.title(exp.text.title)
    les = lesson(exp)
    with about.expander("About this page" + (" and this lesson" if les is not None else "")):
        st.markdown(exp.text.intro)
        if les is not None:
            st.markdown(f"**Lesson: {les.name}.** {les.text}")
    show_notes()
    lesson_note(exp)


def lesson(exp: Experiment):
    """The lesson this page was opened on (its link's ``preset``, or the sidebar's choice), if any."""
    return exp.lesson(st.query_params.get("preset") or st.session_state.get("preset"))


def lesson_note(exp: Experiment) -> None:
    """The open lesson in one line: its name and the one thing to look at (its whole note is under
    "About")."""
    les = lesson(exp)
    if les is not None:
        st.info(f"**Lesson: {les.name}.** Look at: {les.look or les.blurb}", icon=":material/school:")


def theory(exp: Experiment) -> None:
    """The page's theory section, folded (``exp.text.theory``: markdown, and "$$" formulas)."""
    text = exp.text
    if text is None or not text.theory:
        return
    with st.expander(text.theory_title or "Theory"):
        for part in text.theory:
            if part.startswith("$$"):
                st.latex(part[2:])
            else:
                st.markdown(part)


#: while a run plays, a live.View's panels (curves, side panels) redraw this often (seconds); its main
#: view redraws every frame
PANELS_EVERY = 1.0


#: a chart's title is broken into lines longer than this many characters (normal, presenter mode): a third of
#: the page's width at 1280 px holds about that many
TITLE_CHARS = (34, 28)


_FRAGMENTS = itertools.count()  # makes each timed fragment's identity new (``timed_fragment``)


def timed_fragment(fn: Callable[[], None], run_every: float | None) -> Callable[[], None]:
    """``st.fragment(run_every=...)(fn)``, with an identity of its own in each full run of the page.

    Streamlit names a fragment by its function and place, so a page's timed fragment had the same id in every
    full run. A timer tick the browser sent just before a click could then run that fragment right after the
    click's full run, and a fragment run's start drops every message of that fragment id that the server has
    not sent yet (``AppSession._clear_queue``): the full run's own drawing of the fragment, and what it composed
    with (the status line, written into a slot outside it). The browser's page then lacked blocks that later
    messages addressed ("Cannot set a node at a delta path": a blank page, about one Pause in 15-30 on a
    2-core machine). With an id new in each full run, a stale tick names a fragment this run does not have, and
    Streamlit skips it (tests/test_browser.py::test_a_timer_tick_from_before_a_click_runs_nothing)."""
    fn.__qualname__ = f"{fn.__qualname__}.run{next(_FRAGMENTS)}"
    return st.fragment(run_every=run_every)(fn)


def styled(fig: go.Figure | Callable[[], go.Figure]) -> go.Figure:
    """A plotly figure (or the function that builds it) in the session's style: titles wrapped, fonts and
    legends scaled in presenter mode, tidy axes."""
    out = fig() if callable(fig) else fig
    if presenter():
        out = viz.wrap_title(viz.presenter(go.Figure(out)), TITLE_CHARS[1])
    else:
        out = viz.wrap_title(out, TITLE_CHARS[0])
    viz.legend_under_axis_title(out, only_below=True)  # after the title's wrapping and presenter's fonts
    viz.tidy_axes(out)
    return out


def plot(fig: go.Figure | Callable[[], go.Figure], key: str | None = None) -> None:
    """Show a plotly figure with the session's style (``styled``); ``fig`` may be a function that builds
    it. With a ``key`` the chart updates in place (``plotly_live``)."""
    out = styled(fig)
    if key is None:
        st.plotly_chart(out, config={"displaylogo": False}, theme=None)
    else:
        plotly_live.chart(out, key)


def plot_row(figs: Mapping[str, go.Figure], names: list[str], prefix: str) -> None:
    """Figures side by side in equal columns, keyed ``prefix.name`` (built only when drawn)."""
    for col, name in zip(st.columns(len(names)), names):
        with col:
            plot(lambda name=name: figs[name], key=f"{prefix}.{name}")
