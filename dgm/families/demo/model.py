"""A full-covariance Gaussian q(x) = N(mean, L L^T), the smallest model in the app: its maximum-
likelihood answer is known in closed form (the data's mean and covariance)."""

from __future__ import annotations

import torch
from torch import nn


class GaussianFit(nn.Module):
    """q(x) = N(mean, L L^T), with L lower triangular and a positive (exp) diagonal."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(2))
        self.log_diag = nn.Parameter(torch.zeros(2))
        self.off = nn.Parameter(torch.zeros(1))

    def scale_tril(self) -> torch.Tensor:
        d = self.log_diag.exp()
        zero = torch.zeros_like(self.off)
        return torch.stack([torch.cat([d[:1], zero]), torch.cat([self.off, d[1:]])])  # (2, 2)

    def dist(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril(), validate_args=False)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, 2, generator=generator, device=self.mean.device)  # (n, 2)
        return self.mean + eps @ self.scale_tril().T

    def cov(self) -> torch.Tensor:
        L = self.scale_tril()
        return L @ L.T
