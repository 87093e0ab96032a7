"""Autoregressive models: p(x) = prod_t p(x_order[t] | the pixels drawn before it), exact and normalised.

    m = MADE(64, 17, hidden=512, depth=2, orders=orderings(64, 8, False, gen), gen=gen)
    m.log_prob(x)            # (B,) exact log-likelihood in nats (x: grey levels, long (B, 64))
    x, pos = m.sample(16, gen)   # 16 images, one pixel at a time; pos[b, i]: the step pixel i was drawn at

Image models share ``ARModel``: ``embed(x)`` turns the levels into the network's input (so that gradients
with respect to it show what each output depends on), ``forward(e, k)`` gives the logits of every
conditional under ordering k, (B, D, L), from one pass. The likelihood is the sum of the categorical
log-probabilities; with several orderings (MADE's connectivity-agnostic training), the model at test
time is their equal mixture, still exact: log p(x) = log (1/K) sum_k p_k(x).

- ``FVSBN``: a softmax regression per pixel on the pixels before it (scalar inputs x / (L - 1)).
- ``NADE``: one hidden layer whose weights are shared by every conditional; the pre-activations of the
  conditionals add up along the ordering, a = c + sum_{t' < t} W[:, o_t'] x_o_t', so all D of them cost
  O(D H) (a cumulative sum in training; one update per pixel when sampling).
- ``MADE``: an MLP whose weights are masked so that output i only depends on the inputs before it;
  K orderings (and hidden connectivities), one drawn per training batch.
- ``PixelCNN``: masked convolutions in raster order on the 8 x 8 image (mask A, then B), plain (with the
  blind spot of stacked masks) or as gated vertical and horizontal stacks (without it).
- ``MDN2D``: 2D data, p(x_a) p(x_b | x_a) with 1D Gaussian mixtures, the second's parameters from an MLP.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dgm.core.nets import mlp
from dgm.families.autoregressive.layers import (
    GatedBlock, MaskedConv2d, before, made_degrees, made_masks, mixture_log_prob, mixture_sample, positions,
)


def categorical_log_lik(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x_i) of each pixel's level under its categorical: logits (B, D, L), x (B, D) long -> (B, D)."""
    return torch.log_softmax(logits, -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)


def draw(logits: Tensor, gen: torch.Generator) -> Tensor:
    """One level per row from categorical logits (N, L) -> (N,) long."""
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)


