"""Measurements on request: quality against the number of network evaluations (NFE) for every sampler,
and against the guidance scale; each beside the same sampler run with the exact denoiser, which
separates the sampler's own error from the network's.

    res = nfe_sweep(trainer)            # {"rows": {sampler: [metrics by NFE]}, "exact": [...], "clouds": [...]}
    figs = sweep_figures(res, trainer)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from dgm.core import viz
from dgm.core.metrics import EVAL_SAMPLES, mode_stats
from dgm.families.diffusion.figures import clouds_row, image_grid
from dgm.families.diffusion.samplers import SAMPLERS
from dgm.families.diffusion.trainer import DiffusionTrainer

NFES = (1, 2, 5, 10, 20, 50, 100)
SCALES = (0.0, 1.0, 2.0, 4.0, 8.0)


def _metrics(trainer: DiffusionTrainer, x: torch.Tensor, mmd: bool = True) -> dict[str, float]:
    """Mode metrics where the data has modes; MMD² when asked or where it has none (it costs ~0.3 s)."""
    d = trainer.data
    out = dict(mode_stats(x, d.centers, d.std)) if d.centers is not None and d.std is not None else {}
    if mmd or not out:
        finite = x[torch.isfinite(x).all(1)]
        out["mmd"] = trainer._mmd.mmd2(finite) if finite.shape[0] > 1 else float("nan")
    return out


@torch.no_grad()
def nfe_sweep(trainer: DiffusionTrainer, nfes=NFES, samplers=SAMPLERS, n: int = EVAL_SAMPLES) -> dict[str, Any]:
    """Mode metrics (MMD² where there are no modes) of n samples at each NFE for each sampler (the same noise for all), the run's
    sampler with the exact denoiser too, and sample clouds (image rows for the digits) of the run's sampler."""
    own = trainer.runtime.sampler
    if trainer.images:
        rows = []
        for k in nfes:
            x, used, _ = trainer.generate(8, trainer.eval_generator(9), nfe=k)
            rows.append((used, x))
        return {"images": rows, "sampler": own, "iteration": trainer.iteration}
    res: dict[str, Any] = {"rows": {}, "exact": [], "clouds": [], "sampler": own, "iteration": trainer.iteration}
    for s in samplers:
        for k in nfes:
            x, used, _ = trainer.generate(n, trainer.eval_generator(9), sampler=s, nfe=k)
            res["rows"].setdefault(s, []).append({"nfe": used, **_metrics(trainer, x, mmd=False)})
            if s == own:
                res["clouds"].append((f"{used} NFE", x[:600].cpu()))
            if s == own and trainer.mixture is not None:
                xe, used_e, _ = trainer.generate(n, trainer.eval_generator(9), exact=True, sampler=s, nfe=k)
                res["exact"].append({"nfe": used_e, **_metrics(trainer, xe, mmd=False)})
    return res


@torch.no_grad()
def guidance_sweep(trainer: DiffusionTrainer, scales=SCALES, n: int = EVAL_SAMPLES) -> dict[str, Any]:
    """The same metrics against the guidance scale, for the network and for the exact conditional scores."""
    res: dict[str, Any] = {"model": [], "exact": [], "clouds": [], "sampler": trainer.runtime.sampler,
                           "nfe": trainer.runtime.nfe, "iteration": trainer.iteration}
    for w in scales:
        x, _, _ = trainer.generate(n, trainer.eval_generator(10), guidance=w)
        res["model"].append({"scale": w, **_metrics(trainer, x)})
        res["clouds"].append((f"scale {w:g}", x[:600].cpu()))
        xe, _, _ = trainer.generate(n, trainer.eval_generator(10), guidance=w, exact=True)
        res["exact"].append({"scale": w, **_metrics(trainer, xe)})
    return res


def _lines(series: list[tuple[str, list[dict], str, str | None]], x: str, y: str, title: str, ytitle: str,
           log_x: bool = False, log_y: bool = False, scale: float = 1.0, height: int = 300) -> go.Figure:
    traces = []
    for name, rows, color, dash in series:
        pts = np.array([(r[x], scale * r[y]) for r in rows if y in r and np.isfinite(r[y])], np.float64).reshape(-1, 2)
        traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines+markers", name=name, marker={"size": 5},
                                 line={"color": color, "width": 2, "dash": dash}))
    xaxis = {"title": {"NFE": "NFE (network evaluations)"}.get(x.upper(), x), "type": "log" if log_x else "linear"}
    if log_x:
        xaxis["tickvals"] = list(NFES)
    lay = viz.layout(title, height, xaxis=xaxis, yaxis={"title": ytitle, "type": "log" if log_y else "linear"})
    return go.Figure(data=traces, layout=lay)


def sweep_figures(res: dict[str, Any], trainer: DiffusionTrainer) -> dict[str, go.Figure]:
    """NFE sweep: high quality and mode KL (or MMD²) against NFE, and the clouds; guidance sweep: high quality,
    mode KL and MMD² against the scale, and the clouds."""
    if "images" in res:
        imgs = torch.cat([x.cpu() for _, x in res["images"]])
        label = ", ".join(str(u) for u, _ in res["images"])
        return {"nfe_images": image_grid(imgs, 8, f"{res['sampler']}: one row per NFE ({label})", height=400)}
    box, data = trainer.data.box, trainer.heldout[:600].cpu()
    has_modes = trainer.data.centers is not None and trainer.data.std is not None
    if "rows" in res:
        own = res["sampler"]
        series = [(s, r, viz.PALETTE[i], None) for i, (s, r) in enumerate(res["rows"].items())]
        if res["exact"]:
            series.append((f"{own}, exact denoiser", res["exact"], "#555555", "dash"))
        if has_modes:
            out = {"nfe_quality": _lines(series, "nfe", "high_quality", "High-quality samples against NFE",
                                         "high quality %", log_x=True, scale=100),
                   "nfe_kl": _lines(series, "nfe", "mode_kl", "Mode KL against NFE", "mode KL", log_x=True)}
        else:
            out = {"nfe_mmd": _lines(series, "nfe", "mmd", "MMD² against NFE", "MMD²", log_x=True, log_y=True)}
        return {**out, "nfe_clouds": clouds_row(res["clouds"], box, data)}
    series = [("network", res["model"], viz.PALETTE[0], None), ("exact scores", res["exact"], "#555555", "dash")]
    out = {"guidance_mmd": _lines(series, "scale", "mmd", "MMD² against the guidance scale", "MMD²", log_y=True),
           "guidance_clouds": clouds_row(res["clouds"], box, data)}
    if has_modes:
        out["guidance_quality"] = _lines(series, "scale", "high_quality", "High-quality samples against the scale",
                                         "high quality %", scale=100)
        out["guidance_kl"] = _lines(series, "scale", "mode_kl", "Mode KL against the scale", "mode KL")
    return out
