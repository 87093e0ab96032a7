"""Fits beyond the page's live run, on the same quadrature: reverse KL from many starts (where does it
land?) and every objective across separations of a 1D two-mode p (where does it switch from covering
to seeking?)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import torch
from torch import Tensor

from dgm.families.divergences.model import QBatch, divergence, mixture_kernel_mean
from dgm.families.divergences.targets import QuadGrid, Target, make_target
from dgm.families.divergences.trainer import OBJECTIVES, DivergenceConfig, init_params, quad_grid, target_of


# ---- restarts: where does reverse KL land? -------------------------------------------------------

def nearest_mode(means: Tensor, target: Target, tol: float = 3.0) -> Tensor:
    """Index of the mode of p nearest to each point (N, D), or -1 ("between modes") when it is farther
    than ``tol`` of that mode's largest std away."""
    d = torch.cdist(means.double(), target.means.double().to(means.device))  # (N, M)
    dmin, idx = d.min(1)
    far = dmin > tol * target.mode_std.double().to(means.device)[idx]
    return torch.where(far, torch.full_like(idx, -1), idx)


def restarts(cfg: DivergenceConfig, n: int = 64, steps: int = 300, seed: int = 0, device="cpu", lr: float = 0.1,
             res: int | None = 64) -> dict[str, Any]:
    """Fit reverse KL (on the grid) from ``n`` random starts at once and report where each lands.

    The starts are uniform over the plotting box with the usual initial width; the family is the
    config's (a Gaussian for a mixture family, so that "which mode" has one answer). The grid is the
    config's at ``res`` cells per axis (coarser than the page's by default: many runs, one answer each),
    and Adam's learning rate is ``lr``, larger than the page's, so that runs starting in p's far tails
    arrive within the budget. Returns numpy-free
    lists: init (n, D), final (n, D), mode (n,) index into p's modes or -1, counts {mode: runs}, kl (n,)."""
    dev = torch.device(device)
    target = target_of(cfg).to(dev)
    if res is not None:
        cfg = dataclasses.replace(cfg, res=int(res))
    grid = quad_grid(cfg, target, device=dev)
    lp = target.log_prob(grid.points)
    g = torch.Generator(device=dev).manual_seed(int(seed) + 104729)
    box = torch.tensor(target.box, dtype=torch.float32, device=dev).reshape(-1, 2)
    lo, hi = box[:, 0], box[:, 1]
    loc = lo + (hi - lo) * torch.rand(n, 1, target.dim, generator=g, device=dev)
    _, log_scale = init_params(target, n, 1, g, broad=True)
    q = QBatch(loc, log_scale, full=cfg.family != "diagonal").to(dev)
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=lr)
    for _ in range(int(steps)):
        loss = divergence(grid.log_vol, lp, q.log_prob(grid.points), "reverse_kl").sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final_kl = divergence(grid.log_vol, lp, q.log_prob(grid.points), "reverse_kl")
        mean, cov = q.moments()
        mode = nearest_mode(mean.float(), target)
    counts: dict[int, int] = {}
    for m in mode.tolist():
        counts[m] = counts.get(m, 0) + 1
    return {"init": loc[:, 0].cpu().tolist(), "final": mean.cpu().tolist(), "cov": cov.cpu().tolist(),
            "mode": mode.cpu().tolist(), "counts": dict(sorted(counts.items())), "kl": final_kl.cpu().tolist(),
            "centers": target.means.cpu().tolist(), "weights": target.weights.cpu().tolist(), "steps": int(steps)}



# ---- separation scan: where does each objective switch from covering to seeking? -----------------

SCAN_SEPS = tuple(float(x) for x in range(0, 21))  # separations, in units of the modes' mean std


@torch.no_grad()
def _classify(mean: Tensor, std: Tensor, centers: Tensor, sds: Tensor) -> Tensor:
    """True where a fitted 1D Gaussian seeks: its mean within 1.5 std of a mode (a covering fit sits between
    the modes, at their weighted centre or near it)."""
    return ((mean[:, None] - centers).abs() < 1.5 * sds).any(1)


