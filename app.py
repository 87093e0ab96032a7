"""DGM Explorer: the entry point. ``streamlit run app.py``."""

import streamlit as st

from dgm.ui import common
from dgm.ui.pages import PAGES

st.set_page_config(page_title="DGM Explorer", page_icon="assets/logo.svg", layout="wide")
page = st.navigation({section: [p.page() for p in pages] for section, pages in PAGES.items()})
st.logo("assets/logo.svg")
common.sidebar()
page.run()
