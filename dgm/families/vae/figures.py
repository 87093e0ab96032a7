"""VAE figures: the latent manifold, the latent space, image grids and the ELBO's pieces.

``snapshot(trainer)`` takes what they need from a trainer (without changing its model); the builders
are pure: a snapshot dict and history rows in, plotly figures out.
Images are drawn as ONE greyscale heatmap of tiled 8x8 digits (ink white on black), so a grid of
hundreds of digits stays a single cheap SVG trace.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.families.vae.elbo_figures import elbo_curves, iwae_vs_k, kl_per_dim, surgery, terms_curves
from dgm.families.vae.model import unit_activity
from dgm.families.vae.trainer import VAETrainer, per_example

#: ten label colours (digits 0..9)
LABEL_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]
GREY = [[0.0, "#000000"], [1.0, "#ffffff"]]
_layout = viz.base_layout
_plane = viz.plane


def image_grid(images: np.ndarray, ncols: int, title: str | None = None, height: int = 300,
               xticks: tuple[Sequence[float], Sequence[str]] | None = None,
               yticks: tuple[Sequence[float], Sequence[str]] | None = None,
               xtitle: str | None = None, ytitle: str | None = None, width: int | None = None) -> go.Figure:
    """Tiled greyscale images as one heatmap; ticks are given at tile indices (0..ncols-1)."""
    arr = viz.tile(np.clip(images, 0, 1), ncols)
    h = images.shape[1] + 1

    def _axis(ticks):
        if ticks is None:
            return dict(showticklabels=False, ticks="")
        pos, text = ticks
        return dict(tickvals=[1 + p * h + (h - 1) / 2 - 0.5 for p in pos], ticktext=list(text), ticks="")

    lay = viz.layout(title, height, xaxis=dict(showgrid=False, zeroline=False, constrain="domain", title=xtitle,
                                               **_axis(xticks)),
                     yaxis=dict(showgrid=False, zeroline=False, autorange="reversed", scaleanchor="x", scaleratio=1,
                                constrain="domain", title=ytitle, **_axis(yticks)))
    lay["margin"] = dict(l=45 if yticks else 10, r=10, t=40 if title else 10, b=40 if xticks else 10)
    if width:
        lay["width"] = width
    return go.Figure(go.Heatmap(z=arr, colorscale=GREY, zmin=0, zmax=1, showscale=False, hoverinfo="skip"),
                     layout=lay)


# ---- the manifold ----------------------------------------------------------------------------------

def manifold(s: dict[str, Any]) -> go.Figure:
    """Decoded means over a grid of z spaced by the inverse normal CDF (digits), or the decoder's
    mean map in the data plane (2D data)."""
    if not s["images"]:
        return mean_map(s)
    ticks = s["ticks"]
    n = len(ticks)
    d1, d2 = s["dims"]
    every = max(1, n // 5)
    pos = list(range(0, n, every))
    if s["latent"] == 1:
        return image_grid(s["manifold"], n, title="Decoded means along z (inverse-CDF spacing)", height=170,
                          xticks=(pos, [f"{ticks[i]:.1f}" for i in pos]), xtitle="z₁")
    title = ("Latent manifold: decoded means over a z grid" if s["latent"] == 2
             else f"Latent manifold over z{viz.subscript(d1 + 1)}, z{viz.subscript(d2 + 1)} (other dims 0)")
    return image_grid(s["manifold"], n, title=title, height=540,
                      xticks=(pos, [f"{ticks[i]:.1f}" for i in pos]),
                      yticks=(pos, [f"{s['ticks_y'][::-1][i]:.1f}" for i in pos]),
                      xtitle=f"z{viz.subscript(d1 + 1)}", ytitle=f"z{viz.subscript(d2 + 1)}")


def mean_map(s: dict[str, Any]) -> go.Figure:
    """2D data: lines of constant z (through the inverse-CDF grid) mapped by the decoder's mean."""
    fig = _plane(s["box"], title="Decoder mean map: z grid lines in data space", height=480)
    viz.add_points(fig, s["data"], name="test data", color=viz.DATA_COLOR, size=2.5, opacity=0.3)
    viz.add_points(fig, s["model_samples"], name="samples x ~ p(x|z), z ~ p(z)", color=viz.PALETTE[1], size=2.5,
                   opacity=0.35)
    seen = set()
    for axis, pts in s["mean_lines"]:
        color = viz.PALETTE[0] if axis == 0 else viz.PALETTE[2]
        first = axis not in seen
        seen.add(axis)
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines", line=dict(color=color, width=1.6),
                                 name=f"mean(z) as z{viz.subscript(s['dims'][axis] + 1)} varies", showlegend=first,
                                 legendgroup=f"axis{axis}", hoverinfo="skip"))
    return viz.follow(fig, s["box"], s["model_samples"])


