"""The live pages' drawing helpers: lazy figure sets, and charts where plotly.js cannot be served."""

import plotly.graph_objects as go

from dgm.core import viz


def test_figures_are_built_once_and_only_when_used():
    built = []

    def make(name):
        def build():
            built.append(name)
            return go.Figure(layout={"title": {"text": name}})
        return build

    figs = viz.Figures({"a": make("a"), "b": make("b")})
    assert "a" in figs and "c" not in figs and len(figs) == 2
    assert built == []  # membership and length build nothing
    assert figs["a"] is figs["a"]
    assert built == ["a"]
    assert [f.layout.title.text for f in figs.values()] == ["a", "b"]  # iterating builds the rest
    assert built == ["a", "b"]


def test_charts_fall_back_to_st_plotly_chart_when_the_assets_cannot_be_served(monkeypatch):
    from conftest import charts, open_page
    from dgm.ui import plotly_live

    def unavailable():
        raise RuntimeError("Streamlit changed")

    monkeypatch.setattr(plotly_live, "_component", None)
    monkeypatch.setattr(plotly_live, "_unavailable", False)
    monkeypatch.setattr(plotly_live, "_register_assets", unavailable)
    at = open_page("pages/demo.py")
    assert not at.exception and not charts(at)
    assert len(at.get("plotly_chart")) == 2  # the fit and the loss curve, drawn the plain way


def test_a_view_fills_the_containers_its_layout_placed():
    """view.loop calls layout, then main and panels, each under the run's lock; what main and panels
    write lands in the containers layout placed (here in reverse order of writing), after the status
    line."""
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from dgm.core.registry import get
        from dgm.ui import session, view

        calls = st.session_state.setdefault("calls", [])

        class Probe(view.View):
            def layout(self, trainer):
                calls.append("layout")
                self.first, self.second = st.container(), st.container()
                st.markdown("after the view")

            def main(self, trainer):
                calls.append(("main", session.state(exp).lock._is_owned()))
                with self.second:
                    st.markdown("main view")

            def panels(self, trainer):
                calls.append(("panels", session.state(exp).lock._is_owned()))

                def show():
                    with self.first:
                        st.markdown(f"panels at {trainer.iteration}")
                return show

        exp = get("demo")
        view.loop(exp, exp.config(), Probe())

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    assert at.session_state["calls"] == ["layout", ("main", True), ("panels", True)]
    texts = [m.value for m in at.markdown]
    assert texts.index("panels at 0") < texts.index("main view") < texts.index("after the view"), texts
    status = [c.value for c in at.caption if "Iteration" in c.value]
    assert status and "Iteration 0" in status[0]


def test_a_held_panel_is_rebuilt_at_most_every_few_seconds_while_playing_and_always_in_a_full_run(monkeypatch):
    """View.held: in the panels' timed redraws (live) the figure is built again only once its seconds have
    passed, and in between the chart is sent the very figure it shows (the browser skips it); a full run of
    the page (not live: a click, a knob) builds it anew at once."""
    from types import SimpleNamespace

    from dgm.ui import plotly_live, view

    clock, sent, built = [100.0], [], []
    monkeypatch.setattr(view.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(plotly_live, "chart", lambda spec, key: sent.append((key, spec)))

    def fig():
        built.append(clock[0])
        return go.Figure(go.Scatter(x=[0, 1], y=[len(built), 0]))

    v = view.View()
    v.state = SimpleNamespace(view_state={})

    def redraw(live: bool, at: float) -> str:
        v.timed, clock[0] = live, at
        v.held(fig, "p.layers", 3.0)
        assert sent[-1][0] == "p.layers"
        return sent[-1][1]

    first = redraw(False, 100.0)  # the full run draws it
    assert redraw(True, 101.0) == redraw(True, 102.9) == first and built == [100.0]  # held: the same figure
    second = redraw(True, 103.0)  # its seconds have passed: built again
    assert second != first and built == [100.0, 103.0]
    assert redraw(False, 103.5) != second and built == [100.0, 103.0, 103.5]  # a full run never holds
    assert redraw(True, 104.0) == sent[-2][1] and len(built) == 3
    v.state.view_state.clear()  # a Reset empties the view's state: nothing is held
    redraw(True, 104.5)
    assert len(built) == 4
