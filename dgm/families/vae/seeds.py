"""Many VAE runs at once: the same settings on K seeds, trained as one batched model (dgm/core/many.py).

    b = VAESeeds(VAEConfig(), seeds=range(8)); b.step(2000); b.finals()   # each seed's final metrics

Run k is the single-run trainer of ``seeds[k]``: its encoder, decoder and prior start from that trainer's
weights, its batches, decoder targets and reparameterisation noise come from its stream, its loss is the
single run's ``step_loss`` (run on every run's weights at once by ``torch.func.vmap``), and one Adam over the
stacked weights updates it. Its best validation checkpoint is its own (kept by its trainer's evaluation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgm.core.many import ManySeeds
from dgm.core.stacked import FuncStack
from dgm.families.vae.trainer import VAETrainer


class VAESeeds(ManySeeds):
    single = VAETrainer
    stacked = ("model",)
    summary_metrics = ("val_elbo", "best_val_elbo", "elbo", "iwae", "active_units", "mi")
    eval_every = VAETrainer.eval_every

    def build_stacked(self):
        self.model = FuncStack([r.model for r in self.runs])
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    def train_step(self) -> dict[str, Tensor]:
        out = self.stacked_loss(self.model)  # each value (K,)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].sum().backward()
        self._mask_dead(self.model.parameters())
        self.opt.step()
        return {k: v.detach() for k, v in out.items()}
