"""The latents page's figures. ``snapshot(trainer)`` takes what they need (without changing the model);
the builders are pure: a snapshot dict and history rows in, plotly figures out."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.core.metrics import Grid
from torch.nn import functional as F

from dgm.families.latents.model import mc_log_marginal, perplexity
from dgm.families.latents.trainer import DensityNetTrainer, GumbelTrainer, VQTrainer, k_curve, per_example

GREY = [[0.0, "#000000"], [1.0, "#ffffff"]]
DENSITY_K = 2000  # samples of z per grid point for the 2D density
DENSITY_RES = 60


def image_grid(images: np.ndarray, ncols: int, title: str, height: int = 300) -> go.Figure:
    """(N, 8, 8) images in [0, 1] tiled row-major into one greyscale heatmap, one pixel of grey between tiles."""
    out = viz.tile(np.clip(images, 0, 1), ncols)
    lay = viz.layout(title, height, xaxis=dict(showgrid=False, zeroline=False, showticklabels=False, constrain="domain"),
                     yaxis=dict(showgrid=False, zeroline=False, showticklabels=False, autorange="reversed",
                                scaleanchor="x", scaleratio=1, constrain="domain"))
    lay["margin"] = dict(l=10, r=10, t=40, b=10)
    return go.Figure(go.Heatmap(z=out, colorscale=GREY, zmin=0, zmax=1, showscale=False, hoverinfo="skip"), layout=lay)


# ---- the density network ------------------------------------------------------------------------------

def k_figure(kc: dict[str, Any], unit: str) -> go.Figure:
    """The Monte Carlo estimate of log p(x) against K: mean ± spread over repeated estimates, with the
    same decoder's IWAE(k = 100) and ELBO from an encoder."""
    fig = go.Figure()
    title = "log p(x) by Monte Carlo from the prior, against K"
    if kc:
        fig.add_trace(go.Scatter(x=kc["ks"], y=kc["mean"], mode="lines+markers", name="log (1/K) Σ p(x|z_k), z_k ~ p(z) (bars: ±1 sd)",
                                 error_y=dict(type="data", array=kc["sd"], visible=True, thickness=1.5, width=6),
                                 line=dict(color=viz.PALETTE[0], width=2.5)))
        for name, key, color, dash in (("IWAE(k = 100), encoder", "iwae", viz.PALETTE[1], "dash"),
                                       ("ELBO, encoder", "elbo", viz.PALETTE[2], "dot")):
            fig.add_trace(go.Scatter(x=[kc["ks"][0], kc["ks"][-1]], y=[kc[key]] * 2, mode="lines", name=name,
                                     line=dict(color=color, width=2, dash=dash)))
        gap = kc["iwae"] - kc["mean"][-1]
        title += (f"<br><sup>step {kc['step']:,}; IWAE(100) − MC(K = {kc['ks'][-1]:,}) = {gap:+.2f} "
                  f"({'the encoder is tighter' if gap > 0 else 'the prior samples are tighter'})</sup>")
    viz.base_layout(fig, title, 400)
    fig.update_layout(margin=dict(t=70))
    fig.update_xaxes(type="log", title="K (samples of z per x)")
    fig.update_yaxes(title=f"test log p(x), {unit}")
    return fig


def density_curves(rows: list[dict], unit: str) -> go.Figure:
    keys = ["mc_1", "mc_10", "mc_100", "mc_1000", "iwae", "batch_mc", "batch_elbo"]
    labels = {"mc_1": "MC, K = 1", "mc_10": "MC, K = 10", "mc_100": "MC, K = 100", "mc_1000": "MC, K = 1000",
              "iwae": "IWAE(100), encoder", "batch_mc": "training estimate (batch)", "batch_elbo": "ELBO (batch)"}
    fig = viz.curves(rows, keys, title=f"Test estimates of log p(x) during training ({unit})", labels=labels)
    fig.update_traces(mode="lines+markers", marker=dict(size=5), selector=lambda t: not t.name.endswith("(batch)"))
    return fig


