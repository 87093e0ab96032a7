"""The Studies page's parts: a study's form, its run in the background, and its results (a table, altair
charts of a metric against the settings with intervals and every seed, and a replay link for every run).

A study started here runs in a thread of the server, in the server's process (or on the Ray cluster the
server is configured for with RAY_ADDRESS), into a folder of its own under the system's temporary folder;
the page reads its store, so it stays responsive and shows the runs as they are stored.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import altair as alt
import pandas as pd
import streamlit as st

from dgm.core import config as cfglib
from dgm.core import registry
from dgm.studies import engine, summary
from dgm.studies.spec import StudyError, StudySpec, key
from dgm.studies.store import Store
from dgm.ui import common, shutdown
from dgm.ui.pages import all_pages

log = logging.getLogger(__name__)
EXPERIMENTS = ("gan", "flow", "vae", "diffusion", "demo")  # experiments with a page and a quick default run
MAX_SEEDS, MAX_STEPS, MAX_SETTINGS = 16, 5000, 12  # what a study started here may ask of the server
JOB = "studies.job"
NONE = "(none)"
#: the knob a study varies first by default, per experiment
FIRST_KNOB = {"gan": "loss", "flow": "flow", "vae": "beta", "diffusion": "objective", "demo": "lr"}


@dataclass
class Job:
    spec: StudySpec
    out: str
    progress: engine.Progress | None = None
    error: str | None = None
    done: bool = False
    stop: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)


def _work(job: Job) -> None:
    def seen(p: engine.Progress) -> None:
        job.progress = copy.copy(p)

    executor = "ray" if engine.ray_address(None) else "inline"  # a cluster the server is configured for
    try:
        engine.run_study(job.spec, job.out, executor=executor, on_progress=seen,
                         should_stop=lambda: job.stop or shutdown.stopping())
    except StudyError as e:
        job.error = str(e)
    except Exception:  # a failure of ours: a message on the page, the traceback in the server's log
        log.exception("study failed")
        job.error = "the study failed (the server's log says why); the runs stored so far are shown"
    finally:
        job.done = True


def start(spec: StudySpec) -> Job:
    job = Job(spec, tempfile.mkdtemp(prefix="dgm-study-"))
    job.thread = threading.Thread(target=_work, args=(job,), name="dgm-study", daemon=True)
    job.thread.start()
    return job


def experiments() -> list[str]:
    return [e for e in EXPERIMENTS if e in registry.names()]


def _default_values(k: cfglib.Knob) -> str:
    if k.type is bool:
        return "false,true"
    if k.choices:
        return ",".join(map(str, k.choices[:2]))
    v = k.default
    other = v * 2 if k.hi is None or v * 2 <= k.hi else v / 2
    return ",".join(f"{x:g}" for x in (v, k.type(other)))


def form() -> StudySpec | None:
    """The study's settings; returns the spec when Run is pressed and the spec holds, else None."""
    names = experiments()
    exp_name = st.selectbox("Experiment", names, key="studies.exp", help="the page whose model the study trains")
    exp = registry.get(exp_name)
    knobs = [k for k in cfglib.knobs(exp.config) if k.show is None or k.show(exp.config())]
    kn = [k.name for k in knobs]
    kmap = {k.name: k for k in knobs}
    grid: dict[str, str] = {}
    cols = st.columns([1, 2, 1, 2])
    first = cols[0].selectbox("Vary", kn, index=kn.index(FIRST_KNOB.get(exp_name, kn[0])) if FIRST_KNOB.get(exp_name)
                              in kn else 0, key=f"studies.knob1.{exp_name}", help="the first knob of the grid")
    grid[first] = cols[1].text_input("its values (comma-separated)", _default_values(kmap[first]),
                                     key=f"studies.values1.{exp_name}.{first}")
    second = cols[2].selectbox("and", [NONE, *[n for n in kn if n != first]], key=f"studies.knob2.{exp_name}",
                               help="a second knob: every combination of the two runs")
    if second != NONE:
        grid[second] = cols[3].text_input("its values", _default_values(kmap[second]),
                                          key=f"studies.values2.{exp_name}.{second}")
    a, b, c = st.columns([1, 1, 2])
    seeds = a.number_input("Seeds per setting", 1, MAX_SEEDS, 3, key="studies.seeds",
                           help="from the sidebar's seed on: seed, seed + 1, …")
    steps = b.number_input("Steps per run", 10, MAX_STEPS, 300, step=10, key="studies.steps")
    c.caption("Every other knob keeps its page default. The runs train here, in the background, one setting's "
              "seeds at a time as one batch where the model can (the GAN).")
    if not st.button("Run the study", type="primary", icon=":material/play_arrow:", key="studies.run"):
        return None
    try:
        raw = {k: [v for v in vals.split(",") if v.strip()] for k, vals in grid.items()}
        spec = StudySpec.make(exp_name, raw, int(seeds), int(steps), seed0=common.seed())
    except StudyError as e:
        st.error(common.plain(e), icon=":material/error:")
        return None
    if spec.n_settings > MAX_SETTINGS:
        st.error(f"{spec.n_settings} settings: at most {MAX_SETTINGS} here (the command line takes more: "
                 "python -m dgm study).", icon=":material/error:")
        return None
    return spec