# ---- the latent space ------------------------------------------------------------------------------

def _mixture_density_2d(points: np.ndarray, means: np.ndarray, logvars: np.ndarray, logw: np.ndarray) -> np.ndarray:
    """Density of a diagonal Gaussian mixture (2D marginal) at points (M, 2)."""
    prec = np.exp(-logvars)  # (K, 2)
    # the squared distances expanded, so that no (M, K, 2) array is made: x²/σ² - 2xμ/σ² + μ²/σ²
    lp = -0.5 * (points**2 @ prec.T - 2 * points @ (means * prec).T)  # (M, K)
    lp += logw - 0.5 * ((means**2 * prec).sum(1) + (np.log(2 * np.pi) + logvars).sum(1))
    mx = lp.max(1, keepdims=True)
    return np.exp(mx[:, 0]) * np.exp(lp - mx).sum(1)


def latent_space(s: dict[str, Any], n_ellipses: int = 6, resolution: int = 80) -> go.Figure:
    """Test data encoded (posterior means, coloured by label), a few posterior ellipses, the
    aggregated posterior (heatmap) and the prior (contours), in the two most active dimensions."""
    mu, logvar = s["mu"], s["logvar"]
    pm, plv, plw = s["prior"]
    d1, d2 = s["dims"]
    if s["latent"] == 1:
        return _latent_1d(s)
    m2, v2 = mu[:, [d1, d2]], logvar[:, [d1, d2]]
    r = float(max(3.0, np.quantile(np.abs(m2), 0.99) * 1.15))
    box = (-r, r, -r, r)
    from dgm.core.metrics import Grid

    grid = Grid.over(box, resolution)
    pts = grid.points.numpy()
    agg = np.sqrt(_mixture_density_2d(pts, m2, v2, np.full(len(m2), -np.log(len(m2)))))  # sqrt: shows the tails
    prior = _mixture_density_2d(pts, pm[:, [d1, d2]], plv[:, [d1, d2]], plw)
    title = ("Latent space: test data encoded; shaded: aggregated posterior" if s["latent"] == 2
             else f"Test data in z{viz.subscript(d1 + 1)}, z{viz.subscript(d2 + 1)}; shaded: aggregated posterior")
    fig = _plane(box, title=title, height=520)
    viz.add_heatmap(fig, grid, agg, colorscale=[[0, "#ffffff"], [1, "#6baed6"]], name="aggregated posterior")
    log_prior = np.log(np.maximum(prior, 1e-300))
    top = float(log_prior.max())
    fig.data[0].zsmooth = "best"
    zc = grid.image(_t(np.maximum(log_prior, top - 12))).numpy()
    traces = [go.Contour(x=grid.xs.numpy(), y=grid.ys.numpy(), z=zc,
                         contours=dict(coloring="none", start=top - 9, end=top - 0.5, size=2.0),
                         showscale=False, name="prior p(z): log-density contours",
                         line=dict(color="#444", width=1.2, dash="dot"), hoverinfo="skip", showlegend=True)]

    def points(x, name, color, size, opacity):
        return go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", name=name,
                          marker=dict(size=size, color=color, opacity=opacity, symbol="circle", line=dict(width=0)))

    labels = s["labels"]
    if labels is not None:
        traces += [points(m2[labels == digit], str(digit), LABEL_COLORS[digit], 5, 0.85)
                   for digit in range(10) if (labels == digit).any()]
    else:
        traces.append(points(m2, "test points", viz.PALETTE[1], 4, 0.7))
    idx = np.linspace(0, len(m2) - 1, n_ellipses).astype(int)
    for j, i in enumerate(idx):  # one trace per posterior: its 1- and 2-sd ellipses and its mean
        color = LABEL_COLORS[int(labels[i])] if labels is not None else viz.PALETTE[0]
        cov = np.diag(np.exp(v2[i]))
        e1, e2 = viz.ellipse_path(m2[i], cov, 1.0, 60), viz.ellipse_path(m2[i], cov, 2.0, 80)
        gap = np.full((1, 2), np.nan)
        p = np.concatenate([e1, gap, e2, gap, m2[i][None]])
        traces.append(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name="q(z|x): 1 and 2 sd", legendgroup="ell",
                                 showlegend=j == 0, hoverinfo="skip", connectgaps=False,
                                 line=dict(color=color, width=1.8)))
    fig.add_traces(traces)  # at once: each add_trace call costs about a millisecond
    fig.update_layout(xaxis_title=f"z{viz.subscript(d1 + 1)}", yaxis_title=f"z{viz.subscript(d2 + 1)}",
                      legend=dict(orientation="v", y=1, x=1.02, yanchor="top"))
    return fig


def _t(a):
    import torch

    return torch.as_tensor(a)


