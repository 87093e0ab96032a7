"""K independent copies of a small network as one module whose parameters carry a leading K dimension.

Many seeds (or many values of one knob) trained at once: each layer is one batched matrix product
(``torch.baddbmm``) over the K runs, so a CPU core or a GPU does K runs' work in one call instead of K
calls of a size that leaves it idle. Nothing is shared between the runs: run k's outputs depend only on
run k's slice of every parameter, its gradients land only in that slice, and an element-wise optimiser
(Adam, SGD, RMSprop) over the stacked parameters is K independent optimisers.

    mlps = [nets.mlp(2, 1, 64, 3) for _ in range(K)]   # each built under its own seed
    net = StackedMLP.from_mlps(mlps)                   # (K, B, 2) -> (K, B, 1)
    net.load_into(k, mlps[k])                          # run k's weights back into a plain module
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: activations of dgm.core.nets, as functions (the stacked net applies them to (K, B, width) tensors)
_ACTS: dict[type, Callable[[nn.Module, Tensor], Tensor]] = {
    nn.ReLU: lambda m, x: F.relu(x),
    nn.LeakyReLU: lambda m, x: F.leaky_relu(x, m.negative_slope),
    nn.Tanh: lambda m, x: torch.tanh(x),
    nn.ELU: lambda m, x: F.elu(x, m.alpha),
    nn.SiLU: lambda m, x: F.silu(x),
}


class StackedMLP(nn.Module):
    """K MLPs of one shape (``nn.Sequential`` of ``nn.Linear`` and activations, as ``dgm.core.nets.mlp``
    builds them; spectral normalisation is not supported) as weights (K, d_in, d_out) and biases
    (K, 1, d_out). Input (K, B, d_in) -> output (K, B, d_out)."""

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor], acts: Sequence[nn.Module | None]):
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(w) for w in weights])
        self.biases = nn.ParameterList([nn.Parameter(b) for b in biases])
        self.acts = list(acts)  # the activation after each linear layer (None: none)

    @classmethod
    def from_mlps(cls, mlps: Sequence[nn.Sequential]) -> "StackedMLP":
        layers = [list(m) for m in mlps]
        shape = [type(layer) for layer in layers[0]]
        for m in layers:
            if [type(layer) for layer in m] != shape:
                raise ValueError("the networks to stack differ in shape")
            for layer in m:
                if isinstance(layer, nn.Linear) and getattr(layer, "parametrizations", None):
                    raise ValueError("stacked networks do not support spectral normalisation")
        weights, biases, acts = [], [], []
        for i, layer in enumerate(layers[0]):
            if isinstance(layer, nn.Linear):
                weights.append(torch.stack([m[i].weight.detach().t() for m in layers]).contiguous())
                biases.append(torch.stack([m[i].bias.detach() for m in layers])[:, None, :].contiguous())
                acts.append(None)
            elif type(layer) in _ACTS:
                if not weights or acts[-1] is not None:
                    raise ValueError("an activation must follow a linear layer")
                acts[-1] = layer
            else:
                raise ValueError(f"cannot stack a {type(layer).__name__} layer")
        return cls(weights, biases, acts)

    @property
    def k(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        for w, b, act in zip(self.weights, self.biases, self.acts):
            x = torch.baddbmm(b, x, w)
            if act is not None:
                x = _ACTS[type(act)](act, x)
        return x

    @torch.no_grad()
    def load_into(self, k: int, mlp: nn.Sequential) -> nn.Sequential:
        """Write run k's weights into ``mlp`` (a plain network of the same shape); returns it."""
        linears = [layer for layer in mlp if isinstance(layer, nn.Linear)]
        for layer, w, b in zip(linears, self.weights, self.biases):
            layer.weight.copy_(w[k].t())
            layer.bias.copy_(b[k, 0])
        return mlp


def run_mask(values: Tensor) -> Tensor:
    """(K,) booleans: which runs' values (K, ...) are all finite."""
    return torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
