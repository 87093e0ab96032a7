"""Widgets generated from a config's knobs, bound to URL parameters, plus lesson presets.

Every knob becomes a sidebar widget whose key is the knob's name, bound to the URL parameter of
the same name (``bind="query-params"``), so the address bar always holds a link to the current
experiment. Before the widgets read the URL, ``sanitize`` parses each parameter with the knob's own
rules: a bad value is dropped and an out-of-range one clamped, each with a visible note (shown as
plain text: it quotes the link). The controls beside a page's figures ("<experiment>.<name>", e.g.
``gan.mode``) are checked too, by the test their module registers with ``view_param``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import streamlit as st

from dgm.core import config as cfglib
from dgm.core.config import Knob
from dgm.core.registry import Experiment
from dgm.core.userdata import CUSTOM
from dgm.ui import common, persist
from dgm.ui.pages import ensure_app

PRESET = "preset"  # URL parameter and widget key of the lesson selector
STEPS = "steps"  # URL parameter for deterministic replay
GLOBAL_PARAMS = {common.SEED, common.DEVICE, common.PRESENTER, PRESET, STEPS, persist.PARAM}
#: the URL parameters of the controls beside a page's figures, each with the test of a raw value its widget
#: accepts; "{exp}" in a name stands for the page's experiment (a ui module registers its own)
VIEW_PARAMS: dict[str, Callable[[str], bool]] = {}


def view_param(name: str, accepts: Callable[[str], bool]) -> None:
    """Register a view control's URL parameter and the test of the raw values its widget accepts."""
    VIEW_PARAMS[name] = accepts


def is_bool(raw: str) -> bool:
    """A toggle's value in a link."""
    return raw in ("true", "false")


def _check_view_params(exp: Experiment, notes: list[str], fix: dict[str, str | None]) -> None:
    qp = st.query_params
    mine = f"{exp.name}."  # another page's controls are unknown here
    tests = {n: test for name, test in VIEW_PARAMS.items() if (n := name.format(exp=exp.name)).startswith(mine)}
    for name in [n for n in qp.keys() if "." in n]:
        test = tests.get(name)
        if test is None:
            notes.append(f"unknown setting {cfglib.shown(name)} for this page; ignored")
            fix[name] = None
        elif not test(qp[name]):
            notes.append(f"{name}={cfglib.shown(qp[name])} is not a value of that control; ignored")
            fix[name] = None


def log_options(k: Knob, extra: tuple = ()) -> list:
    """1-2-5 steps between the knob's limits, plus its default and ``extra`` values (the lessons' values of the
    knob, which a lesson must be able to set), for log-scaled knobs."""
    lo, hi = float(k.lo), float(k.hi)
    opts = {float(f"{float(v):.6g}") for v in extra if lo * 0.9999 <= float(v) <= hi * 1.0001}
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo * 0.9999 <= v <= hi * 1.0001:
                opts.add(float(f"{v:.6g}"))
        e += 1
    opts.add(k.default)
    vals = sorted(opts)
    return [k.type(v) for v in vals]


def lesson_values(exp: Experiment, k: Knob) -> tuple:
    """The values the page's lessons give knob ``k``."""
    return tuple(p[k.name] for p in (exp.presets or {}).values() if k.name in p)


def _snap(k: Knob, v: Any, extra: tuple = ()) -> Any:
    if k.log and k.type in (int, float):
        opts = log_options(k, extra)
        return min(opts, key=lambda o: abs(math.log(o) - math.log(max(v, 1e-300))) if o > 0 and v > 0 else abs(o - v))
    return v


def sanitize(exp: Experiment) -> None:
    """Check the URL parameters against the page's knobs; fix or drop bad ones with a note."""
    kmap = cfglib.knob_map(exp.config)
    qp = st.query_params
    notes: list[str] = []
    fix: dict[str, str | None] = {}
    if PRESET in qp and qp[PRESET] not in (exp.presets or {}):
        notes.append(f"there is no lesson called {cfglib.shown(qp[PRESET])} on this page")
        fix[PRESET] = None
    common.check_run_param(STEPS, "replay", notes, fix)
    if persist.PARAM in qp and not persist.valid_id(qp[persist.PARAM]):
        notes.append(f"{persist.PARAM}={cfglib.shown(qp[persist.PARAM])} names no run; a new run starts")
        fix[persist.PARAM] = None
    raw = {name: qp[name] for name in qp.keys() if name not in GLOBAL_PARAMS and "." not in name}
    _own_data_from_link(kmap, raw, notes, fix)
    values, problems = cfglib.check(exp.config, raw)
    for name, r in raw.items():
        if name not in values:  # unknown, or not a usable value
            k = kmap.get(name)
            notes.append(f"{problems[name]}; ignored" if k is None else f"{problems[name]}; using {k.default!r}")
            fix[name] = None
            continue
        k = kmap[name]
        c = _snap(k, values[name], lesson_values(exp, k))
        if name in problems:
            notes.append(f"{problems[name]}; set to {c}")
        if _fmt(k, c) != r:
            fix[name] = _fmt(k, c)
    _check_view_params(exp, notes, fix)
    common.fix_url(fix)
    common.add_notes(notes)


def _own_data_from_link(kmap: dict[str, Knob], raw: dict[str, str], notes: list[str], fix: dict) -> None:
    """A link's ``data=custom:<digest>`` (a shared link to someone's own data): that data set becomes the
    session's, and the knob reads "custom"; a data set this server does not keep gets a note."""
    k, value = kmap.get("data"), raw.get("data", "")
    if k is None or CUSTOM not in (k.choices or ()) or not value.startswith(CUSTOM + ":"):
        return
    from dgm.ui import userdata

    note = userdata.from_link(value)
    if note is None:
        raw["data"] = fix["data"] = CUSTOM
    else:
        notes.append(f"{note}; using {k.default!r}")
        del raw["data"]
        fix["data"] = None


