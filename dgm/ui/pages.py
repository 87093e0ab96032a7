"""The page list, shared by app.py (navigation) and the home page (links and lessons)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import streamlit as st

APP = Path(__file__).resolve().parents[2] / "app.py"
_run = threading.local()  # each session's script runs in its own thread


def switch(raw: str) -> bool | None:
    """An on/off link parameter as a person may type it (``?presenter=1``, ``yes``, ``TRUE``, ``off``), or None."""
    return {"true": True, "1": True, "yes": True, "on": True,
            "false": False, "0": False, "no": False, "off": False}.get(raw.strip().lower())


@contextmanager
def app_run() -> Iterator[None]:
    """app.py wraps each run in this, so pages can tell that they run under its navigation."""
    _run.active = True
    try:
        yield
    finally:
        _run.active = False


def ensure_app() -> None:
    """Called at the top of every page. Streamlit runs in its legacy mode whenever a pages/
    directory exists, until a run of app.py reaches st.navigation; a session that starts before
    that (a visitor of a freshly started server; every AppTest run) runs the page script on its
    own, without app.py's navigation, layout and sidebar. Such a page switches the legacy mode off,
    runs app.py in its place (this same run, so no widget event is lost) and stops."""
    if getattr(_run, "active", False):
        return
    import runpy

    from streamlit.runtime.pages_manager import PagesManager

    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    PagesManager.uses_pages_directory = False
    runpy.run_path(str(APP), run_name="__main__")
    raise StopException()  # what st.stop() ends in; raised at once so nothing after this line runs


@dataclass(frozen=True)
class PageInfo:
    path: str  # file under pages/
    title: str
    icon: str
    url: str  # url path, e.g. "gan" -> /gan
    blurb: str  # one line for the home page
    experiment: str | None = None  # the dgm experiment behind it (for lesson links)

    def page(self) -> st.Page:
        # the default page is served at "/"; its own name stays free for ``home_alias`` (Streamlit reserves a
        # default page's url_path but does not serve it)
        home = self.url == "home"
        return st.Page(self.path, title=self.title, icon=self.icon, url_path="index" if home else self.url, default=home)


HOME = PageInfo("pages/home.py", "Home", ":material/home:", "home", "what DGM Explorer is")
PAGES: dict[str, list[PageInfo]] = {
    "": [HOME],
    "Models": [
        PageInfo("pages/divergences.py", "Divergences", ":material/balance:", "divergences",
                 "fit a simple q to a multimodal p: forward KL covers modes, reverse KL seeks one", "divergence"),
        PageInfo("pages/gan.py", "GAN dynamics", ":material/swords:", "gan",
                 "the two-player game, live: losses, the discriminator's view, mode collapse measured", "gan"),
        PageInfo("pages/gan_seeds.py", "GAN lottery", ":material/casino:", "gan_seeds",
                 "the same GAN on many seeds at once: how often does it capture every mode?", "gan_seeds"),
        PageInfo("pages/flows.py", "Normalizing flows", ":material/waves:", "flows",
                 "watch each invertible layer warp space and density", "flow"),
        PageInfo("pages/vae.py", "VAE", ":material/blur_on:", "vae",
                 "the ELBO taken apart, the 2D latent manifold, posterior collapse", "vae"),
        PageInfo("pages/latents.py", "Latent variables", ":material/scatter_plot:", "latents",
                 "no encoder (the density network) and discrete latents (Gumbel-softmax, VQ-VAE)", "latents"),
        PageInfo("pages/autoregressive.py", "Autoregressive models", ":material/format_list_numbered:",
                 "autoregressive", "an exact likelihood one pixel at a time, and why sampling is slow",
                 "autoregressive"),
        PageInfo("pages/diffusion.py", "Diffusion and flow matching", ":material/grain:", "diffusion",
                 "learned scores against exact ones, samplers and NFE, guidance, reflow, exact likelihood", "diffusion"),
    ],
    "Compare": [
        PageInfo("pages/arena.py", "Arena", ":material/leaderboard:", "arena",
                 "every family on the same data and budget: the taxonomy table measured", "arena"),
    ],
    "Lab": [
        PageInfo("pages/studies.py", "Studies", ":material/query_stats:", "studies",
                 "a grid of settings on many seeds at once: medians, intervals, and a replay of every run"),
        PageInfo("pages/demo.py", "Live loop demo", ":material/autorenew:", "demo",
                 "the live-training loop on the smallest model: a Gaussian fitted by maximum likelihood", "demo"),
    ],
}


def _home_alias() -> None:
    # the home page's script, run here (st.switch_page would clear the link's parameters, which the sidebar's
    # widgets are bound to, and Streamlit refuses that)
    import runpy

    runpy.run_path(str(APP.parent / HOME.path), run_name="__main__")


def home_alias() -> st.Page:
    """``/home`` (the home page's own name) opens the home page, which Streamlit serves at ``/`` only."""
    return st.Page(_home_alias, title="Home", url_path="home", visibility="hidden")


def all_pages() -> list[PageInfo]:
    return [p for ps in PAGES.values() for p in ps]