class ARModel(nn.Module):
    """An autoregressive model of D pixels with L levels each (see the module docstring)."""

    def __init__(self, d: int, levels: int, orders: Tensor):
        super().__init__()
        self.D, self.L = d, levels
        self.register_buffer("orders", orders.long().clone())  # (K, D): saved, so weights keep their orderings

    @property
    def n_orders(self) -> int:
        return self.orders.shape[0]

    def order(self, k: int = 0) -> Tensor:
        return self.orders[k]

    def embed(self, x: Tensor) -> Tensor:
        """The network's input: (B, D) levels -> (B, D) in [0, 1]."""
        return x.float() / (self.L - 1)

    def per_pixel(self, g: Tensor) -> Tensor:
        """A gradient with respect to ``embed``'s output -> its size per pixel (B, D)."""
        return g.abs()

    def forward(self, e: Tensor, k: int = 0) -> Tensor:  # (B, ...) -> (B, D, L)
        raise NotImplementedError

    def cond_log_probs(self, x: Tensor, k: int = 0) -> Tensor:
        """log p(x_i | the pixels before i in ordering k) for every pixel: (B, D)."""
        return categorical_log_lik(self(self.embed(x), k), x)

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact log-likelihood (B,): with K orderings, of their equal mixture."""
        if self.n_orders == 1:
            return self.cond_log_probs(x).sum(1)
        lp = torch.stack([self.cond_log_probs(x, k).sum(1) for k in range(self.n_orders)])  # (K, B)
        return torch.logsumexp(lp, 0) - math.log(self.n_orders)

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """n images (n, D) long, drawn one pixel at a time (one pass of the network per pixel, for the whole
        batch), and the step at which each pixel was drawn (n, D). With K orderings each image first draws
        its ordering (the mixture); the images of one ordering are drawn together."""
        dev = self.orders.device
        ks = torch.randint(0, self.n_orders, (n,), generator=gen, device=dev) if self.n_orders > 1 else \
            torch.zeros(n, dtype=torch.long, device=dev)
        x = torch.zeros(n, self.D, dtype=torch.long, device=dev)
        pos = torch.zeros(n, self.D, dtype=torch.long, device=dev)
        for k in ks.unique().tolist():
            rows = (ks == k).nonzero().squeeze(1)
            x[rows] = self._sample_order(rows.numel(), k, gen)
            pos[rows] = positions(self.order(k))
        return x, pos

    def _sample_order(self, n: int, k: int, gen: torch.Generator) -> Tensor:
        x = torch.zeros(n, self.D, dtype=torch.long, device=self.orders.device)
        for i in self.order(k).tolist():
            x[:, i] = draw(self(self.embed(x), k)[:, i], gen)
        return x


class FVSBN(ARModel):
    """Fully visible sigmoid (here softmax) belief network: logits_i = b_i + W_i x_<i, one regression per pixel."""

    def __init__(self, d: int, levels: int, orders: Tensor):
        super().__init__(d, levels, orders)
        self.weight = nn.Parameter(torch.zeros(d, levels, d))  # (D_out, L, D_in)
        self.bias = nn.Parameter(torch.zeros(d, levels))

    def forward(self, e: Tensor, k: int = 0) -> Tensor:
        w = self.weight * before(self.order(k))[:, None, :]
        return torch.einsum("bj,ilj->bil", e, w) + self.bias


class NADE(ARModel):
    """Larochelle & Murray (2011): h_t = sigmoid(c + sum_{t' < t} W[o_t'] x_o_t'), logits_t = V[o_t] h_t + b[o_t]."""

    def __init__(self, d: int, levels: int, orders: Tensor, hidden: int):
        super().__init__(d, levels, orders)
        self.W = nn.Parameter(torch.randn(d, hidden) / math.sqrt(d))  # input weights, one row per pixel
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(d, levels, hidden) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(d, levels))

    def forward(self, e: Tensor, k: int = 0) -> Tensor:
        o = self.order(k)
        contrib = e[:, o, None] * self.W[o]  # (B, D, H), in the ordering's steps
        a = self.c + torch.cumsum(contrib, 1) - contrib  # the sum over the steps before: the O(D H) recursion
        logits = torch.einsum("bth,tlh->btl", torch.sigmoid(a), self.V[o]) + self.b[o]  # (B, D, L) by step
        return logits[:, positions(o)]  # back to pixel order

    def _sample_order(self, n: int, k: int, gen: torch.Generator) -> Tensor:
        """The recursion itself: one O(H L) update per pixel, not a pass of the whole network."""
        x = torch.zeros(n, self.D, dtype=torch.long, device=self.W.device)
        a = self.c.expand(n, -1)
        for i in self.order(k).tolist():
            x[:, i] = draw(torch.sigmoid(a) @ self.V[i].T + self.b[i], gen)
            a = a + (x[:, i, None].float() / (self.L - 1)) * self.W[i]
        return x


