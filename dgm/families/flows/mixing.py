"""The layers a flow puts between its transforms: ActNorm (a per-dimension affine map, started from the
data) and the invertible linear maps that mix the dimensions (a fixed permutation, a fixed random rotation,
Glow's learned LU-parametrised matrix). The same conventions as ``layers.py``: ``forward(x) -> (z, log_det)``
towards the base, ``inverse(z) -> (x, log_det)`` towards the data."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ActNorm(nn.Module):
    """Per-dimension affine z = (x - loc) exp(-log_scale) (Glow). ``initialize(x)`` sets it from a batch
    so that its output is standardised (data-dependent init); otherwise it starts as the identity."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(torch.log(x.std(0).clamp_min(1e-3)))

    def forward(self, x):
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z):
        return z * torch.exp(self.log_scale) + self.loc, self.log_scale.sum().expand(z.shape[0])


class Permute(nn.Module):
    """A fixed permutation of the dimensions (in 2D with ``swap``: exchange x and y). log|det| = 0."""

    def __init__(self, perm: Tensor):
        super().__init__()
        self.register_buffer("perm", perm.long())
        self.register_buffer("inv", torch.argsort(perm.long()))

    def forward(self, x):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z):
        return z[:, self.inv], z.new_zeros(z.shape[0])


class Rotation(nn.Module):
    """A fixed random orthogonal matrix (a rotation or reflection), drawn at construction. log|det| = 0.
    In 2D a permutation can only swap the axes; a random rotation mixes them at a new angle each layer."""

    def __init__(self, dim: int = 2):
        super().__init__()
        q, r = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))
        self.register_buffer("q", q.float())

    def forward(self, x):
        return x @ self.q.T, x.new_zeros(x.shape[0])

    def inverse(self, z):
        return z @ self.q, z.new_zeros(z.shape[0])


class LULinear(nn.Module):
    """A learned invertible linear map W = P L (U + diag(sign * exp(log_d))) (Glow's 1x1 convolution),
    started at a random rotation. log|det W| = sum(log_d)."""

    def __init__(self, dim: int = 2):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign", torch.sign(diag))
        self.register_buffer("lmask", torch.tril(torch.ones(dim, dim), -1))
        self.lower = nn.Parameter(lower * self.lmask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_d = nn.Parameter(torch.log(diag.abs()))
        self.bias = nn.Parameter(torch.zeros(dim))

    def weight(self) -> Tensor:
        eye = torch.eye(self.p.shape[0], device=self.p.device, dtype=self.lower.dtype)
        lower = self.lower * self.lmask + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_d))
        return self.p @ lower @ upper

    def forward(self, x):
        return x @ self.weight().T + self.bias, self.log_d.sum().expand(x.shape[0])

    def inverse(self, z):
        w_inv = torch.linalg.inv(self.weight())
        return (z - self.bias) @ w_inv.T, (-self.log_d.sum()).expand(z.shape[0])
