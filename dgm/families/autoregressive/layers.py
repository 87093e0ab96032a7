"""The pieces the autoregressive models are made of: orderings, MADE's degrees and masks, masked and gated
convolutions (PixelCNN), and the one-dimensional Gaussian mixture of the 2D models.

An ordering is a permutation ``order`` (D,): ``order[t]`` is the pixel drawn at step t. Its inverse,
``positions(order)``, gives each pixel's step; "pixel j comes before pixel i" is ``pos[j] < pos[i]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)


def positions(order: Tensor) -> Tensor:
    """The inverse permutation: pos[order[t]] = t. (D,) -> (D,)."""
    pos = torch.empty_like(order)
    pos[order] = torch.arange(order.numel(), device=order.device)
    return pos


def orderings(d: int, k: int, natural: bool, gen: torch.Generator) -> Tensor:
    """k orderings of d pixels (k, d): the first is the raster order when ``natural``, the others random."""
    out = [torch.arange(d) if natural and i == 0 else torch.randperm(d, generator=gen) for i in range(k)]
    return torch.stack(out)


def before(order: Tensor) -> Tensor:
    """(D, D) float mask: [i, j] = 1 when pixel j comes before pixel i in ``order``."""
    pos = positions(order)
    return (pos[None, :] < pos[:, None]).float()


# ---- MADE -------------------------------------------------------------------------------------------

def made_degrees(pos: Tensor, hidden: int, depth: int, gen: torch.Generator) -> Tensor:
    """Hidden units' degrees for one ordering (Germain et al. 2015): a unit of degree m may see the pixels
    at steps 0..m, and an output at step t the units of degree < t. Each layer draws its degrees
    uniformly between the previous layer's smallest degree and D - 2 (a unit of degree D - 1 would serve
    no output). ``pos`` (D,) -> (depth, hidden)."""
    d = pos.numel()
    out, lo = [], int(pos.min())
    for _ in range(depth):
        m = torch.randint(lo, max(d - 1, lo + 1), (hidden,), generator=gen)
        out.append(m)
        lo = int(m.min())
    return torch.stack(out)


def made_masks(pos: Tensor, degrees: Tensor, levels: int) -> list[Tensor]:
    """The masks of one ordering: input -> hidden (H, D), hidden -> hidden (H, H), hidden -> output
    (D * L, H), the output's rows grouped by pixel (all L logits of a pixel share its step)."""
    masks = [(degrees[0][:, None] >= pos[None, :]).float()]
    for a, b in zip(degrees[:-1], degrees[1:]):
        masks.append((b[:, None] >= a[None, :]).float())
    masks.append((pos.repeat_interleave(levels)[:, None] > degrees[-1][None, :]).float())
    return masks


# ---- PixelCNN -----------------------------------------------------------------------------------------

class MaskedConv2d(nn.Conv2d):
    """A k x k convolution that sees only the pixels above and to the left (raster order) of its centre:
    mask ``A`` leaves the centre out (the first layer: the output at a pixel must not see its own value),
    mask ``B`` keeps it (later layers: the centre holds features that already exclude the pixel)."""

    def __init__(self, c_in: int, c_out: int, k: int, kind: str):
        super().__init__(c_in, c_out, k, padding=k // 2)
        m = torch.ones(k, k)
        m[k // 2, k // 2 + (kind == "B"):] = 0
        m[k // 2 + 1:] = 0
        self.register_buffer("mask", m, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _gate(a: Tensor) -> Tensor:
    t, s = a.chunk(2, 1)
    return torch.tanh(t) * torch.sigmoid(s)


class GatedBlock(nn.Module):
    """One layer of the two-stack PixelCNN (van den Oord et al. 2016, "Conditional image generation"):
    a vertical stack that sees the rows above (a (k//2 + 1) x k convolution over rows r - k//2 .. r,
    passed on one row down so that row r only gets rows < r) and a horizontal stack that sees the
    pixels to the left in the same row; the vertical stack feeds the horizontal one. Both use the
    gated unit tanh(a) * sigmoid(b). Together they cover every pixel before the centre: no blind spot."""

    def __init__(self, c_in: int, c: int, k: int, first: bool):
        super().__init__()
        self.k, self.first = k, first
        self.v = nn.Conv2d(c_in, 2 * c, (k // 2 + 1, k))
        self.h = nn.Conv2d(c_in, 2 * c, (1, k // 2 + (0 if first else 1)))
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:  # (B, C, H, W) each
        k = self.k
        vf = self.v(F.pad(v, (k // 2, k // 2, k // 2, 0)))  # row r sees rows r - k//2 .. r
        hin = F.pad(h, (k // 2, 0, 0, 0))
        hf = self.h(hin[..., :-1] if self.first else hin)  # column c sees c - k//2 .. c (- 1 when first)
        hf = hf + self.v_to_h(F.pad(vf, (0, 0, 1, 0))[:, :, :-1])  # row r gets the vertical stack of row r - 1
        ho = self.h_out(_gate(hf))
        return _gate(vf), ho if self.first else ho + h


# ---- a Gaussian mixture in one dimension (the 2D models' conditionals) ----------------------------------

def mixture_log_prob(x: Tensor, logits: Tensor, means: Tensor, log_stds: Tensor) -> Tensor:
    """log sum_k w_k N(x; m_k, s_k^2) with w = softmax(logits): x (...,), parameters (..., K) -> (...)."""
    z = (x[..., None] - means) * torch.exp(-log_stds)
    comp = -0.5 * z * z - log_stds - 0.5 * LOG_2PI
    return torch.logsumexp(torch.log_softmax(logits, -1) + comp, -1)


def mixture_sample(logits: Tensor, means: Tensor, log_stds: Tensor, gen: torch.Generator) -> Tensor:
    """One draw per row of the mixtures (N, K) -> (N,)."""
    k = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)  # (N, 1)
    eps = torch.randn(k.shape, generator=gen, device=logits.device, dtype=means.dtype)
    return (means.gather(-1, k) + torch.exp(log_stds.gather(-1, k)) * eps).squeeze(-1)
