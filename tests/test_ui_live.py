"""The live pages' drawing helpers: lazy figure sets and figures throttled while a run plays."""

import plotly.graph_objects as go

from dgm import viz


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


def test_throttled_reuses_a_value_only_while_the_same_run_plays(monkeypatch):
    import types

    from streamlit.testing.v1 import AppTest

    from dgm.ui import common

    clock = [100.0]
    monkeypatch.setattr(common, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))

    def script():
        import streamlit as st

        from dgm.ui import common

        calls = st.session_state.setdefault("calls", [0])
        run = st.session_state.get("run")

        def build():
            calls[0] += 1
            return calls[0]

        with common.playing(run):
            st.write(f"value {common.throttled('k', 1.0, build)}")

    at = AppTest.from_function(script).run()
    assert at.markdown[0].value == "value 1"
    at.run()
    assert at.markdown[0].value == "value 2"  # not playing: always rebuilt
    at.session_state["run"] = "r1"
    at.run()
    at.run()
    assert at.markdown[0].value == "value 3"  # playing: the value of 3 is reused within a second
    clock[0] += 1.5
    at.run()
    assert at.markdown[0].value == "value 4"  # a second later: rebuilt
    at.session_state["run"] = "r2"
    at.run()
    assert at.markdown[0].value == "value 5"  # another run: rebuilt


def test_charts_fall_back_to_st_plotly_chart_when_plotly_js_cannot_be_served(monkeypatch):
    from conftest import charts, open_page
    from dgm.ui import plotly_live

    def read_only():
        raise PermissionError("read-only checkout")

    monkeypatch.setattr(plotly_live, "_component", None)
    monkeypatch.setattr(plotly_live, "_unavailable", False)
    monkeypatch.setattr(plotly_live, "ensure_plotly_js", read_only)
    at = open_page("pages/demo.py")
    assert not at.exception and not charts(at)
    assert len(at.get("plotly_chart")) == 2  # the fit and the loss curve, drawn the plain way


def test_a_playing_page_sends_an_unchanged_chart_by_its_key_only():
    """While a run plays, a chart whose figure is the one already sent goes to the browser as its key
    (the browser keeps the figure); a new figure, or any frame while paused, goes whole."""
    import json

    from streamlit.testing.v1 import AppTest

    def script():
        import plotly.graph_objects as go
        import streamlit as st

        from dgm.ui import plotly_live

        specs = st.session_state.setdefault("specs", {})
        name = st.session_state.get("figure", "a")
        spec = specs.setdefault(name, go.Figure(layout={"title": {"text": name}}).to_json())
        plotly_live.chart(spec, "fig", again=st.session_state.get("playing", False))

    def sent(at):
        (e,) = [e for e in at.get("bidi_component") if e.proto.component_name == "dgm.plotly_live"]
        data = json.loads(e.proto.json)
        assert data["key"] == "fig"
        return json.loads(data["spec"])["layout"]["title"]["text"] if "spec" in data else None

    at = AppTest.from_function(script).run()
    assert sent(at) == "a"
    at.run()
    assert sent(at) == "a"  # paused: always the whole figure
    at.session_state["playing"] = True
    at.run()
    assert sent(at) is None  # playing, the same figure: its key only
    at.session_state["figure"] = "b"
    at.run()
    assert sent(at) == "b"  # a new figure
    at.run()
    assert sent(at) is None
    at.session_state["figure"] = "a"
    at.run()
    assert sent(at) == "a"  # the browser holds only the last figure of each chart
