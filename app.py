"""DGM Explorer: the entry point. ``streamlit run app.py``."""

import streamlit as st

# st.navigation comes first, before anything heavy is imported: until the first run of this script
# reaches it, Streamlit serves new sessions in its legacy pages/-directory mode.
from dgm.ui.pages import PAGES, app_run, home_alias, switch  # light: streamlit and dataclasses only

nav = {section: [p.page() for p in pages] for section, pages in PAGES.items()}
nav[""].append(home_alias())  # /home as well as /
page = st.navigation(nav)
# presenter mode starts with the sidebar (the controls) folded away, for the projector
presenting = switch(st.query_params.get("presenter", "")) is True
st.set_page_config(page_title="DGM Explorer", page_icon="assets/logo.svg", layout="wide",
                   initial_sidebar_state="collapsed" if presenting else "auto")

from dgm.core import worker  # noqa: E402
from dgm.ui import common  # noqa: E402  (torch, plotly: after the navigation on purpose)

# the process that training workers fork from warms up (a few seconds) while the visitor reads the first page,
# the home page included: a Play then goes to a worker at once (until one is ready, a run trains in the server)
worker.prepare()

st.logo("assets/logo.svg")
common.sidebar()
with app_run():
    page.run()
