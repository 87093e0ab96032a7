"""Many diffusion or flow-matching runs at once: the same settings on K seeds, trained as one batched model
(dgm/core/many.py).

    b = DiffusionSeeds(DiffusionConfig(), seeds=range(8)); b.step(3000); b.finals()   # each seed's finals

Run k is the single-run trainer of ``seeds[k]``: its network starts from that trainer's weights, its
batches (data, noise, times; the OT pairing and a reflow round's pairs) come from its stream and its own
model, its loss is the single run's ``step_loss`` (run on every run's weights at once by
``torch.func.vmap``), and one Adam over the stacked weights with the single run's learning-rate schedule and
weight average updates it.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dgm.core.many import ManySeeds
from dgm.core.stacked import FuncStack
from dgm.families.diffusion.trainer import DiffusionTrainer, lr_factor


class DiffusionSeeds(ManySeeds):
    single = DiffusionTrainer
    stacked = ("net", "net_avg")
    summary_metrics = ("modes", "high_quality", "mmd", "w1", "nll", "score_error", "test_loss")
    eval_every = DiffusionTrainer.eval_every

    def build_stacked(self):
        c = self.config
        self.runtime = self.runs[0].runtime
        self.net = FuncStack([r.net for r in self.runs])
        self.net_avg = FuncStack([r.net_avg for r in self.runs]).requires_grad_(False) if c.ema > 0 else None
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, fused=True)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(self.opt, functools.partial(lr_factor, halflife=c.halflife))

    def set_runtime(self, values=None, **kw) -> None:
        """Sampling settings reach every run (they change evaluation, not training)."""
        for r in self.runs:
            r.set_runtime(values, **kw)
        self.runtime = self.runs[0].runtime

    def train_step(self) -> dict[str, Tensor]:
        first, step = self.runs[0], self.iteration
        if first.reflow_due(step):
            for k in range(self.k):  # each run's reflow pairs come from its own flow
                with self.as_run(k) as r:
                    r._reflow()
        out = self.stacked_loss(self.net)  # {"loss": (K,)}
        self.opt.zero_grad(set_to_none=True)
        out["loss"].sum().backward()
        params = list(self.net.parameters())
        self._mask_dead(params)
        self.opt.step()
        self.lr_sched.step()
        first.average(self.net_avg, params, step)
        return {"loss": out["loss"].detach()}
