"""Sample quality beyond modes (docs/ARCHITECTURE.md, "Definitions").

- Precision, recall, density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics
  for generative models"): each point gets a ball reaching its k-th nearest neighbour within its own set.
  Precision: the fraction of samples inside some real point's ball; recall: the fraction of real points
  inside some sample's ball; density: the mean number of real balls holding a sample, over k; coverage:
  the fraction of real points whose own ball holds a sample. ``prdc``.
- The Fréchet distance between the Gaussians fitted to two feature sets, |mu1 - mu2|^2 +
  tr(S1 + S2 - 2 (S1 S2)^(1/2)) (FID's formula): ``frechet``, ``frechet_gaussians``.
- An Inception-style score from class probabilities, exp E_x KL(p(y|x) || p(y)): ``inception_score``.
- On the 8x8 digits, one small classifier (an MLP trained once on the train split, fixed seed, cached in
  the process) gives Digits-FID (the Fréchet distance of its penultimate features), Digits-IS and the
  fraction of samples it classifies confidently: ``digits_scores``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from dgm.core import device as devlib
from dgm.core.digits import digits

K_NEIGHBOURS = 5  # Naeem et al.'s default
CLASSIFIER_SEED = 0
CLASSIFIER_STEPS = 200
CONFIDENT = 0.9  # a sample is classified confidently when its top class has at least this probability


# ---- precision, recall, density, coverage ------------------------------------------------------

def _kth_radius(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x (N, D) to its k-th nearest other row (N,)."""
    d = torch.cdist(x, x)
    # the (k+1)-th smallest (the 1st is the point itself, 0); topk of a few is 7x faster than kthvalue, same values
    return d.topk(k + 1, dim=1, largest=False).values[:, -1]


def prdc(real: Tensor, fake: Tensor, k: int = K_NEIGHBOURS) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` (M, D) against ``real`` (N, D), with k-NN balls
    (float64, exact distances). Rows with a non-finite value are dropped from the samples."""
    real = real.detach().double().cpu()
    fake = fake.detach().double().cpu()
    fake = fake[torch.isfinite(fake).all(1)]
    if len(fake) <= k or len(real) <= k:
        return {"precision": float("nan"), "recall": float("nan"), "density": float("nan"), "coverage": float("nan")}
    r_real, r_fake = _kth_radius(real, k), _kth_radius(fake, k)
    d = torch.cdist(real, fake)  # (N, M)
    inside_real = d < r_real[:, None]  # sample j inside real point i's ball
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float((d < r_fake[None, :]).any(1).double().mean()),
        "density": float(inside_real.sum(0).double().mean() / k),
        "coverage": float((d.min(1).values < r_real).double().mean()),
    }


# ---- Fréchet distance and the Inception-style score ---------------------------------------------

def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_gaussians(mu1, s1, mu2, s2) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, s1) and N(mu2, s2):
    |mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1^(1/2) s2 s1^(1/2))^(1/2)), by symmetric eigen-decompositions
    (the trace equals FID's tr (s1 s2)^(1/2), with no complex round-off)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross), 0.0))


def frechet(x: Tensor, y: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to feature sets x (N, D) and y (M, D)."""
    a, b = x.detach().double().cpu().numpy(), y.detach().double().cpu().numpy()
    a = a[np.isfinite(a).all(1)]
    if len(a) < 2:
        return float("nan")
    return frechet_gaussians(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def inception_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, C): 1 when every sample gets the same
    distribution, C when each is classified with certainty and the classes are used equally."""
    p = probs.double().clamp_min(1e-30)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


# ---- the digits classifier ------------------------------------------------------------------------

class DigitsClassifier(nn.Module):
    """64 pixels in [0, 1] -> 128 -> 64 features -> 10 classes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def features(self, x01: Tensor) -> Tensor:
        return self.body(x01)

    def forward(self, x01: Tensor) -> Tensor:
        return self.head(self.body(x01))


@functools.cache
def digits_classifier() -> DigitsClassifier:
    """The classifier, trained once per process on the train split: full-batch Adam with weight decay, a
    fixed seed and inputs jittered by a fixed generator (so that it also says something sensible off the
    data). Deterministic on the CPU; nothing is written to disk."""
    d = digits()
    x, y = d.train.x01, d.train.y
    with devlib.seeded(CLASSIFIER_SEED):
        net = DigitsClassifier()
    gen = torch.Generator().manual_seed(CLASSIFIER_SEED)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    with torch.enable_grad():  # (its first caller may be inside no_grad: a metric of a model)
        for _ in range(CLASSIFIER_STEPS):
            noisy = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
            loss = nn.functional.cross_entropy(net(noisy), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval().requires_grad_(False)


@functools.cache
def _test_features() -> Tensor:
    return digits_classifier().features(digits().test.x01).double()


def digits_accuracy() -> float:
    """The classifier's accuracy on the test split."""
    d = digits()
    return float((digits_classifier()(d.test.x01).argmax(1) == d.test.y).double().mean())


def digits_features(x01: Tensor) -> Tensor:
    """Penultimate features (N, 64) of images (N, 64) with intensities in [0, 1]."""
    return digits_classifier().features(x01.float().cpu().clamp(0, 1))


@functools.cache
def _test_to_train() -> float:
    d = digits()
    return float(torch.cdist(d.test.x01.double(), d.train.x01.double()).min(1).values.mean())


def nearest_digit_ratio(x01: Tensor) -> float:
    """How far images (N, 64) in [0, 1] lie from the training digits: the mean pixel distance of each to its
    nearest training digit, over the same mean for the test digits. About 1 for new digits of the same kind;
    3.7 for uniform noise; below 1 for copies of training digits (memorisation). Non-finite images are left
    out (nan when none is left)."""
    x = x01.detach().double().cpu()
    x = x[torch.isfinite(x).all(1)].clamp(0, 1)
    if len(x) == 0:
        return float("nan")
    return float(torch.cdist(x, digits().train.x01.double()).min(1).values.mean()) / _test_to_train()


def digits_scores(x01: Tensor) -> dict[str, float]:
    """Digits-FID (against the test split; ``fid_n`` is the sample count), Digits-IS and the fraction of
    samples classified with probability >= ``CONFIDENT``, for images (N, 64) in [0, 1] (N >= 300 for the
    FID to be comparable: docs/ARCHITECTURE.md)."""
    x = x01.detach().float().cpu()
    x = x[torch.isfinite(x).all(1)]
    if len(x) < 2:
        return {"digits_fid": float("nan"), "digits_is": float("nan"), "confident": float("nan"), "fid_n": len(x)}
    net = digits_classifier()
    x = x.clamp(0, 1)
    probs = torch.softmax(net(x).double(), 1)
    return {
        "digits_fid": frechet(net.features(x), _test_features()),
        "digits_is": inception_score(probs),
        "confident": float((probs.max(1).values >= CONFIDENT).double().mean()),
        "fid_n": len(x),
    }