class MADE(ARModel):
    """Germain et al. (2015): a masked MLP; ordering k has its own input, hidden and output masks."""

    def __init__(self, d: int, levels: int, orders: Tensor, hidden: int, depth: int, gen: torch.Generator):
        super().__init__(d, levels, orders)
        sizes = [d] + [hidden] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(hidden, d * levels)
        degrees = torch.stack([made_degrees(positions(o), hidden, depth, gen) for o in orders])
        self.register_buffer("degrees", degrees)  # (K, depth, H): the connectivity of each ordering
        self._masks: dict[int, list[Tensor]] = {}

    def masks(self, k: int) -> list[Tensor]:
        if k not in self._masks:  # derived from the buffers, which never change after build
            self._masks[k] = made_masks(positions(self.order(k)), self.degrees[k], self.L)
        return self._masks[k]

    def _apply(self, fn, recurse=True):  # a move to another device drops the cached masks
        self._masks = {}
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):  # so does loading other degrees
        self._masks = {}
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, e: Tensor, k: int = 0) -> Tensor:
        ms = self.masks(k)
        h = e
        for lin, m in zip(self.hidden, ms):
            h = F.relu(F.linear(h, lin.weight * m, lin.bias))
        return F.linear(h, self.out.weight * ms[-1], self.out.bias).unflatten(1, (self.D, self.L))

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """With several orderings, still one pass per pixel for the whole batch: each image draws its
        ordering, the images are grouped by ordering (padded to the largest group), and one batched
        product per layer runs every ordering's masked network at once."""
        if self.n_orders == 1:
            return super().sample(n, gen)
        K, D, L, dev = self.n_orders, self.D, self.L, self.orders.device
        ks = torch.randint(0, K, (n,), generator=gen, device=dev)
        counts = torch.bincount(ks, minlength=K)
        by_k = torch.argsort(ks, stable=True)
        slot = torch.empty_like(ks)
        slot[by_k] = torch.arange(n, device=dev) - (torch.cumsum(counts, 0) - counts)[ks[by_k]]
        layers = [*self.hidden, self.out]
        ws = [torch.stack([lin.weight * self.masks(k)[j] for k in range(K)]).transpose(1, 2)
              for j, lin in enumerate(layers)]  # (K, in, out) per layer
        x = torch.zeros(K, int(counts.max()), D, dtype=torch.long, device=dev)
        ar = torch.arange(K, device=dev)
        for t in range(D):
            h = self.embed(x)
            for w, lin in zip(ws[:-1], layers[:-1]):
                h = F.relu(torch.baddbmm(lin.bias, h, w))
            logits = torch.baddbmm(self.out.bias, h, ws[-1]).unflatten(2, (D, L))  # (K, m, D, L)
            i = self.orders[:, t]  # the pixel each ordering draws at step t
            x[ar, :, i] = draw(logits[ar, :, i].reshape(-1, L), gen).view(K, -1)
        pos = torch.stack([positions(o) for o in self.orders])
        return x[ks, slot], pos[ks]


class PixelCNN(ARModel):
    """Masked convolutions on a side x side image, raster order; the input is each pixel's level one-hot."""

    def __init__(self, levels: int, side: int, channels: int, layers: int, kernel: int, gated: bool):
        super().__init__(side * side, levels, torch.arange(side * side)[None])
        self.side, self.gated = side, gated
        c = channels
        if gated:
            self.blocks = nn.ModuleList(GatedBlock(levels if i == 0 else c, c, kernel if i == 0 else 3, i == 0)
                                        for i in range(layers))
        else:
            self.first = MaskedConv2d(levels, c, kernel, "A")
            self.blocks = nn.ModuleList(MaskedConv2d(c, c, 3, "B") for _ in range(layers - 1))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, levels, 1))

    def embed(self, x: Tensor) -> Tensor:  # (B, D) -> (B, L, side, side)
        return F.one_hot(x, self.L).float().unflatten(1, (self.side, self.side)).permute(0, 3, 1, 2)

    def per_pixel(self, g: Tensor) -> Tensor:
        return g.abs().sum(1).flatten(1)

    def forward(self, e: Tensor, k: int = 0) -> Tensor:
        if self.gated:
            v = h = e
            for block in self.blocks:
                v, h = block(v, h)
        else:
            h = self.first(e)
            for conv in self.blocks:
                h = h + conv(F.relu(h))
        return self.head(h).flatten(2).transpose(1, 2)  # (B, L, side, side) -> (B, D, L)


