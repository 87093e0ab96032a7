"""The flows page's config and trainer: a Flow fitted to a 2D target by forward KL (maximum likelihood
on samples of p) or reverse KL (samples of q and p's unnormalised density).

    flow = build_flow(FlowConfig(flow="realnvp", layers=8))
    x, log_q = flow.sample_with_log_prob(500, generator)
    flow.log_prob(x)   # the same numbers, the other way round
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dgm.core.data
from dgm.core.config import knob
from dgm.core.metrics import EVAL_SAMPLES, W1_SAMPLES, Grid, grid_kl, mode_stats, wasserstein1
from dgm.core.train import Trainer
from dgm.families.flows.layers import IAF, MAF, AffineCoupling, Planar, Radial, SplineCoupling
from dgm.families.flows.mixing import ActNorm, LULinear, Permute, Rotation
from dgm.families.flows.model import Block, Flow

FLOWS = ("planar", "radial", "nice", "realnvp", "spline", "maf", "iaf")
OBJECTIVES = ("forward_kl", "reverse_kl")
MIXING = ("swap", "rotation", "lu")
#: x -> z (density of given points) and z -> x (sampling with density): how each layer computes them
DIRECTION_COST = {
    "planar": ("iterative (a root find per layer)", "one pass"),
    "radial": ("a quadratic per layer", "one pass"),
    "nice": ("one pass", "one pass"),
    "realnvp": ("one pass", "one pass"),
    "spline": ("one pass", "one pass"),
    "maf": ("one pass", "D passes (one per dimension)"),
    "iaf": ("D passes (one per dimension)", "one pass"),
}
_COUPLING = ("nice", "realnvp", "spline", "maf", "iaf")


def reverse_ok(name: str) -> bool:
    """Can reverse KL target this distribution? It needs a log density finite everywhere (energies
    and Gaussian mixtures; not the checkerboard, whose density is 0 off the squares)."""
    return name in dgm.core.data.ENERGIES or name in dgm.core.data.MIXTURES


@dataclass
class FlowConfig:
    data: str = knob("8gaussians", "the target distribution", choices=(*dgm.core.data.names(), "custom"), group="Data",
                     label="target")
    objective: str = knob("forward_kl", "forward_kl: maximum likelihood on samples of p (mode covering); "
                          "reverse_kl: minimise KL(q||p) with samples of q and p's unnormalised density "
                          "(mode seeking; energies U1-U4 and Gaussian mixtures only)",
                          choices=OBJECTIVES, group="Data", label="objective")
    flow: str = knob("realnvp", "the layer type", choices=FLOWS, label="flow layer")
    layers: int = knob(12, "number of flow layers K", lo=1, hi=64, step=1, label="layers K")
    hidden: int = knob(64, "width of each conditioner network (coupling, spline, MADE)",
                       choices=(16, 32, 64, 128, 256), label="hidden width",
                       show=lambda c: c.flow in _COUPLING)
    bins: int = knob(8, "spline bins per dimension", choices=(4, 8, 16), label="spline bins",
                     show=lambda c: c.flow == "spline")
    mixing: str = knob("lu", "what mixes the dimensions between layers: swap the axes, a fixed random "
                       "rotation, or a learned invertible linear map (LU)", choices=MIXING,
                       label="mixing between layers", show=lambda c: c.flow in _COUPLING)
    actnorm: bool = knob(True, "an ActNorm layer (per-dimension affine, data-initialised) in each block",
                         label="ActNorm", show=lambda c: c.flow in _COUPLING)
    lr: float = knob(5e-3, "Adam learning rate", lo=1e-4, hi=5e-2, log=True, group="Training",
                     label="learning rate")
    halflife: int = knob(1500, "halve the learning rate every this many steps, down to 1/20 of it (0: constant)",
                         lo=0, hi=20000, step=250, group="Training", label="learning-rate half-life")
    batch: int = knob(1024, "samples per step (of p for forward KL, of q for reverse KL)", lo=32, hi=4096,
                      step=32, group="Training", label="batch")
    anneal: bool = knob(True, "reverse KL: weight log p by beta rising from 0.01 to 1 (Rezende & Mohamed)",
                        group="Training", label="anneal beta", show=lambda c: c.objective == "reverse_kl")
    anneal_steps: int = knob(1000, "steps for beta to reach 1", lo=100, hi=10000, step=100, group="Training",
                             label="annealing steps", show=lambda c: c.objective == "reverse_kl" and c.anneal)


def build_flow(c: FlowConfig, dim: int = 2) -> Flow:
    """The flow a config describes (random init under the caller's RNG)."""
    blocks: list[nn.Module] = []
    mask = (torch.arange(dim) < dim // 2).float()  # with swap/rotation between blocks, one mask suffices
    for k in range(c.layers):
        if c.flow == "planar":
            blocks.append(Planar(dim))
            continue
        if c.flow == "radial":
            blocks.append(Radial(dim))
            continue
        core = {
            "nice": lambda: AffineCoupling(dim, mask, c.hidden, additive=True),
            "realnvp": lambda: AffineCoupling(dim, mask, c.hidden),
            "spline": lambda: SplineCoupling(dim, mask, c.hidden, c.bins),
            "maf": lambda: MAF(dim, c.hidden),
            "iaf": lambda: IAF(dim, c.hidden),
        }[c.flow]()
        parts = [core]
        if c.actnorm:
            parts.append(ActNorm(dim))
        if k < c.layers - 1 or not c.actnorm:
            mix = {"swap": lambda: Permute(torch.arange(dim - 1, -1, -1)), "rotation": lambda: Rotation(dim),
                   "lu": lambda: LULinear(dim)}[c.mixing]()
            parts.append(mix)
        blocks.append(Block(parts))
    if c.flow == "nice" and not c.actnorm:
        blocks.append(Block([ActNorm(dim)]))  # NICE's final diagonal scaling: the only volume change
    return Flow(blocks, dim)


MODE_SHARE = 0.01  # a mode is covered when it holds more than 1% of q's samples: a flow's tails reach every mode
CLIP = 100.0  # gradient-norm clipping (a guard against the rare huge step, not a tuning knob)
WARMUP = 100  # steps of linear learning-rate warm-up (large early steps can tear a flow apart)


def lr_factor(step: int, halflife: int = 0) -> float:
    """Learning-rate multiplier: a linear warm-up, then halving every ``halflife`` steps down to 1/20."""
    warm = min(1.0, (step + 1) / WARMUP)
    return warm * (max(0.5 ** (step / halflife), 0.05) if halflife else 1.0)


WALL = 0.05  # width scale of the soft wall around an energy's box


def box_wall(x: Tensor, box, width: float = WALL) -> Tensor:
    """A steep quadratic energy outside ``box`` (0 inside). U2-U4 of Rezende & Mohamed do not decay along
    x1, so exp(-U) cannot be normalised on the plane and reverse KL would spread q without end; like the
    sampler and the evaluation grid, the target is the energy restricted to its box (as normflows does)."""
    xmin, xmax, ymin, ymax = box
    lo = torch.tensor([xmin, ymin], device=x.device, dtype=x.dtype)
    hi = torch.tensor([xmax, ymax], device=x.device, dtype=x.dtype)
    out = F.relu(lo - x) + F.relu(x - hi)
    return 0.5 * ((out / width) ** 2).sum(1)


@functools.cache
def true_entropy(name: str) -> float | None:
    """The target's differential entropy in nats: exact where p is (dgm.core.data), and for the energies
    U1-U4 the entropy of exp(-U) normalised on its box (the distribution their sampler draws from)."""
    p = dgm.core.data.get(name)
    if p.entropy is not None:
        return p.entropy
    if name in dgm.core.data.ENERGIES:
        grid = Grid.over(p.box, 600, dtype=torch.float64)
        lp = grid.normalize(p.unnormalized_log_prob(grid.points).double())
        return float(-(lp.exp() * lp).sum() * grid.cell_area)
    return None


class FlowTrainer(Trainer):
    """Fits a ``Flow`` to ``config.data`` by forward KL (samples of p) or reverse KL (p's log density)."""

    eval_every = 100
    slow_eval = True  # exact KLs on a 150² grid, W1 and the modes: 0.35 s, longer than ten steps
    GRID_RES = 150  # resolution of the grid on which KL(p||q) and KL(q||p) are computed

    def build(self):
        c = self.config
        if c.flow not in FLOWS or c.objective not in OBJECTIVES:
            raise ValueError(f"unknown flow {c.flow!r} or objective {c.objective!r}")
        if c.objective == "reverse_kl" and not reverse_ok(c.data):
            raise ValueError(f"reverse KL needs a log density finite everywhere; {c.data!r} has none. "
                             f"Use forward_kl, or one of {', '.join(dgm.core.data.ENERGIES + dgm.core.data.MIXTURES)}")
        self.data = dgm.core.data.get(c.data)
        self.model = build_flow(c).to(self.device)
        if c.objective == "forward_kl":
            self.model.data_init(self.data.sample(4096, self.eval_generator(7), device=self.device))
        # foreach: one call per update over the flow's ~100 parameter tensors; on the CPU the same kernels, in the
        # same order, as the single-tensor loop (the same numbers to the bit: tests/test_flows.py), 5-8% a step
        self.opt = torch.optim.Adam(self.model.parameters(), lr=c.lr, foreach=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, functools.partial(lr_factor, halflife=c.halflife))
        self.heldout = self.data.sample(EVAL_SAMPLES, self.eval_generator(), device=self.device)  # (N, 2)
        self.grid = Grid.over(self.data.box, self.GRID_RES, device=self.device)
        self.exact = self.data.has_density or c.data in dgm.core.data.ENERGIES
        self.log_p_grid = self.target_log_prob(self.grid.points) if self.exact else None
        self.entropy = true_entropy(c.data)
        self._w1_floor: float | None = None

    @property
    def w1_floor(self) -> float:
        """W1 between two sets of W1_SAMPLES true samples of p (the held-out points and fresh ones): what a
        perfect model's samples would get. Computed once per run."""
        if self._w1_floor is None:
            fresh = self.data.sample(W1_SAMPLES, self.eval_generator(8), device=self.device)
            self._w1_floor = wasserstein1(fresh, self.heldout[:W1_SAMPLES])
        return self._w1_floor

    def target_log_prob(self, x: Tensor) -> Tensor:
        """p's log density: exact for the mixtures; for the energies, -U(x) confined to the box (see box_wall)."""
        if self.data.name in dgm.core.data.ENERGIES:
            return self.data.unnormalized_log_prob(x) - box_wall(x, self.data.box)
        return self.data.log_prob(x)

    def beta(self, step: int | None = None) -> float:
        """Reverse KL's weight on log p at ``step`` (default: the run's step): rises from 0.01 to 1 if annealed."""
        c = self.config
        if c.objective != "reverse_kl" or not c.anneal:
            return 1.0
        return min(1.0, 0.01 + (self.iteration if step is None else step) / c.anneal_steps)

    # -- one step: its random inputs (``draw``) and the loss they give (``step_loss``), apart, so that
    # dgm.families.flows.seeds runs the same loss on many seeds' weights at once ----------------------
    def draw(self) -> tuple[Tensor, ...]:
        """The step's random inputs, from ``self.gen``: data x (B, 2) for forward KL, base points z for reverse."""
        c = self.config
        if c.objective == "forward_kl":
            return (self.data.sample(c.batch, self.gen),)
        p = next(self.model.parameters())
        return (torch.randn(c.batch, self.model.dim, generator=self.gen, device=p.device, dtype=p.dtype),)

    def step_loss(self, model: Flow, batch: tuple[Tensor, ...], step: int) -> dict[str, Tensor]:
        """The loss of ``model`` on a drawn batch at ``step`` (a pure function of them) and what it logs."""
        if self.config.objective == "forward_kl":
            loss = model.forward_kld(batch[0])
            return {"loss": loss, "train_nll": loss}
        beta = self.beta(step)
        loss = model.reverse_kld_at(batch[0], self.target_log_prob, beta)
        return {"loss": loss, "beta": torch.full_like(loss, beta)}

    def train_step(self):
        out = self.step_loss(self.model, self.draw(), self.iteration)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.sched.step()
        if self.config.objective == "forward_kl":
            del out["loss"]  # the same number as train_nll
        return {k: v.detach() for k, v in out.items()}

    def evaluate(self):
        m = self.model
        out = {"nll": float(-m.log_prob(self.heldout).mean().detach())}
        if self.log_p_grid is not None:
            log_q = m.log_prob(self.grid.points, chunk=8192)
            out["forward_kl"] = grid_kl(self.grid, self.log_p_grid, log_q)
            out["reverse_kl"] = grid_kl(self.grid, log_q, self.log_p_grid)
            out["q_mass"] = self.grid.integral(log_q.double().exp())  # how much of q lies on the grid
        x = m.sample(EVAL_SAMPLES, self.eval_generator(2))
        if self.data.centers is not None and self.data.std is not None:
            out["modes"] = float(mode_stats(x, self.data.centers, self.data.std, min_share=MODE_SHARE)["modes"])
        # W1: exact optimal transport between W1_SAMPLES samples of q and as many held-out points
        out["w1"], out["w1_floor"] = wasserstein1(x[:W1_SAMPLES], self.heldout[:W1_SAMPLES]), self.w1_floor
        return out
