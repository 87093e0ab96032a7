"""The few Streamlit internals the app relies on, where no documented API does the job. Each test
names the place that uses it; when a Streamlit upgrade changes one of them, the test fails here, loudly,
rather than the feature degrading in silence."""

from __future__ import annotations

from pathlib import Path


def test_component_assets_are_registered_and_served_from_where_they_lie():
    """dgm/ui/plotly_live.py registers two asset folders on the runtime's component registry."""
    from streamlit.testing.v1 import AppTest

    def script():
        import plotly.graph_objects as go
        import streamlit as st
        from streamlit.runtime import Runtime

        from dgm.ui import plotly_live

        plotly_live.chart(go.Figure(), key="probe")
        registry = Runtime.instance().bidi_component_registry
        st.session_state["paths"] = [registry.get_component_path(n) for n in ("dgm.plotly_live", "dgm.plotlyjs")]

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    live, plotlyjs = at.session_state["paths"]
    assert live and (Path(live) / "plotly_live.js").is_file()
    assert plotlyjs and (Path(plotlyjs) / "plotly.min.js").is_file()
    (element,) = at.get("bidi_component")
    assert element.proto.component_name == "dgm.plotly_live"
    assert element.proto.js_source_path == "plotly_live.js" and not element.proto.js_content, "served, not inlined"
    assert not (Path(__file__).resolve().parents[1] / "static").exists(), "nothing is written into the checkout"


def test_the_request_queue_shows_a_pending_click():
    """scheduling.py _interaction_pending (and shutdown.py cancelled) read ScriptRequests._state and _rerun_data."""
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequests, ScriptRequestType

    req = ScriptRequests()
    assert req._state == ScriptRequestType.CONTINUE
    req.request_rerun(RerunData(fragment_id_queue=["frame"]))
    assert req._state == ScriptRequestType.RERUN and req._rerun_data.fragment_id_queue == ["frame"]
    req.request_rerun(RerunData())
    assert req._state == ScriptRequestType.RERUN and not req._rerun_data.fragment_id_queue  # a full rerun
    req.request_stop()
    assert req._state == ScriptRequestType.STOP


def test_url_corrections_reach_the_widgets_bound_to_them():
    """dgm/ui/common.py fix_url refreshes the load-time copy of the query parameters."""
    from streamlit.runtime.state.query_params import QueryParams
    from streamlit.runtime.state.session_state_proxy import get_session_state

    assert callable(get_session_state)
    assert hasattr(QueryParams, "set_initial_query_params_from_current")


def test_a_page_opened_first_can_switch_the_legacy_pages_mode_off():
    """dgm/ui/pages.py ensure_app sets PagesManager.uses_pages_directory and raises StopException."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    assert hasattr(PagesManager, "uses_pages_directory")
    assert issubclass(StopException, BaseException)


def test_the_runtime_says_when_the_server_stops():
    """dgm/ui/shutdown.py stopping() reads Runtime.exists() and Runtime.instance().state."""
    from streamlit.runtime import Runtime, RuntimeState

    assert callable(Runtime.exists) and callable(Runtime.instance)
    assert {"STOPPING", "STOPPED"} <= {s.name for s in RuntimeState}
    assert isinstance(Runtime.state, property)


def test_a_script_runs_in_a_daemon_thread_of_the_known_name():
    """dgm/ui/shutdown.py wait_for_training leaves at once (os._exit) when a thread named SCRIPT_THREAD still runs
    at exit: a daemon thread still inside a torch op while the interpreter finalises aborts the server."""
    from streamlit.testing.v1 import AppTest

    def script():
        import threading

        import streamlit as st

        t = threading.current_thread()
        st.session_state["thread"] = (t.name, t.daemon)

    from dgm.ui.shutdown import SCRIPT_THREAD

    at = AppTest.from_function(script, default_timeout=30).run()
    assert not at.exception
    name, daemon = at.session_state["thread"]
    assert daemon and name == SCRIPT_THREAD
