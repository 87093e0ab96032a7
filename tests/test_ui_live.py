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