def density_2d(s: dict[str, Any]) -> go.Figure:
    """The learned density (MC with 2,000 z per grid point) and the test data."""
    grid = s["grid"]
    fig = viz.plane(s["box"], title=f"Learned density p(x) = E_z p(x|z), {DENSITY_K:,} z per point", height=460)
    viz.add_heatmap(fig, grid, s["density"], name="p(x)")
    viz.add_points(fig, s["data"], name="test data", color=viz.DATA_COLOR, size=2.5, opacity=0.4)
    return fig


def pushforward(s: dict[str, Any]) -> go.Figure:
    """Prior samples pushed through the decoder: its means f(z) and samples x ~ p(x|z)."""
    fig = viz.plane(s["box"], title="z ~ p(z) pushed through the decoder", height=460)
    viz.add_points(fig, s["data"], name="test data", color=viz.DATA_COLOR, size=2.5, opacity=0.3)
    viz.add_points(fig, s["samples"], name="x ~ p(x|z)", color=viz.PALETTE[1], size=2.5, opacity=0.4)
    viz.add_points(fig, s["means"], name="decoder mean f(z)", color=viz.PALETTE[0], size=3, opacity=0.8)
    return fig


@torch.no_grad()
def density_snapshot(t: DensityNetTrainer) -> dict[str, Any]:
    gen = t.eval_generator(5)
    out: dict[str, Any] = {"model": "density_net", "images": t.images, "k_curve": k_curve(t)}
    z = torch.randn(1000 if not t.images else 40, t.config.latent, generator=gen, device=t.device)
    if t.images:
        out["samples"] = t.decoder.mean(z).reshape(-1, 8, 8).cpu().numpy()
        return out
    grid = Grid.over(t.dist.box, DENSITY_RES, device=t.device)
    logp = torch.cat([mc_log_marginal(t.decoder, pts, DENSITY_K, gen) for pts in grid.points.split(1200)])
    m, log_std = t.decoder.gaussian(z)
    out.update(grid=grid, density=logp.exp().cpu(), box=t.dist.box, data=t.test_x.cpu().numpy(),
               means=m.cpu().numpy(), samples=(m + torch.exp(log_std) * torch.randn(m.shape, generator=gen, device=m.device)).cpu().numpy())
    return out


# ---- discrete latents ---------------------------------------------------------------------------------

def reconstructions(s: dict[str, Any], what: str) -> go.Figure:
    imgs = np.concatenate([s["recon_in"], s["recon_out"]])
    return image_grid(imgs, len(s["recon_in"]), f"Test digits (top) decoded from {what} (bottom)", 190)


def gumbel_curves(rows: list[dict]) -> go.Figure:
    labels = {"elbo": "test ELBO (one-hot samples)", "recon": "test reconstruction", "batch_recon": "reconstruction (batch)"}
    return viz.curves(rows, ["elbo", "recon", "batch_recon"], title="Test ELBO of the discrete model (nats per image)",
                      labels=labels)


def kl_tau_curves(rows: list[dict]) -> go.Figure:
    return viz.curves(rows, ["kl", "tau"], title="KL(q(y|x) ‖ uniform), test (nats), and the temperature τ",
                      labels={"kl": "KL (test)", "tau": "temperature τ"})


ESTIMATOR_COLORS = {"score function + baseline": viz.PALETTE[3], "Gumbel-softmax": viz.PALETTE[1],
                    "straight-through": viz.PALETTE[0]}


