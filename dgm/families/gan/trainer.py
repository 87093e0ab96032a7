"""The GAN's stepped trainer (its config: ``config.py``): alternating D and G updates for every loss, and CFG.

    from dgm.families.gan.config import GANConfig
    from dgm.families.gan.trainer import GANTrainer
    t = GANTrainer(GANConfig(data="ring8", loss="wgan_gp"), seed=0)
    t.step(2000); t.final()   # {"d_loss", "g_loss", "modes", "high_quality", "mode_kl", "mmd", "js", "w1", ...}

Metrics (``evaluate``, every ``eval_every`` steps) are estimates from samples, each with its estimator:
JS between p and G's density q on a grid, both smoothed by the same Gaussian kernel (q: a kernel density
estimate of G's samples; p: its exact convolution with the kernel), mean and spread over JS_DRAWS sets of
2,500 samples; MMD^2 (biased) with a first-order standard error; W1 by exact optimal transport on
W1_SAMPLES points; and for the WGAN losses the critic's own estimate of W1. Each comes with its floor,
the value that true samples of p get in place of G's (``floors``).

Speed: real samples and latent codes are drawn for many steps at once (one call to the sampler per
``POOL`` batches, from ``self.gen``); the generator's forward pass is shared by the last D step and the G
step; the G step back-propagates to G's parameters only (D's weight gradients are not computed); Adam
runs fused; nothing syncs with the host inside a step.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

import dgm.core.data
from dgm.core import nets
from dgm.core.metrics import (
    EVAL_SAMPLES, MMD, W1_SAMPLES, Grid, binned_kde, grid_js, mode_stats, wasserstein1,
)
from dgm.core.train import Trainer
from dgm.families.gan.config import GANRuntime
from dgm.families.gan.model import (
    PROB_LOSSES, MinibatchStd, cfg_move, clip_, d_loss, discriminator, g_loss, gradient_penalty, group_reference,
    build_optimizers, judge_alone, kde_bandwidth, optimizer_state, pack, sample_prior, smoothed_log_p, unrolled_params,
    zero_centred_penalty,
)

JS_RESOLUTION = 200  # grid for JS and D*: 200 x 200 cells over the data's box
JS_DRAWS = 4  # sets of 2,500 samples of G (and of p, for the floor) that JS is averaged over
WGAN_LOSSES = ("wgan", "wgan_gp")
POOL = 32  # batches of real samples / latent codes drawn per call to the sampler
PARTNER_SETS = 4  # PacGAN, figures and metrics: a point is packed with m - 1 of G's samples, averaged over this many sets


class GANTrainer(Trainer):
    """Alternating GAN training on a 2D distribution (or CFG, with ``loss="cfg"``); the step mode is a
    runtime setting (``GANRuntime``)."""

    Runtime = GANRuntime
    eval_every = 1000
    # MMD with its standard error, the exact W1 and the JS spread: about 0.4 s, the first 1 s (its floors), so a
    # Step that meets one (the early schedule: steps 0, 10, 20, 50, ...) shows its model first
    slow_eval = True

    def build(self):
        c = self.config
        dev = self.device
        self.data = dgm.core.data.get(c.data)
        self.G = nets.mlp(c.z_dim, 2, c.g_width, c.g_depth, act="leaky_relu").to(dev)
        self.D = discriminator(2 * c.pack, c.d_width, c.d_depth, spectral_norm=c.sn, mbstd=c.mbstd).to(dev)
        self._mbstd = next((m for m in self.D if isinstance(m, MinibatchStd)), None)
        # the weight average that samples are drawn from (None: G itself)
        self.G_avg = copy.deepcopy(self.G).requires_grad_(False) if c.ema > 0 else None
        build_optimizers(self)
        self._g_params = list(self.G.parameters())
        self._real_pool: Tensor | None = None
        self._z_pool: Tensor | None = None
        self._real_i = self._z_i = POOL
        # fixed evaluation material, drawn once from the evaluation stream
        ge = self.eval_generator()
        self.real_eval = self.data.sample(EVAL_SAMPLES, ge, device=dev)  # (N, 2)
        self.z_eval = sample_prior(c.prior, EVAL_SAMPLES, c.z_dim, ge, dev)  # (N, z)
        # more codes for the spread of JS over draws (after the ones above: those stay as they were)
        self.z_more = sample_prior(c.prior, (JS_DRAWS - 1) * EVAL_SAMPLES, c.z_dim, ge, dev).view(
            JS_DRAWS - 1, EVAL_SAMPLES, c.z_dim)
        self._mmd = MMD(self.real_eval)
        self.js_grid = Grid.over(self.data.box, JS_RESOLUTION, device=dev)
        self.kde_h = kde_bandwidth(self.data, self.real_eval, JS_RESOLUTION)
        self.log_p_smooth = (smoothed_log_p(self.data, self.js_grid, self.kde_h, JS_RESOLUTION)
                             if self.data.has_unnormalized else None)
        self._floors: dict[str, float] | None = None

    # -- batches: drawn POOL steps at a time, from self.gen ---------------------------------------
    def _real(self) -> Tensor:
        if self._real_i >= POOL:
            b = self.config.batch
            self._real_pool = self.data.sample(POOL * b, self.gen).view(POOL, b, 2)
            self._real_i = 0
        x = self._real_pool[self._real_i]
        self._real_i += 1
        return x

    def _z(self) -> Tensor:
        if self._z_i >= POOL:
            c = self.config
            self._z_pool = sample_prior(c.prior, POOL * c.batch, c.z_dim, self.gen, self.device).view(
                POOL, c.batch, c.z_dim)
            self._z_i = 0
        z = self._z_pool[self._z_i]
        self._z_i += 1
        return z

    def extra_state(self):
        return {"pools": (self._real_pool, self._real_i, self._z_pool, self._z_i)}

    def load_extra_state(self, extra):
        self._real_pool, self._real_i, self._z_pool, self._z_i = extra["pools"]

    # -- one step --------------------------------------------------------------------------------
    def _packed(self, x: Tensor) -> Tensor:
        """Points (B, 2) as D's inputs: packs of ``pack`` points (B // m, 2m), or the points themselves."""
        return pack(x, self.config.pack) if self.config.pack > 1 else x

    def _d_pair(self, x: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """D's outputs on real and generated inputs (already packed). One batch through D where D treats
        rows independently; with the minibatch-std layer, two, so that no group mixes real and fake."""
        if self._mbstd is not None:
            return self.D(x)[:, 0], self.D(fake)[:, 0]
        out = self.D(torch.cat([x, fake]))[:, 0]  # (2B,)
        return out[: x.shape[0]], out[x.shape[0]:]

    def _d_step(self, x: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """One D update on real x (B, 2) and generated ``fake`` (B, 2, detached); returns
        (D loss, D's outputs on the generated inputs, detached)."""
        c = self.config
        xr, xf = self._packed(x), self._packed(fake)
        real_out, fake_out = self._d_pair(xr, xf)
        loss = d_loss(c.loss, real_out, fake_out)
        total = loss
        if c.loss == "wgan_gp":
            eps = torch.rand(xr.shape[0], 1, generator=self.gen, device=self.device)
            total = total + c.gp * gradient_penalty(self.D, xr, xf, eps)
        if c.r1:
            total = total + c.r1 / 2 * zero_centred_penalty(self.D, xr)
        if c.r2:
            total = total + c.r2 / 2 * zero_centred_penalty(self.D, xf)
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        if c.loss == "wgan":
            clip_(self.D, c.clip)
        return loss.detach(), fake_out.detach()

    def _g_outputs(self, fake: Tensor, real: Tensor | None) -> Tensor:
        """D's outputs on G's samples ``fake`` (B, 2, with their graph) for G's loss: at D's current
        parameters, or, unrolled, at its parameters k optimiser steps ahead on (real, fake)."""
        c = self.config
        if not c.unroll:
            return self.D(self._packed(fake))[:, 0]
        if real is None:
            real = self._real()
        group = self.opt_d.param_groups[0]
        ahead = unrolled_params(self.D, c.loss, real, fake, c.unroll, c.optimizer, optimizer_state(self.opt_d, self.D),
                                group["lr"], (c.beta1, c.beta2), prepare=self._packed)
        return functional_call(self.D, ahead, (self._packed(fake),))[:, 0]

    def train_step(self) -> dict[str, Tensor]:
        c = self.config
        train_d, train_g = self.runtime.mode != "g", self.runtime.mode != "d"
        if c.loss == "cfg":
            return self._cfg_step(train_d, train_g)
        # D steps; the last one shares the generator's forward pass with the G step
        dl = fake_out = x = None
        for i in range(c.d_steps if train_d else 0):
            last = i == c.d_steps - 1
            z = self._z()
            if last and train_g:
                fake = self.G(z)  # (B, 2), keeps its graph for the G step
            else:
                with torch.no_grad():
                    fake = self.G(z)
            x = self._real()
            dl, fake_out = self._d_step(x, fake.detach())
        if train_g:
            if not train_d:
                fake = self.G(self._z())
            gl = g_loss(c.loss, self._g_outputs(fake, x))
            self.opt_g.zero_grad(set_to_none=True)
            gl.backward(inputs=self._g_params)  # G's gradients only: D's weight gradients are not needed
            self.opt_g.step()
            gl = gl.detach()
            if dl is None:  # G only: report D's loss on this batch without training it
                with torch.no_grad():
                    dl = d_loss(c.loss, *self._d_pair(self._packed(self._real()), self._packed(fake.detach())))
        else:
            gl = g_loss(c.loss, fake_out)  # D only: the generator's loss at the current D
        self._decay()
        return {"d_loss": dl, "g_loss": gl}

    def _d_points(self, x: Tensor) -> Tensor:
        """D on generated points x (B, 2) as in training (packed): the gradient of its sum is each point's own."""
        return self.D(self._packed(x))

    def _cfg_step(self, train_d: bool, train_g: bool) -> dict[str, Tensor]:
        """xICFG, simplified: k logistic-regression steps of D (real vs G(z)); then move the generated
        points along grad D for T steps; then fit G to the moved points by one regression step."""
        c = self.config
        dl = None
        for _ in range(c.d_steps if train_d else 0):
            with torch.no_grad():
                fake = self.G(self._z())
            dl, _ = self._d_step(self._real(), fake)
        if train_g:
            z = self._z()
            fake = self.G(z)
            target = cfg_move(self._d_points, fake.detach(), c.eta, c.T)  # (B, 2)
            gl = 0.5 * (fake - target).pow(2).sum(1).mean()
            self.opt_g.zero_grad(set_to_none=True)
            gl.backward()
            self.opt_g.step()
            gl = gl.detach()
            if dl is None:
                with torch.no_grad():
                    dl = d_loss(c.loss, *self._d_pair(self._packed(self._real()), self._packed(fake.detach())))
        else:
            gl = torch.zeros((), device=self.device)
        self._decay()
        return {"d_loss": dl, "g_loss": gl}

    def _decay(self) -> None:
        """End of a step: learning-rate decay, and G's weight average."""
        if self.config.decay < 1.0:
            self.sched_d.step()
            self.sched_g.step()
        if self.G_avg is not None:
            # the decay ramps up from 0.1, so the average does not hold on to the initial weights
            beta = min(self.config.ema, (1 + self.iteration) / (10 + self.iteration))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.G_avg.parameters()), self._g_params, 1 - beta)

    @property
    def sampler(self) -> nn.Module:
        """The generator whose samples are shown and measured: G's weight average, or G."""
        return self.G if self.G_avg is None else self.G_avg

    # -- evaluation and figures --------------------------------------------------------------------
    @contextlib.contextmanager
    def frozen(self):
        """Evaluation mode for G and D (spectral norm must not advance its power iteration)."""
        modes = (self.G.training, self.D.training)
        self.G.eval()
        self.D.eval()
        try:
            yield
        finally:
            self.G.train(modes[0])
            self.D.train(modes[1])

    def _partners(self) -> Tensor | None:
        """PacGAN: the m - 1 companions a point is packed with when D judges it alone (figures, metrics):
        PARTNER_SETS sets of G's samples from the fixed evaluation codes, (S, m - 1, 2); None without packing."""
        m = self.config.pack
        if m == 1:
            return None
        with torch.no_grad():
            return self.sampler(self.z_eval[: PARTNER_SETS * (m - 1)]).view(PARTNER_SETS, m - 1, 2)

    def d_point(self, x: Tensor) -> Tensor:
        """D's output at each point of x (N, 2), differentiable in x, in evaluation mode (call inside
        ``frozen()``). Packed, a point is judged in a pack with m - 1 of G's samples, averaged over
        PARTNER_SETS sets of them; with the minibatch-std layer, as a point in a group of G's samples
        (the layer's statistic is the average one of G's samples in groups of its size)."""
        if self._mbstd is not None:
            with torch.no_grad():
                self._mbstd.reference = group_reference(self.D, self._packed(self.sampler(self.z_eval[: self.config.batch])))
        return judge_alone(self.D, x, self._partners())

    @torch.no_grad()
    def generate(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Samples of G: the fixed evaluation codes (default) or n fresh ones."""
        with self.frozen():
            if n is None:
                return self.sampler(self.z_eval)
            z = sample_prior(self.config.prior, n, self.config.z_dim, generator or self.eval_generator(2), self.device)
            return self.sampler(z)

    def q_grid(self, samples: Tensor) -> Tensor:
        """The kernel density estimate of samples (N, 2) on the JS grid (bandwidth ``kde_h``)."""
        return binned_kde(samples, self.js_grid, self.kde_h)

    def js(self, samples: Tensor) -> float:
        """JS in nats between p and the density of ``samples``, both smoothed by the same kernel."""
        return grid_js(self.js_grid, self.log_p_smooth, self.q_grid(samples).log())

    def _spread(self, values: list[float]) -> tuple[float, float]:
        t = torch.tensor(values, dtype=torch.float64)
        return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0

    @property
    def floors(self) -> dict[str, float]:
        """What each sample-based metric gives for a perfect generator: true samples of p (drawn from
        an evaluation stream of their own) in place of G's. Computed once per run."""
        if self._floors is None:
            ge = self.eval_generator(5)
            sets = [self.data.sample(EVAL_SAMPLES, ge, device=self.device) for _ in range(JS_DRAWS)]
            f = {"mmd_floor": self._mmd.mmd2(sets[0]),
                 "w1_floor": wasserstein1(sets[0][:W1_SAMPLES], self.real_eval[:W1_SAMPLES])}
            if self.log_p_smooth is not None:
                f["js_floor"], f["js_floor_sd"] = self._spread([self.js(x) for x in sets])
            self._floors = f
        return self._floors

    def evaluate(self) -> dict[str, float]:
        x = self.generate()  # (N, 2)
        out: dict[str, float] = {}
        if self.data.centers is not None and self.data.std is not None:
            out.update(mode_stats(x, self.data.centers, self.data.std))
        finite = x[torch.isfinite(x).all(1)]
        if finite.shape[0] > 1:
            out["mmd"], out["mmd_se"] = self._mmd.mmd2_se(finite)
        else:
            out["mmd"] = float("nan")
        out["w1"] = wasserstein1(x[:W1_SAMPLES], self.real_eval[:W1_SAMPLES])
        if self.config.loss in WGAN_LOSSES and self.config.pack == 1:
            # the critic's estimate of W1: E_p f - E_q f on the same 2,500 + 2,500 points (a packed critic
            # judges packs: its gap is not an estimate of W1 between p and q)
            out["critic_w1"] = float(self.d_raw(self.real_eval).mean() - self.d_raw(finite).mean())
        if self.log_p_smooth is not None:
            more = [self.generate_codes(z) for z in self.z_more]
            out["js"], out["js_sd"] = self._spread([self.js(s) for s in (x, *more)])
        out.update(self.floors)
        return out

    @torch.no_grad()
    def generate_codes(self, z: Tensor) -> Tensor:
        with self.frozen():
            return self.sampler(z)

    def d_raw(self, x: Tensor) -> Tensor:
        """D's raw output (a logit, a critic value or a score) at x (N, 2), without training (``d_point``)."""
        with torch.no_grad(), self.frozen():
            return self.d_point(x)

    def d_output(self, x: Tensor) -> Tensor:
        """What the heatmap shows: sigmoid(l) for the classifier losses, else D's raw output."""
        out = self.d_raw(x)
        return torch.sigmoid(out) if self.config.loss in PROB_LOSSES else out
