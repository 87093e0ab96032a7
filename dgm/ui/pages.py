"""The page list, shared by app.py (navigation) and the home page (links and lessons)."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class PageInfo:
    path: str  # file under pages/
    title: str
    icon: str
    url: str  # url path, e.g. "gan" -> /gan
    blurb: str  # one line for the home page
    experiment: str | None = None  # the dgm experiment behind it (for lesson links)

    def page(self) -> st.Page:
        return st.Page(self.path, title=self.title, icon=self.icon, url_path=self.url, default=self.url == "home")


HOME = PageInfo("pages/home.py", "Home", ":material/home:", "home", "what DGM Explorer is")
PAGES: dict[str, list[PageInfo]] = {
    "": [HOME],
    "Models": [
        PageInfo("pages/divergences.py", "Divergences", ":material/balance:", "divergences",
                 "fit a simple q to a multimodal p: forward KL covers modes, reverse KL seeks one", "divergence"),
        PageInfo("pages/gan.py", "GAN dynamics", ":material/swords:", "gan",
                 "the two-player game, live: losses, the discriminator's view, mode collapse measured", "gan"),
        PageInfo("pages/flows.py", "Normalizing flows", ":material/waves:", "flows",
                 "watch each invertible layer warp space and density", "flow"),
        PageInfo("pages/vae.py", "VAE", ":material/blur_on:", "vae",
                 "the ELBO taken apart, the 2D latent manifold, posterior collapse", "vae"),
    ],
    "Lab": [
        PageInfo("pages/demo.py", "Live loop demo", ":material/autorenew:", "demo",
                 "the live-training loop on the smallest model: a Gaussian fitted by maximum likelihood", "demo"),
    ],
}


def all_pages() -> list[PageInfo]:
    return [p for ps in PAGES.values() for p in ps]