def _latent_1d(s: dict[str, Any]) -> go.Figure:
    mu, logvar = s["mu"][:, 0], s["logvar"][:, 0]
    pm, plv, plw = s["prior"]
    r = float(max(3.0, np.quantile(np.abs(mu), 0.99) * 1.15))
    z = np.linspace(-r, r, 400)[:, None]
    agg = _mixture_density_2d(z, mu[:, None], logvar[:, None], np.full(len(mu), -np.log(len(mu))))
    prior = _mixture_density_2d(z, pm[:, :1], plv[:, :1], plw)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=z[:, 0], y=agg, mode="lines", name="aggregated posterior", fill="tozeroy",
                             line=dict(color="#6baed6")))
    fig.add_trace(go.Scatter(x=z[:, 0], y=prior, mode="lines", name="prior p(z)", line=dict(color="#444", dash="dot")))
    labels = s["labels"]
    top = float(max(agg.max(), prior.max()))
    if labels is not None:
        for digit in range(10):
            sel = labels == digit
            fig.add_trace(go.Scatter(x=mu[sel], y=-top * (0.06 + 0.035 * digit) * np.ones(sel.sum()), mode="markers",
                                     name=str(digit), marker=dict(color=LABEL_COLORS[digit], size=5)))
    _layout(fig, "Latent space (1D): encoded test data by label", 420)
    fig.update_xaxes(title="z₁")
    return fig


# ---- image grids -------------------------------------------------------------------------------------

def reconstructions(s: dict[str, Any]) -> go.Figure:
    """Inputs (top row) above their reconstructions (decoder mean at the posterior mean)."""
    imgs = np.concatenate([s["recon_in"], s["recon_out"]])
    n = len(s["recon_in"])
    return image_grid(imgs, n, title="Reconstructions: test inputs (top), decoded (bottom)", height=190,
                      yticks=([0, 1], ["x", "x̂"]))


def prior_samples(s: dict[str, Any]) -> go.Figure:
    imgs = s["samples"]
    return image_grid(imgs, 10, title="Samples: decoder means at z ~ p(z)", height=330)


def interpolation(s: dict[str, Any]) -> go.Figure:
    a, b = s["interp_labels"]
    n = len(s["interp"])
    return image_grid(s["interp"], n, title=f"Interpolation in z between a test {a} and a test {b} (ends: inputs)",
                      height=150)


# ---- from a trainer -------------------------------------------------------------------------------

def top_dims(trainer: VAETrainer) -> tuple[int, int]:
    """The two latent dimensions whose posterior means vary most over the test set."""
    if trainer.config.latent == 1:
        return (0, 0)
    with torch.no_grad():
        mu, _ = trainer.model.encode(trainer.test_x)
    order = torch.argsort(unit_activity(mu), descending=True).tolist()
    return tuple(sorted(order[:2]))

def default_pair(trainer: VAETrainer) -> tuple[int, int]:
    """Two test digits of different classes for the interpolation (the first 4 and first 0)."""
    if trainer.test_y is None:
        return (0, 1)
    y = trainer.test_y.tolist()
    return (y.index(4) if 4 in y else 0, y.index(0) if 0 in y else 1)

@torch.no_grad()
def prior_quantiles(trainer: VAETrainer):
    """The prior's quantile function per latent dim, ``quantile(d, p)``, and its centre: the inverse normal CDF
    and 0 for N(0, I) (as in Kingma & Welling); for a learned prior, empirical quantiles and the median of 4,000
    prior samples (a fixed generator)."""
    m = trainer.model
    if m.prior_kind == "standard":
        return (lambda d, p: torch.distributions.Normal(0.0, 1.0).icdf(p)), torch.zeros(trainer.config.latent,
                                                                                        device=trainer.device)
    pz = m.sample_prior(4000, trainer.eval_generator(8))
    return (lambda d, p: torch.quantile(pz[:, d], p)), pz.median(0).values


@torch.no_grad()
def manifold_grid(trainer: VAETrainer, n_grid: int = 15, dims: tuple[int, int] | None = None, prior=None):
    """The latent manifold's grid: n_grid² latent points (rows: z2 from the top) spaced by the prior's quantiles
    (``prior``: ``prior_quantiles(trainer)``) in the two most active dims, the other dims at the prior's centre;
    with the ticks on its two axes and the dims."""
    quantile, centre = prior or prior_quantiles(trainer)
    dims = dims or top_dims(trainer)
    q = torch.linspace(0.05, 0.95, n_grid, device=trainer.device)
    ticks, ticks_y = quantile(dims[0], q), quantile(dims[1], q)  # (n,) each
    if trainer.config.latent == 1:
        zg = ticks[:, None]
    else:
        zg = centre.repeat(n_grid * n_grid, 1)
        zg[:, dims[0]] = ticks.repeat(n_grid)
        zg[:, dims[1]] = ticks_y.flip(0).repeat_interleave(n_grid)
    return zg, ticks, ticks_y, dims


