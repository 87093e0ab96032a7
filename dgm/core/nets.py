"""Small network builders."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


def mlp(d_in: int, d_out: int, width: int = 64, depth: int = 2, act: str = "relu",
        spectral_norm: bool = False, out_act: nn.Module | None = None) -> nn.Sequential:
    """An MLP with ``depth`` hidden layers of ``width`` units: (B, d_in) -> (B, d_out).
    With ``spectral_norm`` every linear layer is divided by its largest singular value
    (torch.nn.utils.parametrizations.spectral_norm), which bounds the net's Lipschitz constant."""
    wrap = _sn if spectral_norm else (lambda m: m)
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [wrap(nn.Linear(d, width)), ACTIVATIONS[act]()]
        d = width
    layers.append(wrap(nn.Linear(d, d_out)))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)