def estimator_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Bias² and variance of each gradient estimator against the temperature (log-log); the score
    function does not depend on τ (a flat line), and its measured bias² is at the noise floor."""
    fig = go.Figure()
    taus = sorted({r["tau"] for r in rows if r["tau"] is not None})
    for name, color in ESTIMATOR_COLORS.items():
        rs = [r for r in rows if r["estimator"] == name]
        if not rs:
            continue
        xs = taus if rs[0]["tau"] is None else [r["tau"] for r in rs]
        for stat, dash, label in (("variance", "solid", "variance"), ("bias2", "dash", "bias²")):
            ys = [rs[0][stat]] * len(xs) if rs[0]["tau"] is None else [r[stat] for r in rs]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{name}: {label}",
                                     line=dict(color=color, dash=dash, width=2)))
    floor = [r for r in rows if r["estimator"] == "straight-through"]
    if floor:
        fig.add_trace(go.Scatter(x=[r["tau"] for r in floor], y=[r["floor"] for r in floor], mode="lines",
                                 name="noise floor of the bias² (variance / S)", line=dict(color="#999", dash="dot")))
    viz.base_layout(fig, "Gradient estimators against the exact gradient (enumeration)", 380)
    fig.update_xaxes(type="log", title="temperature τ")
    fig.update_yaxes(type="log", title="per image, summed over the logits")
    return fig


@torch.no_grad()
def gumbel_snapshot(t: GumbelTrainer) -> dict[str, Any]:
    c, gen = t.config, t.eval_generator(5)
    x = t.test_x[:12]
    code = F.one_hot(t.logits(x).argmax(-1), c.categories).float().flatten(1)
    idx = torch.randint(0, c.categories, (40, c.groups), generator=gen, device=t.device)
    return {"model": "gumbel", "images": True, "recon_in": (x / 16).reshape(-1, 8, 8).cpu().numpy(),
            "recon_out": t.decoder.mean(code).reshape(-1, 8, 8).cpu().numpy(),
            "samples": t.decoder.mean(F.one_hot(idx, c.categories).float().flatten(1)).reshape(-1, 8, 8).cpu().numpy()}


# ---- VQ-VAE ----------------------------------------------------------------------------------------------

def usage_histogram(s: dict[str, Any]) -> go.Figure:
    """How many test encoder outputs pick each code, codes sorted by use."""
    counts = np.sort(s["counts"])[::-1]
    used = int((counts > 0).sum())
    fig = go.Figure(go.Bar(x=np.arange(len(counts)), y=counts, marker_color=viz.PALETTE[1], name="test assignments"))
    viz.base_layout(fig, f"Codebook usage on the test digits: {used} of {len(counts)} codes used, "
                         f"perplexity {s['perplexity']:.1f}", 320)
    fig.update_xaxes(title="codes, by use")
    fig.update_yaxes(title="encoder outputs assigned")
    return fig


def codebook_plane(s: dict[str, Any]) -> go.Figure:
    """The codebook vectors among the test encoder outputs z_e, in the first two principal axes of z_e."""
    ze, cb, used = s["ze_2d"], s["codebook_2d"], s["counts"] > 0
    title = "Codebook in the encoder's space" + (" (principal axes 1, 2 of z_e)" if s["projected"] else "")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ze[:, 0], y=ze[:, 1], mode="markers", name="z_e of test digits",
                             marker=dict(size=3, color="#999999", opacity=0.4)))
    for mask, name, color, symbol in ((used, "used codes", viz.PALETTE[0], "circle"),
                                      (~used, "dead codes", "#444444", "x")):
        if mask.any():
            fig.add_trace(go.Scatter(x=cb[mask, 0], y=cb[mask, 1], mode="markers", name=name,
                                     marker=dict(size=8, color=color, symbol=symbol, line=dict(width=0))))
    viz.base_layout(fig, title, 420)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def vq_curves(rows: list[dict]) -> go.Figure:
    return viz.curves(rows, ["perplexity", "batch_perplexity"], title="Codebook perplexity exp(H(usage))",
                      labels={"perplexity": "test", "batch_perplexity": "batch"})


def vq_recon_curves(rows: list[dict]) -> go.Figure:
    return viz.curves(rows, ["recon", "batch_recon"], title="Reconstruction log p(x|z_q) (nats per image)",
                      labels={"recon": "test", "batch_recon": "batch"})


def vq_prior_curves(rows: list[dict]) -> go.Figure:
    return viz.curves(rows, ["prior_nll", "uniform_nll", "batch_prior_nll"],
                      title="Codes of the test digits under the priors (nats per image)",
                      labels={"prior_nll": "autoregressive prior (test)", "uniform_nll": "uniform prior",
                              "batch_prior_nll": "autoregressive prior (batch)"})


@torch.no_grad()
def vq_snapshot(t: VQTrainer) -> dict[str, Any]:
    c, gen = t.config, t.eval_generator(5)
    ze, idx = t.codes(t.test_x)
    cb = t.codebook.weight
    flat = ze.reshape(-1, c.code_dim)
    if c.code_dim > 2:  # the first two principal axes of the encoder outputs
        mean = flat.mean(0)
        axes = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:2].T  # (D, 2)
        ze2, cb2 = (flat - mean) @ axes, (cb - mean) @ axes
    else:
        ze2, cb2 = flat, cb
    ze2 = ze2 if c.code_dim > 1 else torch.cat([ze2, torch.zeros_like(ze2)], 1)
    cb2 = cb2 if c.code_dim > 1 else torch.cat([cb2, torch.zeros_like(cb2)], 1)
    counts = torch.bincount(idx.reshape(-1), minlength=c.codes).float()
    x = t.test_x[:12]
    rand = torch.randint(0, c.codes, (40, c.positions), generator=gen, device=t.device)
    learned = t.prior.sample(40, gen)
    return {"model": "vqvae", "images": True, "counts": counts.cpu().numpy(),
            "perplexity": float(perplexity(counts)),
            "ze_2d": ze2.cpu().numpy(), "codebook_2d": cb2.cpu().numpy(), "projected": c.code_dim > 2,
            "recon_in": (x / 16).reshape(-1, 8, 8).cpu().numpy(),
            "recon_out": t.decoder.mean(cb[idx[:12]].flatten(1)).reshape(-1, 8, 8).cpu().numpy(),
            "samples": t.decoder.mean(cb[rand].flatten(1)).reshape(-1, 8, 8).cpu().numpy(),
            "prior_samples": t.decoder.mean(cb[learned].flatten(1)).reshape(-1, 8, 8).cpu().numpy()}


# ---- from a trainer -----------------------------------------------------------------------------------

def snapshot(trainer) -> dict[str, Any]:
    if isinstance(trainer, GumbelTrainer):
        return gumbel_snapshot(trainer)
    if isinstance(trainer, VQTrainer):
        return vq_snapshot(trainer)
    return density_snapshot(trainer)


def page_figures(s: dict[str, Any], rows: list[dict], config: Any) -> viz.Figures:
    """The page's main figures, by name, each built when first used (the CLI's --png writes them all)."""
    if s["model"] == "gumbel":
        return viz.Figures({"recon": lambda: reconstructions(s, "their most likely code"),
                            "samples": lambda: image_grid(s["samples"], 10, "Samples: codes drawn uniformly, decoded", 260),
                            "curves": lambda: gumbel_curves(rows), "kl_tau": lambda: kl_tau_curves(rows)})
    if s["model"] == "vqvae":
        return viz.Figures({"codebook": lambda: codebook_plane(s), "usage": lambda: usage_histogram(s),
                            "recon": lambda: reconstructions(s, "their codes"),
                            "samples": lambda: image_grid(s["samples"], 10, "Samples: codes drawn uniformly, decoded", 260),
                            "prior_samples": lambda: image_grid(s["prior_samples"], 10,
                                                                "Samples: codes from the autoregressive prior", 260),
                            "prior": lambda: vq_prior_curves(rows),
                            "perplexity": lambda: vq_curves(rows), "recon_curve": lambda: vq_recon_curves(rows)})
    unit = per_example(config)
    b = {"k": lambda: k_figure(s["k_curve"], unit), "curves": lambda: density_curves(rows, unit)}
    if s["images"]:
        b["samples"] = lambda: image_grid(s["samples"], 10, "Samples: decoder means at z ~ p(z)", 260)
    else:
        b.update(density=lambda: density_2d(s), pushforward=lambda: pushforward(s))
    return viz.Figures(b)


def figures(trainer) -> viz.Figures:
    return page_figures(snapshot(trainer), trainer.history.merged(), trainer.config)
