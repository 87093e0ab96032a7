"""Many flow runs at once: the same settings on K seeds, trained as one batched model (dgm/core/many.py).

    b = FlowSeeds(FlowConfig(), seeds=range(8)); b.step(2400); b.finals()   # each seed's final metrics

Run k is the single-run trainer of ``seeds[k]``: its flow starts from that trainer's weights (ActNorm
initialised on its own data), its batches come from its stream, its loss is the single run's
``step_loss`` (run on every run's weights at once by ``torch.func.vmap``), its gradient is clipped on its
own, and one Adam over the stacked weights with the single run's learning-rate schedule updates it.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dgm.core.many import ManySeeds
from dgm.core.stacked import FuncStack, clip_per_run_
from dgm.families.flows.trainer import CLIP, FlowTrainer, lr_factor


class FlowSeeds(ManySeeds):
    single = FlowTrainer
    stacked = ("model",)
    summary_metrics = ("nll", "forward_kl", "reverse_kl", "w1", "modes")
    eval_every = FlowTrainer.eval_every

    def build_stacked(self):
        c = self.config
        self.model = FuncStack([r.model for r in self.runs])
        self.opt = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, functools.partial(lr_factor, halflife=c.halflife))

    def train_step(self) -> dict[str, Tensor]:
        out = self.stacked_loss(self.model)  # each value (K,)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].sum().backward()
        params = list(self.model.parameters())
        self._mask_dead(params)
        clip_per_run_(params, CLIP)
        self.opt.step()
        self.sched.step()
        if self.config.objective == "forward_kl":
            del out["loss"]
        return {k: v.detach() for k, v in out.items()}