@torch.no_grad()
def snapshot(trainer: VAETrainer, interp: tuple[int, int] | None = None, n_grid: int = 15) -> dict[str, Any]:
    m = trainer.model
    if not trainer.analysis and trainer.history.evals:  # e.g. after restore_last_good (a replay link)
        trainer.analysis = trainer.analyse()
    gen = trainer.eval_generator(5)
    D = trainer.config.latent
    mu, logvar = m.encode(trainer.test_x)
    quantile, centre = prior = prior_quantiles(trainer)
    zg, ticks, ticks_y, dims = manifold_grid(trainer, n_grid, top_dims(trainer), prior)
    manifold = m.mean(m.decode(zg))
    out: dict[str, Any] = {"dims": dims, "ticks": ticks.cpu().numpy(), "ticks_y": ticks_y.cpu().numpy(),
                           "latent": D,
                           "mu": mu.cpu().numpy(), "logvar": logvar.cpu().numpy(),
                           "labels": trainer.test_y.cpu().numpy() if trainer.test_y is not None else None,
                           "analysis": trainer.analysis, "images": trainer.images,
                           "eval_schedule": trainer.eval_schedule()}
    prior = m.prior_mixture()
    out["prior"] = tuple(t.detach().cpu().numpy() for t in prior)
    zs = m.sample_prior(100 if trainer.images else 1000, gen)
    if trainer.images:
        out["manifold"] = manifold.reshape(-1, 8, 8).cpu().numpy()
        rx = trainer.test_x[:12]
        out["recon_in"] = trainer.model.encoder_input(rx).reshape(-1, 8, 8).cpu().numpy()
        out["recon_out"] = m.mean(m.decode(mu[:12])).reshape(-1, 8, 8).cpu().numpy()
        out["samples"] = m.mean(m.decode(zs)).reshape(-1, 8, 8).cpu().numpy()
        a, b = (int(i) % trainer.test_x.shape[0] for i in (interp or default_pair(trainer)))
        t = torch.linspace(0, 1, 10, device=trainer.device)[:, None]
        zi = (1 - t) * mu[a] + t * mu[b]
        out["interp"] = np.concatenate([trainer.model.encoder_input(trainer.test_x[[a]]).cpu().numpy(),
                                        m.mean(m.decode(zi)).cpu().numpy(),
                                        trainer.model.encoder_input(trainer.test_x[[b]]).cpu().numpy()]).reshape(-1, 8, 8)
        out["interp_labels"] = (int(trainer.test_y[a]), int(trainer.test_y[b]))
    else:
        # the decoder's mean map: lines of constant z mapped into the data plane
        pf = torch.linspace(0.01, 0.99, 60, device=trainer.device)
        lines = []
        step = max(1, n_grid // 9)
        for axis in ((0, 1) if D > 1 else (0,)):
            fine = quantile(dims[axis], pf)
            others = (ticks_y if axis == 0 else ticks)[::step] if D > 1 else centre[:1]
            for fixed in others:
                z = centre.repeat(fine.shape[0], 1)
                z[:, dims[axis]] = fine
                if D > 1:
                    z[:, dims[1 - axis]] = fixed
                lines.append((axis, m.mean(m.decode(z)).cpu().numpy()))
        out["mean_lines"] = lines
        mean, log_std = m.gaussian_params(m.decode(zs))
        xs = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=gen, device=trainer.device)
        out["model_samples"] = xs.cpu().numpy()
        out["data"] = trainer.test_x.cpu().numpy()
        out["box"] = trainer.dist.box
    return out

def page_figures(s: dict[str, Any], rows: list[dict], config: Any, entropy: float | None = None) -> viz.Figures:
    """The page's main figures, by name, each built when first used (the CLI's --png writes them all)."""
    b = {"manifold": lambda: manifold(s), "latent": lambda: latent_space(s),
         "elbo": lambda: elbo_curves(rows, entropy, per_example(config), s.get("eval_schedule")),
         "terms": lambda: terms_curves(rows, s.get("eval_schedule")),
         "iwae": lambda: iwae_vs_k(s, per_example(config)), "surgery": lambda: surgery(s),
         "kl_dims": lambda: kl_per_dim(s, standard=config.prior == "standard")}
    if s["images"]:
        b.update(recon=lambda: reconstructions(s), samples=lambda: prior_samples(s), interp=lambda: interpolation(s))
    return viz.Figures(b)


def figures(trainer: VAETrainer, interp: tuple[int, int] | None = None) -> viz.Figures:
    entropy = trainer.dist.entropy if trainer.dist is not None and trainer.dist.has_density else None
    return page_figures(snapshot(trainer, interp=interp), trainer.history.merged(), trainer.config, entropy)