def separation_scan(cfg: DivergenceConfig, seps: Sequence[float] = SCAN_SEPS, steps: int = 300, lr: float = 0.05,
                    objectives: Sequence[str] = OBJECTIVES) -> dict[str, Any]:
    """Fit a Gaussian q under each objective to the 1D two-mode p of ``cfg`` (its widths, weight, alpha and
    MMD bandwidth) at each separation ``seps`` (in units of the mean of the two stds), from three starts
    (covering: p's mean and std; seeking: each mode), keeping the best. MMD is fitted in closed form here.
    Returns the fitted means and stds per objective, whether each fit seeks a mode, and the separation of
    the switch (the first separation from which every fit seeks; None if it never does)."""
    unit = 0.5 * (cfg.sd1 + cfg.sd2)
    seps = [float(s) for s in seps]
    targets = [make_target("mix1d", sep=s * unit, sd1=cfg.sd1, sd2=cfg.sd2, w1=cfg.w1) for s in seps]
    half = 2 * (0.5 * max(seps) * unit + 6 * max(cfg.sd1, cfg.sd2))
    grid = QuadGrid.over((-half, half), int(math.ceil(2 * half / (0.25 * min(cfg.sd1, cfg.sd2)))),
                         dtype=torch.float64)
    lp = torch.stack([t.log_prob(grid.points.double()) for t in targets])  # (S, N)
    locs, scales = [], []
    for t in targets:
        m, c = t.moments()
        locs += [m[0], t.means[0, 0].double(), t.means[1, 0].double()]
        scales += [c[0, 0].sqrt(), t.scale_tril[0, 0, 0].double(), t.scale_tril[1, 0, 0].double()]
    n_obj, n_sep = len(objectives), len(seps)
    loc = torch.stack(locs).reshape(1, n_sep * 3, 1, 1).repeat(n_obj, 1, 1, 1).reshape(-1, 1, 1)
    log_scale = torch.stack(scales).log().reshape(1, n_sep * 3, 1, 1).repeat(n_obj, 1, 1, 1).reshape(-1, 1, 1)
    q = QBatch(loc, log_scale)
    opt = torch.optim.Adam([q.loc, q.log_scale], lr=lr)
    lp_rows = lp.repeat_interleave(3, 0).repeat(n_obj, 1)  # (O*S*3, N)
    pm = torch.stack([t.means.double() for t in targets]).repeat_interleave(3, 0)  # (S*3, 2, 1)
    pc = torch.stack([t.covs.double() for t in targets]).repeat_interleave(3, 0)
    pw = torch.stack([t.weights.double().log() for t in targets]).repeat_interleave(3, 0)
    pkp = mixture_kernel_mean(pm, pc, pw, pm, pc, pw, cfg.bw)

    def values() -> Tensor:
        lq = q.log_prob(grid.points)  # (R, N)
        out = []
        for j, name in enumerate(objectives):
            r = slice(j * n_sep * 3, (j + 1) * n_sep * 3)
            if name == "mmd":
                qc = (q.log_scale[r].exp() ** 2)[..., None]  # (S*3, 1, 1, 1)
                ql, qw = q.loc[r], torch.zeros(n_sep * 3, 1, dtype=torch.float64)
                out.append(pkp + mixture_kernel_mean(ql, qc, qw, ql, qc, qw, cfg.bw)
                           - 2 * mixture_kernel_mean(pm, pc, pw, ql, qc, qw, cfg.bw))
            else:
                v = divergence(grid.log_vol, lp_rows[r], lq[r], name, cfg.alpha)
                # beyond the grid p is 0 and F(0, q) = c q: add c times q's mass out there (exact), so that
                # a very wide q does not look cheap by leaving the grid
                c = {"forward_kl": 1.0, "js": 0.5 * math.log(2), "hellinger": 0.5, "tv": 0.5,
                     "alpha": 1 / cfg.alpha if cfg.alpha > 0 else 0.0}.get(name, 0.0)
                if c:
                    m, sd = q.loc[r][:, 0, 0], q.log_scale[r].exp()[:, 0, 0]
                    z = lambda x: (x - m) / (sd * math.sqrt(2))  # noqa: E731
                    v = v + c * 0.5 * (torch.erfc(-z(-half)) + torch.erfc(z(half)))
                out.append(v)
        return torch.cat(out)

    for _ in range(int(steps)):
        v = values()
        opt.zero_grad(set_to_none=True)
        v.sum().backward()
        opt.step()
    with torch.no_grad():
        v = values().reshape(n_obj, n_sep, 3)
        pick = v.argmin(-1)  # (O, S) the best of the three starts
        mean = q.loc.reshape(n_obj, n_sep, 3).gather(-1, pick[..., None])[..., 0]
        std = q.log_scale.exp().reshape(n_obj, n_sep, 3).gather(-1, pick[..., None])[..., 0]
        centers = torch.stack([t.means[:, 0].double() for t in targets])  # (S, 2)
        sds = torch.tensor([cfg.sd1, cfg.sd2], dtype=torch.float64)
        out: dict[str, Any] = {"seps": seps, "unit": unit, "objectives": list(objectives), "fits": {}}
        for j, name in enumerate(objectives):
            seeks = [bool(_classify(mean[j, i:i + 1], std[j, i:i + 1], centers[i], sds)[0]) for i in range(n_sep)]
            switch = next((seps[i] for i in range(n_sep) if all(seeks[i:])), None)
            out["fits"][name] = {"mean": (mean[j] / unit).tolist(), "std": (std[j] / unit).tolist(),
                                 "seeks": seeks, "switch": switch}
    return out
