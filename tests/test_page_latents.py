"""AppTest: the latents page (issue 22)."""

from __future__ import annotations

import base64

import numpy as np

from conftest import at_iteration, charts, open_page, settled


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _title(c: dict) -> str:
    """A chart's title as one line (the page breaks long titles into lines: dgm.ui.common.plot)."""
    return (c["layout"].get("title") or {}).get("text", "").replace("<br>", " ")


def _titles(at) -> list[str]:
    return [_title(c) for c in charts(at) if c["layout"].get("title")]


def test_density_network_page_steps_and_shows_the_gap_to_iwae():
    at = open_page("pages/latents.py", {"width": "32", "k": "10"})
    _ok(at)
    assert at.title[0].value == "Latent variables"
    assert at_iteration(at) == 0
    assert len(charts(at)) == 2  # the K figure (empty until an evaluation) and the samples
    assert any("first evaluation" in i.value for i in at.info)
    at.selectbox(key="latents.speed").set_value(10).run()
    settled(at.button(key="latents.step").click().run(), "latents")  # evaluates the initial model, then trains
    _ok(at)
    assert at_iteration(at) == 10
    metrics = {m.label: m for m in at.metric}
    assert {"MC, K = 1", "MC, K = 1,000", "IWAE (k = 100)"} <= set(metrics)
    iwae, mc = float(metrics["IWAE (k = 100)"].value), float(metrics["MC, K = 1"].value)
    assert iwae < 0 and mc < 0  # nats per image (at step 10 the encoder is barely trained: no order between them yet)
    k_fig = next(t for t in _titles(at) if t.startswith("log p(x) by Monte Carlo"))
    assert "IWAE(100) − MC(K = 1,000) = " in k_fig
    assert len(charts(at)) == 3  # + the curves


def test_2d_data_shows_the_density_and_the_pushforward():
    at = open_page("pages/latents.py", {"data": "ring8", "width": "32", "latent": "1"})
    _ok(at)
    titles = _titles(at)
    assert any(t.startswith("Learned density p(x)") for t in titles)
    assert any(t.startswith("z ~ p(z) pushed through the decoder") for t in titles)


def test_gumbel_softmax_page_measures_the_estimators_against_enumeration():
    at = open_page("pages/latents.py", {"model": "gumbel", "width": "32", "groups": "2", "categories": "4"})
    _ok(at)
    titles = _titles(at)
    assert any(t.startswith("Test digits (top) decoded") for t in titles)
    at.button(key="latents.estimators_btn").click().run()
    _ok(at)
    fig = next(c for c in charts(at) if _title(c).startswith("Gradient estimators"))
    names = {tr["name"] for tr in fig["data"]}
    assert {"score function + baseline: variance", "Gumbel-softmax: bias²", "straight-through: variance"} <= names
    table = at.dataframe[0].value
    assert list(table["estimator"]).count("Gumbel-softmax") == 3  # three temperatures
    # one type a column ("any" beside numbers failed the browser's Arrow conversion: an error in the server's log)
    assert all(table[c].map(type).nunique() == 1 for c in table.columns), table.dtypes
    relaxed = table[table["estimator"] == "Gumbel-softmax"].sort_values("τ")
    assert relaxed["variance"].iloc[0] > relaxed["variance"].iloc[-1]  # small τ: the larger variance


def test_vq_vae_page_shows_the_codebook_and_its_usage():
    at = open_page("pages/latents.py", {"model": "vqvae", "width": "32", "codes": "16", "restarts": "true"})
    _ok(at)
    assert at.toggle(key="restarts").value is True
    at.selectbox(key="latents.speed").set_value(10).run()
    settled(at.button(key="latents.step").click().run(), "latents")
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["codes in use"].endswith("of 16") and float(metrics["perplexity"]) <= 16
    titles = _titles(at)
    assert any(t.startswith("Codebook in the encoder's space") for t in titles)
    usage = next(c for c in charts(at) if _title(c).startswith("Codebook usage"))
    y = usage["data"][0]["y"]  # plotly's typed array: {"dtype", "bdata"}
    counts = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]) if isinstance(y, dict) else np.array(y)
    assert len(counts) == 16 and counts.sum() == 300 * 4  # every test digit's 4 codes, by code
    assert any(t.startswith("Samples: codes drawn uniformly") for t in titles)
    assert any(t.startswith("Samples: codes from the autoregressive prior") for t in titles)
    assert "codes under the AR prior" in metrics
