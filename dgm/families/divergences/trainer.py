"""The Divergences page's config and trainer: a simple q fitted to a fixed mixture p under each of seven
divergences at once, and the restarts that show where reverse KL lands.

    from dgm.families.divergences.trainer import DivergenceConfig, DivergenceTrainer
    t = DivergenceTrainer(DivergenceConfig(target="bimodal"), seed=0)
    t.step(500)
    t.final()["mean"], t.final()["reverse_kl"]

One trainer fits one q per objective in a single batched model (``QBatch``: Q rows, K components each),
so one Adam step moves all of them; Adam works per parameter, so this is the same as seven separate
Adam runs. MMD is fitted from samples (as a GAN critic or an IPM would be) and reported exactly on the
grid.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from dgm.core.config import knob
from dgm.core.train import Trainer
from dgm.families.divergences.model import QBatch, all_divergences, amari, grid_mmd2, kl, sample_mmd2
from dgm.families.divergences.targets import TARGETS, QuadGrid, Target, make_target, widen

#: every objective, in display order; the cross table uses the same names as its columns
OBJECTIVES = ("forward_kl", "reverse_kl", "js", "alpha", "hellinger", "tv", "mmd")
FAMILIES = ("gaussian", "diagonal", "mixture")


def _is1d(cfg) -> bool:
    return cfg.target == "mix1d"


@dataclass
class DivergenceConfig:
    target: str = knob("bimodal", "the fixed distribution p (mix1d: a 1D two-Gaussian mixture you can edit)",
                       label="target p", choices=TARGETS, group="Target p")
    spread: float = knob(1.0, "move p's modes this many times as far from their centre", label="mode spread",
                         lo=0.25, hi=2.0, step=0.05, group="Target p", show=lambda c: not _is1d(c))
    width: float = knob(1.0, "make p's modes this many times as wide", label="mode width ×", lo=0.5, hi=10.0,
                        log=True, group="Target p", show=lambda c: not _is1d(c))
    sep: float = knob(5.0, "distance between the two 1D modes", label="separation", lo=0.0, hi=8.0, step=0.1,
                      group="Target p", show=_is1d)
    sd1: float = knob(0.5, "std of the left mode", label="left width", lo=0.2, hi=2.0, step=0.05, group="Target p",
                      show=_is1d)
    sd2: float = knob(0.8, "std of the right mode", label="right width", lo=0.2, hi=2.0, step=0.05,
                      group="Target p", show=_is1d)
    w1: float = knob(0.6, "weight of the left mode", label="left weight", lo=0.05, hi=0.95, step=0.05,
                     group="Target p", show=_is1d)
    family: str = knob("gaussian", "the family of q", label="q family", choices=FAMILIES, group="Model q")
    k: int = knob(2, "components of a mixture q", label="components K", lo=1, hi=8, group="Model q",
                  show=lambda c: c.family == "mixture")
    objective: str = knob("reverse_kl", "the objective whose fit the command line reports (all are fitted)",
                          label="reported objective", choices=OBJECTIVES, group="Model q")
    alpha: float = knob(0.25, "alpha of the Amari divergence: 0 is reverse KL, 1 is forward KL",
                        label="α (Amari)", lo=-1.0, hi=2.0, step=0.05, group="Model q")
    bw: float = knob(1.0, "bandwidth of MMD's Gaussian kernel", label="MMD bandwidth", lo=0.1, hi=5.0, log=True,
                     group="Model q")
    lr: float = knob(0.05, "Adam learning rate", label="learning rate", lo=1e-3, hi=0.5, log=True,
                     group="Fitting")
    res: int = knob(96, "grid cells per axis in 2D (8 times as many points in 1D)", label="grid resolution",
                    choices=(32, 48, 64, 96, 128, 192, 256), group="Fitting")
    pad: float = knob(2.0, "the quadrature box is the plot box widened this many times", label="quadrature box ×",
                      choices=(1.0, 1.5, 2.0, 3.0), group="Fitting")
    starts: int = knob(2, "initialisations per objective (one broad, the others narrow); the best is shown",
                       label="starts per objective", lo=1, hi=4, group="Fitting")
    mc: bool = knob(False, "fit reverse KL from reparameterised samples of q instead of the grid",
                    label="reverse KL by Monte Carlo", group="Fitting")
    mc_n: int = knob(8, "samples per step for the Monte Carlo reverse KL", label="MC samples", lo=1, hi=1000,
                     log=True, group="Fitting", show=lambda c: c.mc)
    mmd_n: int = knob(200, "samples of p and of q per step for MMD", label="MMD samples", lo=16, hi=1000, log=True,
                      group="Fitting")


def target_of(cfg: DivergenceConfig) -> Target:
    return make_target(cfg.target, spread=cfg.spread, width=cfg.width, sep=cfg.sep, sd1=cfg.sd1, sd2=cfg.sd2,
                       w1=cfg.w1)


def quad_grid(cfg: DivergenceConfig, target: Target, device=None, dtype=torch.float32) -> QuadGrid:
    res = cfg.res * 8 if target.dim == 1 else cfg.res
    return QuadGrid.over(widen(target.box, cfg.pad), res, device=device, dtype=dtype)


def init_params(target: Target, n: int, k: int, generator: torch.Generator, broad: bool = True,
                dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """n initial q's: means (n, K, D) and log scales (n, K, D), around the centre of the plotting box.

    broad: near the centre (a tenth of the half width, at random) with a std of a third of the half
    width, so q starts overlapping every mode. Else narrow: anywhere in the middle of the box (0.4 of
    the half width, at random) with a std of an eighth of it, so q starts near one part of p.
    Mixture components start spread out (0.4 of the half width) with a quarter (narrow: an eighth)."""
    dev = generator.device
    box = torch.tensor(target.box, dtype=dtype, device=dev).reshape(-1, 2)  # (D, 2)
    centre, half = box.mean(1), 0.5 * (box[:, 1] - box[:, 0])
    spread = (0.1 if broad else 0.4) if k == 1 else 0.4
    width = (3.0 if k == 1 else 4.0) if broad else 8.0
    loc = centre + spread * half * torch.randn(n, k, target.dim, generator=generator, device=dev, dtype=dtype)
    log_scale = torch.log(half / width).expand(n, k, target.dim).clone()
    return loc, log_scale


class DivergenceTrainer(Trainer):
    """One q per objective (``objectives``, all of them by default), fitted side by side by Adam.

    Each objective is fitted from ``config.starts`` initialisations (one broad, the others narrow and
    scattered), all in one batch: row j * S + s of ``self.q`` is objective j's start s. The objectives
    other than forward KL have local optima (one per mode, or "cover everything"), so the reported fit
    of an objective is its best start under that objective, at every step."""

    eval_every = 0  # the cross table is computed in evaluate() at the end and in snapshot()

    def __init__(self, config: DivergenceConfig, seed: int = 0, device="auto",
                 objectives: Sequence[str] = OBJECTIVES):
        self.objectives = tuple(objectives)
        unknown = set(self.objectives) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"unknown objectives {sorted(unknown)}")
        super().__init__(config, seed, device)

    def reset(self) -> None:
        self.__init__(self.config, self.seed, self.device, self.objectives)

    def build(self):
        c = self.config
        self.target = target_of(c).to(self.device)
        self.grid = quad_grid(c, self.target, device=self.device)
        self.lp = torch.log_softmax(self.target.log_prob(self.grid.points), 0)  # (N,) log cell probabilities
        self.p = self.lp.exp()
        self.p_lp = (self.p * self.lp).sum()  # minus the entropy of the cell distribution
        # E k(x, x') for x, x' ~ p (on the grid): MMD's q-free term, so steps sample only the cross terms
        self.pkp = grid_mmd2(self.lp, torch.full_like(self.lp, -math.inf), self.grid, c.bw)
        init = torch.Generator(device=self.device).manual_seed(self.seed + 7919)
        k = c.k if c.family == "mixture" else 1
        self.starts = int(c.starts)
        starts = [init_params(self.target, 1, k, init, broad=s == 0) for s in range(self.starts)]
        loc = torch.cat([a for a, _ in starts]).repeat(len(self.objectives), 1, 1)  # (Q*S, K, D)
        log_scale = torch.cat([b for _, b in starts]).repeat(len(self.objectives), 1, 1)
        self.q = QBatch(loc, log_scale, full=c.family != "diagonal").to(self.device)
        self.opt = torch.optim.Adam([p for p in self.q.parameters() if p.requires_grad], lr=c.lr)
        self.row = {name: j for j, name in enumerate(self.objectives)}

    def rows(self, j: int) -> slice:
        """The rows of objective j's starts."""
        return slice(j * self.starts, (j + 1) * self.starts)

    def objective_values(self) -> dict[str, Tensor]:
        """Each objective on each of its own starts, (S,) per objective (differentiable).

        The same formulas as ``all_divergences``, arranged to share work across the batch:
        one log-softmax and one exp over all rows, and p's constants computed once."""
        c = self.config
        lq = torch.log_softmax(self.q.log_prob(self.grid.points), -1)  # (Q*S, N)
        q = lq.exp()
        lp, p = self.lp, self.p
        out: dict[str, Tensor] = {}
        for name, j in self.row.items():
            r = self.rows(j)
            q_j, lq_j = q[r], lq[r]  # (S, N)
            if name == "forward_kl":
                out[name] = self.p_lp - (p * lq_j).sum(-1)
            elif name == "reverse_kl":
                out[name] = self._mc_reverse_kl(r) if c.mc else (q_j * (lq_j - lp)).sum(-1)
            elif name == "js":
                lm = torch.logaddexp(lp, lq_j) - math.log(2.0)
                out[name] = 0.5 * (self.p_lp - (p * lm).sum(-1) + (q_j * (lq_j - lm)).sum(-1))
            elif name == "alpha":
                out[name] = amari(lp, lq_j, c.alpha)
            elif name == "hellinger":
                out[name] = 1.0 - torch.exp(0.5 * (lp + lq_j)).sum(-1)
            elif name == "tv":
                out[name] = 0.5 * (p - q_j).abs().sum(-1)
            elif name == "mmd":
                out[name] = self._sample_mmd(r)
        return out

    def _mc_reverse_kl(self, r: slice) -> Tensor:
        """E_q[log q(x) - log p(x)] from reparameterised draws (continuous densities, no grid)."""
        x, w = self.q.rsample(self.config.mc_n, self.gen, rows=r)  # (S, M, D), (S, M)
        log_q = self.q.log_prob(x, rows=r)  # (S, M)
        log_p = self.target.log_prob(x.reshape(-1, x.shape[-1])).reshape(log_q.shape)
        return (w * (log_q - log_p)).sum(-1)

    def _sample_mmd(self, r: slice) -> Tensor:
        n = self.config.mmd_n
        k = self.q.shape[1]
        xp = self.target.sample(n, self.gen)[None]  # (1, n, D), shared by the starts
        xq, w = self.q.rsample(max(n // k, 2), self.gen, rows=r)  # (S, M, D)
        return sample_mmd2(xp.expand(xq.shape[0], -1, -1), xq, w, self.config.bw, sxx=self.pkp)

    def train_step(self):
        vals = self.objective_values()
        loss = torch.cat(list(vals.values())).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {f"fit_{k}": v.detach().min() for k, v in vals.items()}

    # -- evaluation (exact on the grid, float64) -------------------------------------------------------
    @torch.no_grad()
    def exact(self) -> tuple[dict[str, list[float]], dict[str, int]]:
        """Every divergence for every row ({divergence: [value per row]}), and each objective's best row
        (its start with the lowest value of that objective)."""
        g64 = QuadGrid(self.grid.box, self.grid.shape, self.grid.points.double(),
                       [a.double() for a in self.grid.axes], self.grid.cell)
        lp = torch.log_softmax(self.target.log_prob(g64.points), 0)
        lq = torch.log_softmax(self.q.log_prob(g64.points).double(), -1)  # (Q*S, N)
        divs = {k: v.cpu().tolist() for k, v in all_divergences(lp, lq, g64, self.config.alpha, self.config.bw).items()}
        best = {}
        for name, j in self.row.items():
            r = range(j * self.starts, (j + 1) * self.starts)
            best[name] = min(r, key=lambda i: divs[name][i])
        return divs, best

    def table(self, exact=None) -> dict[str, dict[str, float]]:
        """{fitted objective: {divergence: value}}: every divergence between p and every fitted q."""
        divs, best = exact or self.exact()
        return {name: {d: divs[d][best[name]] for d in OBJECTIVES} for name in self.row}

    @torch.no_grad()
    def params(self, exact=None) -> dict[str, dict[str, Any]]:
        """{objective: {mean, cov, weights, means, covs, start}} of each fitted q (its best start; lists)."""
        _, best = exact or self.exact()
        mean, cov = self.q.moments()
        t = self.q.tril().double()
        covs = t @ t.transpose(-1, -2)
        w = self.q.log_weights().double().exp()
        out = {}
        for name, j in self.row.items():
            i = best[name]
            out[name] = {"mean": mean[i].cpu().tolist(), "cov": cov[i].cpu().tolist(),
                         "weights": w[i].cpu().tolist(), "means": self.q.loc[i].double().cpu().tolist(),
                         "covs": covs[i].cpu().tolist(), "start": i - j * self.starts}
        return out

    def evaluate(self):
        primary = self.config.objective if self.config.objective in self.row else self.objectives[0]
        ex = self.exact()
        tab = self.table(ex)
        par = self.params(ex)[primary]
        out: dict[str, Any] = dict(tab[primary])
        out.update(objective=primary, mean=par["mean"], cov=par["cov"])
        if self.q.shape[1] > 1:
            out.update(weights=par["weights"], means=par["means"], covs=par["covs"])
        out["grid"] = self.grid.describe()
        for name, row in tab.items():
            for d, v in row.items():
                out[f"table.{name}.{d}"] = v
        return out



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
    lp = torch.log_softmax(target.log_prob(grid.points), 0)
    g = torch.Generator(device=dev).manual_seed(int(seed) + 104729)
    box = torch.tensor(target.box, dtype=torch.float32, device=dev).reshape(-1, 2)
    lo, hi = box[:, 0], box[:, 1]
    loc = lo + (hi - lo) * torch.rand(n, 1, target.dim, generator=g, device=dev)
    _, log_scale = init_params(target, n, 1, g, broad=True)
    q = QBatch(loc, log_scale, full=cfg.family != "diagonal").to(dev)
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=lr)
    for _ in range(int(steps)):
        lq = torch.log_softmax(q.log_prob(grid.points), -1)
        loss = kl(lq, lp).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        lq = torch.log_softmax(q.log_prob(grid.points), -1)
        final_kl = kl(lq, lp)
        mean, cov = q.moments()
        mode = nearest_mode(mean.float(), target)
    counts: dict[int, int] = {}
    for m in mode.tolist():
        counts[m] = counts.get(m, 0) + 1
    return {"init": loc[:, 0].cpu().tolist(), "final": mean.cpu().tolist(), "cov": cov.cpu().tolist(),
            "mode": mode.cpu().tolist(), "counts": dict(sorted(counts.items())), "kl": final_kl.cpu().tolist(),
            "centers": target.means.cpu().tolist(), "weights": target.weights.cpu().tolist(), "steps": int(steps)}

