"""The Flow model: a standard-normal base and a cascade of invertible layers (``layers.py``).

Conventions (after karpathy/pytorch-normalizing-flows, normflows and nflows): every layer has
``forward(x) -> (z, log_det)`` (data side -> base side, ``log_det = log|det dz/dx|``) and
``inverse(z) -> (x, log_det)`` (generative, ``log_det = log|det dx/dz|``). A ``Block`` is a cascade of
layers used as one, in generative order; a ``Flow`` is a Block with a base density.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgm.families.flows.layers import LOG_2PI
from dgm.families.flows.mixing import ActNorm


class Block(nn.Module):
    """Layers used as one (e.g. coupling + ActNorm + permutation), in generative order: ``inverse`` runs
    them in order (base -> data), ``forward`` backwards (data -> base); log-determinants add up."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        ld = x.new_zeros(x.shape[0])
        for layer in reversed(self.layers):
            x, l = layer(x)
            ld = ld + l
        return x, ld

    def inverse(self, z):
        ld = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, l = layer.inverse(z)
            ld = ld + l
        return z, ld


class Flow(Block):
    """A normalizing flow: base N(0, I) in D dimensions and ``layers`` in generative order.

    log q(x) = log N(f^-1(x)) + sum_k log|det d z_{k-1} / d z_k|, computed data -> base."""

    def __init__(self, layers: list[nn.Module], dim: int = 2):
        super().__init__(layers)
        self.dim = dim

    def base_log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z * z).sum(1) - 0.5 * self.dim * LOG_2PI

    def log_prob(self, x: Tensor, chunk: int | None = None) -> Tensor:
        """log q(x) (N,), in nats; ``chunk`` evaluates a large set in pieces."""
        if chunk is not None and x.shape[0] > chunk:
            return torch.cat([self.log_prob(part) for part in x.split(chunk)])
        z, ld = self.forward(x)
        return self.base_log_prob(z) + ld

    def sample_with_log_prob(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n samples x (n, D) and their log q(x), from one generative pass."""
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, device=p.device, dtype=p.dtype)
        x, ld = self.inverse(z)
        return x, self.base_log_prob(z) - ld

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.sample_with_log_prob(n, generator)[0]

    def forward_kld(self, x: Tensor) -> Tensor:
        """KL(p || q) up to the (constant) entropy of p: the NLL of data samples x ~ p."""
        return -self.log_prob(x).mean()

    def reverse_kld(self, log_p, n: int, generator: torch.Generator, beta: float | Tensor = 1.0) -> Tensor:
        """KL(q || p) up to log Z: E_q[log q(x) - beta log p~(x)] with x ~ q (reparameterised);
        ``log_p`` is an unnormalised log density, ``beta`` an annealing weight (1: the true objective)."""
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.reverse_kld_at(z, log_p, beta)

    def reverse_kld_at(self, z: Tensor, log_p, beta: float | Tensor = 1.0) -> Tensor:
        """``reverse_kld`` at given base points z (n, D) (drawn by the caller)."""
        x, ld = self.inverse(z)
        return (self.base_log_prob(z) - ld - beta * log_p(x)).mean()

    @torch.no_grad()
    def data_init(self, x: Tensor) -> None:
        """Initialise every ActNorm from a data batch pushed data -> base (data-dependent init)."""
        def walk(layers, v):
            for layer in reversed(list(layers)):
                if isinstance(layer, Block):
                    v = walk(layer.layers, v)
                    continue
                if isinstance(layer, ActNorm):
                    layer.initialize(v)
                v, _ = layer(v)
            return v
        walk(self.layers, x)

    @torch.no_grad()
    def trajectory(self, z: Tensor) -> list[Tensor]:
        """[z_0, z_1, ..., z_K]: base points and their images after each layer (generative order)."""
        out = [z]
        for layer in self.layers:
            z, _ = layer.inverse(z)
            out.append(z)
        return out