def sanitize_page_without_knobs() -> None:
    """A page without knobs (the home page): the link's parameters it does not know are dropped with a
    note, as on every other page."""
    qp = st.query_params
    unknown = [n for n in qp.keys() if n not in (common.SEED, common.DEVICE, common.PRESENTER)]
    common.add_notes([f"unknown setting {cfglib.shown(n)} for this page; ignored" for n in unknown])
    common.fix_url({n: None for n in unknown})


def _fmt(k: Knob, v: Any) -> str:
    """The knob's value as its widget writes it in the URL (select sliders use their labels)."""
    if k.type is bool:
        return "true" if v else "false"
    if k.type is float and (k.log or k.choices):
        return f"{v:g}"
    return str(v)


def _apply_preset(exp: Experiment) -> None:
    """on_change of the lesson selector: set every knob of the chosen preset."""
    name = st.session_state.get(PRESET)
    values = (exp.presets or {}).get(name)
    if not values:
        return
    for k in cfglib.knobs(exp.config):
        st.session_state[k.name] = values.get(k.name, k.default)


def _seed_preset_from_url(exp: Experiment) -> None:
    """A link with ?preset=NAME: the preset's values fill the knobs the link does not set."""
    name = st.query_params.get(PRESET)
    flag = f"_preset_seeded.{exp.name}"
    if not name or st.session_state.get(flag) == name:
        return
    st.session_state[flag] = name
    kmap = cfglib.knob_map(exp.config)
    common.fix_url({k: _fmt(kmap[k], v) for k, v in exp.presets[name].items()
                    if k not in st.query_params and k not in st.session_state})


def _recall_lesson(exp: Experiment) -> None:
    """Back on a page from another one (a lesson that compares with another page's run asks to play that one
    first), the lesson open here before is open again, while the knobs are still the lesson's: the sidebar's
    links carry no ``preset``. A lesson cleared on its own page stays cleared."""
    memory, here = f"_lesson.{exp.name}", st.session_state.get("_lesson_page")
    st.session_state["_lesson_page"] = exp.name
    name = st.session_state.get(PRESET) or st.query_params.get(PRESET)  # (the link's, before the widget's first run)
    if name in exp.presets:
        st.session_state[memory] = name
        return
    if here == exp.name:  # cleared here
        st.session_state.pop(memory, None)
        return
    name = st.session_state.get(memory)
    if name not in exp.presets:
        return
    lesson = cfglib.to_dict(exp.config(**exp.presets[name]))
    if all(st.session_state.get(k, v) == v for k, v in lesson.items()):
        st.session_state[PRESET] = name


def widget(k: Knob, *, disabled: bool = False, extra: tuple = ()) -> Any:
    """The widget for one knob, keyed and URL-bound by the knob's name; ``extra``: values a log-scaled knob's
    slider must offer besides its 1-2-5 steps (the lessons' values)."""
    kw: dict[str, Any] = dict(key=k.name, help=k.help, bind="query-params", disabled=disabled)
    preset = k.name in st.session_state  # set by a preset or by sanitize: no default as well
    label = k.label[:1].upper() + k.label[1:]
    if k.type is bool:
        return st.toggle(label, **kw) if preset else st.toggle(label, value=k.default, **kw)
    if k.type is str:
        opts = list(k.choices)
        return st.selectbox(label, opts, **kw) if preset else st.selectbox(label, opts, index=opts.index(k.default), **kw)
    if k.choices or k.log:
        opts = list(k.choices) if k.choices else log_options(k, extra)
        fmt = functools.partial(_fmt, k)
        if not preset:
            kw["value"] = k.default
        return st.select_slider(label, options=opts, format_func=fmt, **kw)
    step = k.step if k.step is not None else (1 if k.type is int else (k.hi - k.lo) / 100)
    if not preset:
        kw["value"] = k.default
    return st.slider(label, min_value=k.type(k.lo), max_value=k.type(k.hi), step=k.type(step), **kw)


def config_sidebar(exp: Experiment) -> Any:
    """Render the lesson selector and every knob in the sidebar; return the config they define.

    Knobs are grouped by ``Knob.group`` into expanders; a knob whose ``show(cfg)`` is False for the
    settings above it is not shown and keeps its default."""
    ensure_app()
    sanitize(exp)
    if exp.presets:
        _seed_preset_from_url(exp)
        _recall_lesson(exp)
    values: dict[str, Any] = {}
    with st.sidebar:
        if exp.presets:
            names = list(exp.presets)
            st.selectbox("Lesson preset", names, index=None, placeholder="Choose a lesson…", key=PRESET,
                         bind="query-params", on_change=_apply_preset, args=(exp,),
                         help="Sets every knob to show one phenomenon.")
        groups: dict[str, list[Knob]] = {}
        for k in cfglib.knobs(exp.config):
            groups.setdefault(k.group, []).append(k)
        for i, (group, ks) in enumerate(groups.items()):
            partial = dataclasses.replace(exp.config(), **values)
            if all(k.show is not None and not k.show(partial) for k in ks):  # nothing to show: no empty box
                values.update({k.name: k.default for k in ks})
                continue
            with st.expander(group, expanded=i < 2):
                for k in ks:
                    partial = dataclasses.replace(exp.config(), **values)
                    if k.show is not None and not k.show(partial):
                        values[k.name] = k.default
                        continue
                    values[k.name] = widget(k, extra=lesson_values(exp, k))
                    if values[k.name] == CUSTOM:  # the session's own data: upload or draw it here
                        from dgm.ui import userdata

                        values[k.name] = userdata.panel() or k.default
    return exp.config(**values)

