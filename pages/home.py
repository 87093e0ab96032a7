"""Home: what DGM Explorer is, the taxonomy of deep generative models, and every page and lesson."""

import streamlit as st

from dgm.core.registry import get, names
from dgm.ui import common, controls
from dgm.ui.pages import HOME, all_pages

controls.sanitize_page_without_knobs()
common.header(
    "DGM Explorer",
    "A live laboratory for deep generative models. Every page trains small PyTorch models **in front of "
    "you**, on 2D toy distributions or 8×8 digits, and draws what happens: sample clouds, densities, "
    "warped grids, latent manifolds and metric curves. Change one knob, press **Play**, and watch. "
    "A seed fixes every run, and every setting lives in the page's address, so a link reproduces an experiment.",
)

st.subheader("Four families, four trade-offs")
st.markdown(
    "A generative model learns a distribution p(x) from samples. The families differ in how they "
    "represent it, and so in what they make cheap:"
)
st.markdown(
    """
| family | how it models p(x) | training | exact likelihood | sampling | compression (a smaller latent code) |
|---|---|---|---|---|---|
| **Autoregressive** (NADE, MADE, PixelCNN) | a product of 1D conditionals p(x_i given x_<i) | stable (maximum likelihood) | yes | slow: one dimension at a time | no |
| **Normalizing flow** (NICE, RealNVP, MAF/IAF) | an invertible map of a simple base density; change of variables | stable (maximum likelihood) | yes | fast or slow: one pass for couplings and IAF, one per dimension for MAF | no: z has the size of x (an invertible map cannot compress) |
| **Implicit / GAN** | a sampler G(z) judged by a discriminator; no density | unstable: a two-player game | no | fast (one pass) | no encoder |
| **Latent variable / VAE** | p(x) = ∫ p(x given z) p(z) dz, trained on a lower bound (ELBO) | stable | a lower bound (IWAE tightens it) | fast (one pass) | yes: a learned, low-dimensional z |
"""
)

st.markdown("The table above is typed in from the lectures. The **Arena** measures it: every family on the same "
            "data and budget, with likelihood, sample quality, sampling speed, latent size and the spread over seeds.")
st.page_link("pages/arena.py", label="**The measured table: the Arena**", icon=":material/leaderboard:")

st.subheader("Pages")
for info in all_pages():
    if info is HOME:
        continue
    st.page_link(info.path, label=f"**{info.title}**: {info.blurb}", icon=info.icon)

lessons = [(info, get(info.experiment)) for info in all_pages()
           if info.experiment in names() and get(info.experiment).lessons]
if lessons:
    st.subheader("Lessons")
    st.markdown("Each link opens a page with every knob set to show one phenomenon.")
    for info, exp in lessons:
        st.markdown(f"**{info.title}**")
        for les in exp.lessons:
            st.page_link(info.path, label=f"{les.name}" + (f": {les.blurb}" if les.blurb else ""),
                         icon=":material/school:", query_params={"preset": les.name})

st.caption("Device, seed and presenter mode are in the sidebar and apply to every page.")
