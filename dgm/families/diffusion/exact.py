"""The exact references: a 2D Gaussian mixture noised as x_t = alpha x0 + sigma eps is again a Gaussian
mixture (means alpha mu_k, covariances alpha^2 Sigma_k + sigma^2 I, the same weights), so its density,
its score and the posterior mean E[x0 | x_t] have closed forms (docs/ARCHITECTURE.md, "Noised mixtures").

    nm = NoisedMixture.of(dgm.core.data.get("ring8"))
    nm.score(x, alpha=0.9, sigma=0.4)          # (N, 2): grad_x log p_t(x)
    ExactDenoiser(nm, schedule)(x, t)          # (eps, x0) as a perfectly trained network would give them
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class NoisedMixture:
    """A 2D Gaussian mixture and its noised versions. ``means`` (K, 2), ``covs`` (K, 2, 2), ``weights`` (K,)."""

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor):
        self.means, self.covs, self.weights = means, covs, weights / weights.sum()

    @classmethod
    def of(cls, mix) -> "NoisedMixture":
        """From a ``dgm.core.data.GaussianMixture2D``."""
        return cls(mix.means, mix.covs, mix.weights)

    @property
    def k(self) -> int:
        return self.means.shape[0]

    def _parts(self, x: Tensor, alpha: float, sigma: float):
        """Per point and component: x - alpha mu_k (N, K, 2), the inverse covariance (K, 2, 2) and
        log N(x; alpha mu_k, C_k) (N, K), with C_k = alpha^2 Sigma_k + sigma^2 I."""
        dt = x.dtype
        m, S = self.means.to(x.device, dt), self.covs.to(x.device, dt)
        C = alpha * alpha * S + sigma * sigma * torch.eye(2, dtype=dt, device=x.device)
        a, b, c = C[:, 0, 0], C[:, 0, 1], C[:, 1, 1]  # (K,)
        det = a * c - b * b
        inv = torch.stack([torch.stack([c, -b], -1), torch.stack([-b, a], -1)], -2) / det[:, None, None]
        d = x[:, None, :] - alpha * m[None]  # (N, K, 2)
        quad = torch.einsum("nki,kij,nkj->nk", d, inv, d)
        logn = -math.log(2 * math.pi) - 0.5 * torch.log(det)[None] - 0.5 * quad
        return d, inv, logn

    def log_prob(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        """log p_t(x) (N,)."""
        _, _, logn = self._parts(x, alpha, sigma)
        return torch.logsumexp(logn + torch.log(self.weights.to(x.device, x.dtype)), 1)

    def responsibilities(self, x: Tensor, alpha: float, sigma: float, y: Tensor | None = None):
        d, inv, logn = self._parts(x, alpha, sigma)
        r = torch.softmax(logn + torch.log(self.weights.to(x.device, x.dtype)), 1)  # (N, K)
        if y is not None:  # the class-conditional density (component y alone); label K: no class
            own = torch.nn.functional.one_hot(y.clamp(max=self.k - 1), self.k).to(x.dtype)
            r = torch.where((y < self.k)[:, None], own, r)
        return r, d, inv

    def score(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0, y: Tensor | None = None) -> Tensor:
        """grad_x log p_t(x) (N, 2) = sum_k r_k(x) (-C_k^-1 (x - alpha mu_k)); given labels y (N,), of component
        y alone (label K: of the whole mixture)."""
        r, d, inv = self.responsibilities(x, alpha, sigma, y)
        return -torch.einsum("nk,kij,nkj->ni", r, inv, d)

    def posterior_mean(self, x: Tensor, alpha: float, sigma: float, y: Tensor | None = None) -> Tensor:
        """E[x0 | x_t = x] (N, 2) = sum_k r_k(x) (mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k)); finite at alpha = 0."""
        r, d, inv = self.responsibilities(x, alpha, sigma, y)
        S = self.covs.to(x.device, x.dtype)
        gain = alpha * torch.einsum("kij,kjl->kil", S, inv)  # (K, 2, 2)
        per = self.means.to(x.device, x.dtype)[None] + torch.einsum("kij,nkj->nki", gain, d)  # (N, K, 2)
        return torch.einsum("nk,nki->ni", r, per)


class ExactDenoiser:
    """The denoiser a perfect network would be: (x, t, y) -> (E[eps | x_t], E[x0 | x_t]) from the
    closed-form noised mixture, for any schedule (``Denoised``'s interface)."""

    def __init__(self, mixture: NoisedMixture, schedule):
        self.mixture, self.schedule = mixture, schedule

    def __call__(self, x: Tensor, t: float, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a, s = self.schedule.at(t)
        x0 = self.mixture.posterior_mean(x, a, s, y)
        if s == 0.0:
            return torch.zeros_like(x), x0
        return (x - a * x0) / s, x0  # E[eps | x] from x = alpha x0 + sigma eps, taken in expectation