def progress(job: Job) -> None:
    p = job.progress
    total = job.spec.n_settings * job.spec.seeds
    if job.error:
        st.error(common.plain(job.error), icon=":material/error:")
    if p is None:
        st.progress(0.0, text=f"Starting {total} runs…")
        return
    frac = p.steps_done / p.steps_total if p.steps_total else 1.0
    state = "stopped" if job.done and job.stop else ("done" if job.done else "running")
    st.progress(min(frac, 1.0), text=f"{state}: {p.line()}")


# -- results -----------------------------------------------------------------------------------------------
def replay_link(experiment: str, config: dict[str, Any], seed: int, steps: int) -> str | None:
    """The run's page with its settings and seed, trained for its steps (a replay link), or None (no page)."""
    info = next((p for p in all_pages() if p.experiment == experiment), None)
    if info is None:
        return None
    exp = registry.get(experiment)
    params = {}
    for k in cfglib.knobs(exp.config):
        v = config.get(k.name, k.default)
        if v != k.default:
            params[k.name] = ("true" if v else "false") if k.type is bool else (f"{v:g}" if k.type is float else str(v))
    params["seed"] = str(seed)
    if steps <= cfglib.REPLAY_MAX:
        params["steps"] = str(steps)
    return f"{info.url}?{urlencode(params)}"


def frames(job: Job, runs: list[dict[str, Any]], metric: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    order = [summary.setting_label(s) for s in job.spec.settings()]
    rows = summary.summarize(runs, [metric], order=[key(s) for s in job.spec.settings()])
    sdf = pd.DataFrame([{"setting": summary.setting_label(r["values"]), "median": r[metric]["median"],
                         "lo": r[metric]["lo"], "hi": r[metric]["hi"], "runs": r[metric]["n"]} for r in rows])
    rdf = pd.DataFrame([{"setting": summary.setting_label(r["values"]), "seed": r["seed"],
                         "value": r["final"].get(metric), "status": r["status"],
                         "replay": replay_link(job.spec.experiment, r["config"], r["seed"], r["steps"])}
                        for r in runs])
    return sdf, rdf, order


def chart(sdf: pd.DataFrame, rdf: pd.DataFrame, order: list[str], metric: str) -> alt.LayerChart:
    """The metric against the settings: each seed's run (a point; a click opens its replay), the median (a
    black tick) and its bootstrap interval (a line)."""
    x = alt.X("setting:N", sort=order, title=None, axis=alt.Axis(labelAngle=0, labelLimit=200))
    rule = alt.Chart(sdf).mark_rule(strokeWidth=3, color="#333").encode(
        x=x, y=alt.Y("lo:Q", title=metric), y2="hi:Q",
        tooltip=["setting", alt.Tooltip("median:Q", format=".4g"), alt.Tooltip("lo:Q", format=".4g"),
                 alt.Tooltip("hi:Q", format=".4g")])
    med = alt.Chart(sdf).mark_tick(thickness=3, size=30, color="black").encode(x=x, y="median:Q")
    pts = alt.Chart(rdf.dropna(subset=["value"])).mark_circle(size=70, opacity=0.75, color="#e8710a").encode(
        x=x, xOffset=alt.XOffset("seed:N"), y="value:Q", href="replay:N",
        tooltip=["setting", "seed", alt.Tooltip("value:Q", format=".4g"), "status"])
    return (pts + rule + med).properties(height=320, title=f"{metric}: every seed, the median and its 95% interval")


def results(job: Job) -> None:
    store = Store.read(job.out)
    runs = store.runs() if store else []
    if store:
        store.close()
    if not runs:
        return
    metrics = summary.metrics_of(runs)
    if not metrics:
        return
    rows = summary.summarize(runs, metrics, order=[key(s) for s in job.spec.settings()])
    st.subheader("Summary")
    st.dataframe(pd.DataFrame([{"setting": summary.setting_label(r["values"]), "runs": r["runs"],
                                **{f"{m} median [95% CI]": f"{r[m]['median']:.4g} [{r[m]['lo']:.4g}, {r[m]['hi']:.4g}]"
                                   for m in metrics}} for r in rows]), hide_index=True, width="stretch")
    metric = st.selectbox("Metric", metrics, key="studies.metric")
    sdf, rdf, order = frames(job, runs, metric)
    st.altair_chart(chart(sdf, rdf, order, metric), width="stretch")
    st.caption("Orange: each seed's run at its last step (click one to replay it on its page); black: the median over "
               "the seeds and its 95% percentile-bootstrap interval.")
    st.dataframe(rdf, hide_index=True, width="stretch",
                 column_config={"replay": st.column_config.LinkColumn("replay", display_text="open the run")})


def page() -> None:
    """The whole page below its header."""
    spec = form()
    job: Job | None = st.session_state.get(JOB)
    if spec is not None:
        if job is not None and not job.done:
            job.stop = True
        job = st.session_state[JOB] = start(spec)
    if job is None:
        st.info("Choose the settings and press Run: every combination trains on every seed, and the table and "
                "charts show the spread over the seeds.", icon=":material/info:")
        return

    def live() -> None:
        progress(job)
        if not job.done and st.button("Stop", icon=":material/stop:", key="studies.stop"):
            job.stop = True
        results(job)
        if job.done and st.session_state.get("studies.shown") is not job:
            st.session_state["studies.shown"] = job
            st.rerun()  # the whole page, once: the fragment stops refreshing

    common.timed_fragment(live, 1.0 if not job.done else None)()
    st.caption(f"The runs are stored in {common.plain(job.out)} (study.sqlite), on this server.")
