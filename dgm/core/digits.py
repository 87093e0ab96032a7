"""sklearn's 8x8 digits, split once and for all (the image data set of every page that uses images).

Pixels are integer grey levels 0..16 (``x``), or ``x / 16`` in [0, 1] (``x01``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DIGIT_LEVELS = 17  # pixel values are integers 0..16


@dataclass(frozen=True)
class DigitSplit:
    """One part of the digits set. ``x`` holds integer grey levels 0..16 as float32 (N, 64);
    ``x01`` is the same scaled to [0, 1] (x / 16); ``y`` the labels (N,)."""

    x: Tensor
    y: Tensor

    @property
    def x01(self) -> Tensor:
        return self.x / 16.0

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class Digits:
    train: DigitSplit
    val: DigitSplit
    test: DigitSplit


@functools.lru_cache(maxsize=1)
def digits() -> Digits:
    """sklearn's 8x8 digits (1,797 images, bundled with sklearn, no download), split once and for
    all by a fixed permutation (numpy seed 0) into 1,197 train, 300 validation and 300 test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)  # (1797, 64), values 0..16
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.RandomState(0).permutation(len(x)))
    x, y = x[perm], y[perm]
    split = lambda a, b: DigitSplit(x[a:b], y[a:b])  # noqa: E731
    return Digits(train=split(0, 1197), val=split(1197, 1497), test=split(1497, 1797))
