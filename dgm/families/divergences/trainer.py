"""The Divergences page's config and trainer: a simple q fitted to a fixed mixture p under each of seven
divergences at once, and the restarts that show where reverse KL lands.

    from dgm.families.divergences.trainer import DivergenceConfig, DivergenceTrainer
    t = DivergenceTrainer(DivergenceConfig(target="bimodal"), seed=0)
    t.step(500)
    t.final()["mean"], t.final()["reverse_kl"]

One trainer fits one q per objective in a single batched model (``QBatch``: Q rows, K components each),
so one Adam step moves all of them; Adam works per parameter, so this is the same as seven separate
Adam runs. The divergences are quadratures on a grid refined around p's narrow modes (``targets.QuadGrid``);
``exact`` reports each with its error estimate, the change from halving the cells. MMD is fitted from
samples (as a GAN critic or an IPM would be) and reported exactly (in closed form); W1 (``w1_column``) is
estimated from samples by exact optimal transport.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from dgm.core.config import knob
from dgm.core.metrics import wasserstein1
from dgm.core.train import Trainer
from dgm.families.divergences.model import (
    QBatch, alpha_finite, divergence, mixture_kernel_mean, sample_mmd2,
)
from dgm.families.divergences.targets import TARGETS, QuadGrid, Spots, Target, make_target, widen

#: every objective, in display order; the cross table uses the same names as its columns
OBJECTIVES = ("forward_kl", "reverse_kl", "js", "alpha", "hellinger", "tv", "mmd")
GRID_DIVERGENCES = ("forward_kl", "reverse_kl", "js", "alpha", "hellinger", "tv")  # by quadrature
MAX_ERROR = 0.01  # a value whose estimated quadrature error exceeds this fraction of it is not shown
TINY = 1e-9  # ... unless value and error are both below this (a fit that matches p)
W1_N = 500  # samples of p and of each fitted q for the W1 column (2D)
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
    res: int = knob(96, "grid cells per axis in 2D (8 times as many in 1D); cells near a mode narrower than "
                    "twice a cell are cut finer, to half the mode's std", label="grid resolution",
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
    return QuadGrid.over(widen(target.box, cfg.pad), res, target, device=device, dtype=dtype)


def p_kernel_mean(target: Target, bandwidth: float) -> Tensor:
    """E k(x, x') for x, x' ~ p: MMD's q-free term, in closed form (float64)."""
    t = target.to("cpu")
    lw = t.weights.double().log()
    return mixture_kernel_mean(t.means.double(), t.covs.double(), lw, t.means.double(), t.covs.double(), lw,
                               bandwidth)


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
        self.lp = self.target.log_prob(self.grid.points)  # (N,) exact log density at the nodes
        # E k(x, x') for x, x' ~ p: MMD's q-free term, so steps sample only the cross terms
        self.pkp = p_kernel_mean(self.target, c.bw).to(self.device, torch.float32)
        self._w1: tuple[int, dict[str, float]] | None = None
        self._exact: tuple[tuple, tuple] | None = None  # the last ``exact`` and what it was computed for
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
        """Each objective on each of its own starts, (S,) per objective (differentiable): the quadrature
        on the grid (``model.divergence``), or MMD from samples, or reverse KL by Monte Carlo."""
        c = self.config
        lq = self.q.log_prob(self.grid.points)  # (Q*S, N)
        # q normalised on the grid: a q narrower than the cells around it cannot hide its mass between the
        # nodes (where the midpoint rule would count none of it); for a q the grid resolves this changes nothing
        lq = lq - torch.logsumexp(lq + self.grid.log_vol, -1, keepdim=True)
        out: dict[str, Tensor] = {}
        for name, j in self.row.items():
            r = self.rows(j)
            if name == "mmd":
                out[name] = self._sample_mmd(r)
            elif name == "reverse_kl" and c.mc:
                out[name] = self._mc_reverse_kl(r)
            else:
                out[name] = divergence(self.grid.log_vol, self.lp, lq[r], name, c.alpha)
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

    # -- evaluation (quadrature in float64, with its error estimate) ------------------------------------
    @torch.no_grad()
    def exact(self, refine: bool = True) -> tuple[dict[str, list[float]], dict[str, int], dict[str, list[float]]]:
        """Every divergence for every row ({divergence: [value per row]}), each objective's best row (its
        start with the lowest value of that objective), and the error estimate of every value: the change
        between the grid and the same grid with cells twice as wide, over 3 (the midpoint rule's error is
        O(h^2), so the coarse grid's is about 4 times the fine one's: Richardson's estimate), or infinite
        where the grid misses more than MAX_ERROR of q's mass (a q narrower than the cells around it); MMD's
        is 0, it is exact. With ``refine``, rows of q narrower than the grid's cells around them are computed
        again on grids refined around their own components (a few times the work: once a second on the page,
        not at every frame)."""
        # the same q's values are asked for more than once a frame (the figures, the lesson's watch): kept until q
        # changes (its parameters' in-place version counters move with every optimiser step and every load)
        key = (refine, self.iteration, tuple((id(p), p._version) for p in self.q.parameters()))
        if self._exact is not None and self._exact[0] == key:
            return self._exact[1]
        divs: dict[str, list[float]] = {}
        errs: dict[str, list[float]] = {}
        grids = (self.grid.to(torch.float64), self.grid.coarse(self.target).to(torch.float64))
        v, e = self._quadrature(grids, slice(None))
        # rows the grid does not resolve (a q narrower than the cells it sits on): again on grids refined
        # around their own components too
        bad = (~torch.isfinite(e) | (e > MAX_ERROR * v.abs())).any(0).nonzero()[:, 0]
        if refine and len(bad):
            d = self.target.dim
            comps = Spots(torch.cat([self.target.means.double().cpu(), self.q.loc[bad].double().reshape(-1, d).cpu()]),
                          torch.cat([self.target.covs.double().cpu(), self._q_covs()[bad].reshape(-1, d, d).cpu()]))
            fine = QuadGrid.over(self.grid.box, self.grid.shape[0], comps, self.device, torch.float64)
            v[:, bad], e[:, bad] = self._quadrature((fine, fine.coarse(comps)), bad)
        for k, name in enumerate(GRID_DIVERGENCES):
            divs[name], errs[name] = v[k].cpu().tolist(), e[k].cpu().tolist()
        divs["mmd"] = self.mmd_exact().cpu().tolist()
        errs["mmd"] = [0.0] * len(divs["mmd"])
        best = {}
        for name, j in self.row.items():
            r = range(j * self.starts, (j + 1) * self.starts)
            best[name] = min(r, key=lambda i: divs[name][i])
        self._exact = (key, (divs, best, errs))
        return self._exact[1]

    def _quadrature(self, grids: tuple[QuadGrid, QuadGrid], rows) -> tuple[Tensor, Tensor]:
        """Every grid divergence of the given rows of q (value, error estimate), each (len(GRID_DIVERGENCES),
        rows): the fine grid's value, and the change from the coarse grid over 3 (the midpoint rule's error is
        O(h^2), Richardson's estimate), infinite where the fine grid misses more than MAX_ERROR of q's mass."""
        c, vals = self.config, []
        for g in grids:
            lp = self.target.log_prob(g.points)
            lq = self.q.log_prob(g.points).double()[rows]  # (rows, N)
            vals.append(torch.stack([divergence(g.log_vol, lp, lq, d, c.alpha) for d in GRID_DIVERGENCES]))
            if g is grids[0]:  # q's mass on the grid: off by more than MAX_ERROR, the grid misses part of q
                missed = (torch.logsumexp(lq + g.log_vol, -1).exp() - 1).abs() > MAX_ERROR
        v, e = vals[0], (vals[0] - vals[1]).abs() / 3
        e = torch.where(missed, torch.full_like(e, math.inf), e)
        if "alpha" in GRID_DIVERGENCES:
            k = GRID_DIVERGENCES.index("alpha")
            finite = alpha_finite(self.target.covs, self._q_covs()[rows], c.alpha)
            v[k] = torch.where(finite, v[k], torch.full_like(v[k], math.inf))
            e[k] = torch.where(finite, e[k], torch.zeros_like(e[k]))
        return v, e

    def _q_covs(self) -> Tensor:
        t = self.q.tril().double()
        return t @ t.transpose(-1, -2)  # (Q*S, K, D, D)

    @torch.no_grad()
    def mmd_exact(self) -> Tensor:
        """MMD^2 between p and every row of q, in closed form (float64): (Q*S,)."""
        t, bw = self.target, self.config.bw
        loc, covs, lw = self.q.loc.double(), self._q_covs(), self.q.log_weights().double()
        pl, pc, pw = t.means.double()[None], t.covs.double()[None], t.weights.double().log()[None]
        kqq = mixture_kernel_mean(loc, covs, lw, loc, covs, lw, bw)
        kpq = mixture_kernel_mean(pl, pc, pw, loc, covs, lw, bw)
        return (self.pkp.double() + kqq - 2 * kpq).clamp_min(0.0)

    @staticmethod
    def shown(value: float, err: float) -> bool:
        """Is the value's estimated error within MAX_ERROR of it (or both below TINY)? Else it is not shown."""
        if math.isinf(value):
            return not math.isinf(err)
        return err <= MAX_ERROR * abs(value) or (abs(value) < TINY and err < TINY)

    @torch.no_grad()
    def w1_column(self, best: dict[str, int]) -> dict[str, float]:
        """W1 between p and each objective's fitted q: in 1D exactly, the integral of |F_p - F_q| on the grid
        (F the CDFs); in 2D by exact optimal transport between W1_N samples of p and W1_N of q (fixed draws,
        so a state gives one number), with "floor": two sets of W1_N samples of p. Cached per iteration."""
        if self._w1 is not None and self._w1[0] == self.iteration:
            return self._w1[1]
        t = self.target
        out: dict[str, float] = {}
        if t.dim == 1:
            lo, hi = self.grid.box
            xs = torch.linspace(lo, hi, 20001, dtype=torch.float64, device=self.device)
            cdf = lambda m, s, w: (w * 0.5 * torch.erfc(-(xs[:, None] - m) / (s * math.sqrt(2)))).sum(1)  # noqa: E731
            fp = cdf(t.means[:, 0].double(), t.scale_tril[:, 0, 0].double(), t.weights.double())
            for name, i in best.items():
                fq = cdf(self.q.loc[i, :, 0].double(), self.q.tril()[i, :, 0, 0].double(),
                         self.q.log_weights()[i].double().exp())
                out[name] = float(torch.trapezoid((fp - fq).abs(), xs))
        else:
            g = self.eval_generator(3)
            xp, xp2 = t.sample(W1_N, g), t.sample(W1_N, g)
            out["floor"] = wasserstein1(xp2, xp)
            for name, i in best.items():
                xq, w = self.q.rsample(W1_N, g, rows=slice(i, i + 1))  # (1, K*n, D) and weights
                pick = torch.multinomial(w[0].double(), W1_N, replacement=True, generator=g)
                out[name] = wasserstein1(xq[0, pick], xp)
        self._w1 = (self.iteration, out)
        return out

    def table(self, exact=None) -> dict[str, dict[str, float]]:
        """{fitted objective: {divergence: value}}: every divergence between p and every fitted q."""
        divs, best, _ = exact or self.exact()
        return {name: {d: divs[d][best[name]] for d in OBJECTIVES} for name in self.row}

    def table_errors(self, exact=None) -> dict[str, dict[str, float]]:
        """{fitted objective: {divergence: estimated quadrature error}}, as ``table``."""
        _, best, errs = exact or self.exact()
        return {name: {d: errs[d][best[name]] for d in OBJECTIVES} for name in self.row}

    @torch.no_grad()
    def params(self, exact=None) -> dict[str, dict[str, Any]]:
        """{objective: {mean, cov, weights, means, covs, start}} of each fitted q (its best start; lists)."""
        _, best, _ = exact or self.exact()
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
        tab, err = self.table(ex), self.table_errors(ex)
        par = self.params(ex)[primary]
        out: dict[str, Any] = dict(tab[primary])
        out.update({f"{d}_err": e for d, e in err[primary].items()})
        out.update(objective=primary, mean=par["mean"], cov=par["cov"])
        if self.q.shape[1] > 1:
            out.update(weights=par["weights"], means=par["means"], covs=par["covs"])
        out["grid"] = self.grid.describe()
        for name, row in tab.items():
            for d, v in row.items():
                out[f"table.{name}.{d}"] = v
                out[f"table.{name}.{d}_err"] = err[name][d]
        return out
