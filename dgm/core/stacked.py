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

from typing import Any, Callable, Sequence

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


class _Call(nn.Module):
    """``fn(module, *args)`` as a module's forward, so that ``torch.func.functional_call`` can run it."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]):
        super().__init__()
        self.m, self.fn = module, fn

    def forward(self, *args):
        return self.fn(self.m, *args)


class FuncStack(nn.Module):
    """K copies of any module (built alike, each under its own seed) as stacked parameters and buffers: each
    tensor gets a leading K dimension. ``vmap(fn)`` runs a function of one module on every copy at once
    (``torch.func.vmap`` over ``functional_call``): inputs and outputs carry the leading K dimension, and copy
    k's outputs depend only on copy k's slice of every parameter, so its gradient lands only there. For the
    networks that ``StackedMLP`` cannot express (flows, a VAE with its prior, a diffusion network with its
    time embedding).

    The first module serves as the template whose code runs (its own weights are never read here)."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        modules = list(modules)
        params, buffers = torch.func.stack_module_state(modules)
        self.template = [modules[0]]  # a list: not a submodule (its weights are not this module's)
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.params = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in params.values()])
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"b{i}", b.clone())

    @property
    def k(self) -> int:
        return self.params[0].shape[0]

    def _state(self) -> dict[str, Tensor]:
        state = {f"m.{n}": p for n, p in zip(self.param_names, self.params)}
        state.update({f"m.{n}": getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)})
        return state

    def vmap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(module, *args)`` for every copy: the returned function takes and returns (K, ...) tensors."""
        call = _Call(self.template[0], fn)

        def one(state, *args):
            return torch.func.functional_call(call, state, args)

        return lambda *args: torch.func.vmap(one)(self._state(), *args)

    @torch.no_grad()
    def load_into(self, k: int, module: nn.Module) -> nn.Module:
        """Write copy k's parameters and buffers into ``module`` (one built alike); returns it."""
        for n, p in zip(self.param_names, self.params):
            module.get_parameter(n).copy_(p[k])
        for i, n in enumerate(self.buffer_names):
            module.get_buffer(n).copy_(getattr(self, f"b{i}")[k])
        return module


def clip_per_run_(params: Sequence[Tensor], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_`` for each run of stacked parameters (leading K dimension) on its own:
    run k's gradients are scaled by min(1, max_norm / (||g_k|| + 1e-6)), ||g_k|| over all of its slices."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    k = grads[0].shape[0]
    norms = torch.stack([g.reshape(k, -1).norm(dim=1) for g in grads]).norm(dim=0)  # (K,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