@torch.enable_grad()
def dependency(model: ARModel, x: Tensor, k: int = 0) -> Tensor:
    """How much each conditional depends on each input, by gradients: (D, D), [i, j] = the mean over the
    probe images ``x`` (n, D) of |d log p(x_i | ...) / d input_j|. Every output of every probe comes from
    one backward pass (the probe repeated D times, copy i asking about output i: the copies are independent)."""
    n, d = x.shape
    e = model.embed(x).repeat_interleave(d, 0).detach().requires_grad_(True)  # (n D, ...)
    xs = x.repeat_interleave(d, 0)
    rows = torch.arange(n * d, device=x.device)
    i = rows % d
    lp = torch.log_softmax(model(e, k)[rows, i], -1).gather(1, xs[rows, i, None])  # (n D, 1)
    (g,) = torch.autograd.grad(lp.sum(), e)
    return model.per_pixel(g).reshape(n, d, d).mean(0)


class MDN2D(nn.Module):
    """p(x) = p(x_a) p(x_b | x_a) on the plane, (a, b) = (0, 1) or (1, 0): the first a learned 1D Gaussian
    mixture, the second a mixture whose weights, means and log-stds an MLP computes from x_a."""

    MIN_LOG_STD = -7.0

    def __init__(self, components: int, hidden: int, first: int, scale: float):
        super().__init__()
        self.a, self.b, self.scale, self.K = first, 1 - first, scale, components
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.linspace(-1.5, 1.5, components) * scale if components > 1
                                  else torch.zeros(1))
        self.raw_stds = nn.Parameter(torch.full((components,), math.log(0.3 * scale)))
        self.net = mlp(1, 3 * components, hidden, depth=2, act="tanh")

    def _log_stds(self, raw: Tensor) -> Tensor:
        return self.MIN_LOG_STD + F.softplus(raw - self.MIN_LOG_STD)

    def first_params(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.logits, self.means, self._log_stds(self.raw_stds)

    def cond_params(self, xa: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The mixture of x_b given x_a (N,): logits, means, log-stds, each (N, K)."""
        lg, m, s = self.net(xa[:, None] / self.scale).chunk(3, -1)
        return lg, m * self.scale, self._log_stds(s + math.log(0.3 * self.scale))

    def log_prob_first(self, xa: Tensor) -> Tensor:
        return mixture_log_prob(xa, *self.first_params())

    def log_prob_cond(self, xb: Tensor, xa: Tensor) -> Tensor:
        """log p(x_b | x_a), (N,) each -> (N,)."""
        return mixture_log_prob(xb, *self.cond_params(xa))

    def log_prob(self, x: Tensor) -> Tensor:  # (N, 2) -> (N,)
        xa, xb = x[:, self.a], x[:, self.b]
        return self.log_prob_first(xa) + self.log_prob_cond(xb, xa)

    def grid_log_prob(self, xs: Tensor, ys: Tensor) -> Tensor:
        """log p on the grid xs (Nx,) x ys (Ny,), (Ny, Nx) with rows along y. The conditional's network runs
        once per value of x_a, not once per grid point: the factorisation makes the whole grid cheap."""
        va, vb = (xs, ys) if self.a == 0 else (ys, xs)
        lg, m, s = self.cond_params(va)  # (Na, K)
        lp = self.log_prob_first(va)[:, None] + mixture_log_prob(vb.expand(len(va), -1), lg[:, None], m[:, None],
                                                                 s[:, None])  # (Na, Nb)
        return lp.T if self.a == 0 else lp

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """x_a from its mixture, then x_b given it: two passes for the whole batch. (n, 2)."""
        lg, m, s = self.first_params()
        xa = mixture_sample(lg.expand(n, -1), m.expand(n, -1), s.expand(n, -1), gen)
        xb = mixture_sample(*self.cond_params(xa), gen)
        return torch.stack([xa, xb], 1)[:, [self.a, self.b]]
