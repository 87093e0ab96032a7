"""The autoregressive page's config and trainer: maximum likelihood on the digits (17 grey levels, or
binarised) with FVSBN, NADE, MADE or a PixelCNN, or on 2D data with p(x_a) p(x_b | x_a).

Held-out figures (``evaluate``) come from the best validation checkpoint, as on the VAE page, so they
do not get worse when the model starts to overfit; the curves show the current model on training and
validation data, so the overfitting is visible.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import dgm.core.data
import dgm.core.digits
from dgm.core.config import knob
from dgm.core.train import Trainer
from dgm.families.autoregressive.layers import orderings, positions
from dgm.families.autoregressive.model import FVSBN, MADE, MDN2D, NADE, ARModel, PixelCNN, dependency

DIGITS, BINARY = "digits", "digits_binary"
IMAGE_DATA = (DIGITS, BINARY)
DATA_CHOICES = (*IMAGE_DATA, *dgm.core.data.names("sampled"), "custom")
MODELS = ("fvsbn", "nade", "made", "pixelcnn")
ORDERINGS = (1, 2, 4, 8, 16)  # MADE's choices
SIDE = 8  # the digits are 8 x 8
INK = 8  # binarised digits: a pixel is 1 when its grey level is at least 8 (of 16)
HELDOUT_2D = 1000  # validation, test and training-probe points for 2D data
PROBE = 300  # training images on which the training NLL is measured
PROBES = 4  # random images whose gradients the dependency check averages
LIKELIHOOD_REPEATS = 3  # one-pass likelihood timings of a sampled batch (the fastest is taken: a hiccup only slows)


def is_images(c) -> bool:
    return c.data in IMAGE_DATA


def _model(c, *names: str) -> bool:
    return is_images(c) and c.model in names


@dataclass
class ARConfig:
    data: str = knob(DIGITS, "data: the 8x8 digits (17 grey levels, or binarised: another data set) or a 2D "
                     "distribution", choices=DATA_CHOICES, group="Data")
    train_size: int = knob(1197, "how many training digits to use (fewer overfit sooner)", label="training digits",
                           choices=(100, 200, 500, 1000, 1197), group="Data", show=is_images)
    model: str = knob("made", "fvsbn: a softmax regression per pixel; nade: one shared hidden layer; made: a "
                      "masked MLP; pixelcnn: masked convolutions", choices=MODELS, group="Model", show=is_images)
    ordering: str = knob("natural", "the order of the pixels: raster (natural) or a random permutation (MADE: of "
                         "its first ordering)", choices=("natural", "random"), group="Model",
                         show=lambda c: _model(c, "fvsbn", "nade", "made"))
    orderings: int = knob(1, "MADE: train over this many orderings and connectivities, one per batch in turn, and "
                          "use their average (an ensemble, still an exact likelihood) at test time",
                          label="MADE orderings", choices=ORDERINGS, group="Model",
                          show=lambda c: _model(c, "made"))
    hidden: int = knob(256, "hidden units (NADE: its one layer; MADE: each layer; 2D: the conditional's MLP)",
                       label="hidden units", choices=(32, 64, 128, 256, 512, 1024), group="Model",
                       show=lambda c: not is_images(c) or c.model in ("nade", "made"))
    depth: int = knob(2, "MADE: hidden layers", label="MADE hidden layers", lo=1, hi=3, group="Model",
                      show=lambda c: _model(c, "made"))
    stack: str = knob("plain", "PixelCNN: plain stacked masked convolutions (with a blind spot), or gated vertical "
                      "and horizontal stacks (without)", choices=("plain", "gated"), label="PixelCNN stack",
                      group="Model", show=lambda c: _model(c, "pixelcnn"))
    kernel: int = knob(7, "PixelCNN: the first layer's kernel (mask A); the later ones are 3x3",
                       label="first kernel", choices=(3, 5, 7), group="Model", show=lambda c: _model(c, "pixelcnn"))
    layers: int = knob(5, "PixelCNN: masked convolution layers", lo=2, hi=8, group="Model",
                       show=lambda c: _model(c, "pixelcnn"))
    channels: int = knob(32, "PixelCNN: feature maps per layer", choices=(16, 32, 64, 128), group="Model",
                         show=lambda c: _model(c, "pixelcnn"))
    first: str = knob("x1", "2D: the coordinate that comes first, p(x1) p(x2|x1) or p(x2) p(x1|x2)",
                      label="first coordinate", choices=("x1", "x2"), group="Model", show=lambda c: not is_images(c))
    components: int = knob(8, "2D: Gaussians in each one-dimensional mixture", label="mixture components",
                           choices=(1, 2, 3, 5, 8, 12, 16, 24), group="Model", show=lambda c: not is_images(c))
    lr: float = knob(1e-3, "Adam learning rate", label="learning rate", lo=1e-4, hi=1e-2, log=True, group="Training")
    batch: int = knob(64, "data points per step", label="batch size", choices=(16, 32, 64, 128, 256, 512, 1024),
                      group="Training")


def build_model(c: ARConfig, levels: int, gen: torch.Generator) -> ARModel:
    """The image model a config describes (orderings and connectivities drawn from ``gen``)."""
    d = SIDE * SIDE
    natural = c.ordering == "natural"
    if c.model == "pixelcnn":
        return PixelCNN(levels, SIDE, c.channels, c.layers, c.kernel, c.stack == "gated")
    if c.model == "made":
        return MADE(d, levels, orderings(d, c.orderings, natural, gen), c.hidden, c.depth, gen)
    orders = orderings(d, 1, natural, gen)
    if c.model == "nade":
        return NADE(d, levels, orders, c.hidden)
    if c.model == "fvsbn":
        return FVSBN(d, levels, orders)
    raise ValueError(f"unknown model {c.model!r}; choose one of {', '.join(MODELS)}")


class ARTrainer(Trainer):
    eval_every = 100

    def build(self):
        c = self.config
        self.images = is_images(c)
        dev = self.device
        if self.images:
            d = dgm.core.digits.digits()
            self.levels = dgm.core.digits.DIGIT_LEVELS if c.data == DIGITS else 2
            prep = (lambda x: x.long()) if c.data == DIGITS else (lambda x: (x >= INK).long())  # noqa: E731
            self.train_x = prep(d.train.x[: c.train_size]).to(dev)  # (N, 64) levels
            self.val_x, self.test_x = prep(d.val.x).to(dev), prep(d.test.x).to(dev)
            self.test_y = d.test.y.to(dev)
            self.dist = None
            # orderings and connectivities drawn on the CPU: the same seed gives the same ones on every device
            structure = torch.Generator().manual_seed(self.eval_generator(9).initial_seed())
            self.model = build_model(c, self.levels, structure).to(dev)
        else:
            self.dist = dgm.core.data.get(c.data)
            self.train_x = self.dist.sample(HELDOUT_2D, self.eval_generator(11), device=dev)  # for train_nll
            self.val_x = self.dist.sample(HELDOUT_2D, self.eval_generator(12), device=dev)
            self.test_x = self.dist.sample(HELDOUT_2D, self.eval_generator(13), device=dev)
            self.test_y = None
            scale = max(abs(v) for v in self.dist.box) / 2
            self.model = MDN2D(c.components, c.hidden, 0 if c.first == "x1" else 1, scale).to(dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        # the best validation checkpoint (a module, so restore_last_good and reset keep it consistent)
        self.best_model = copy.deepcopy(self.model)
        self.best_model.register_buffer("best_val", torch.tensor(math.inf, device=dev))
        self.best_model.register_buffer("best_step", torch.tensor(0, device=dev))
        self.train_probe = self.train_x[:PROBE]
        self._test_cache: dict[tuple, dict[str, float]] = {}
        self._dependency: dict[int, tuple[int, np.ndarray]] = {}  # ordering -> (step, matrix): the latest check
        self.sampling: dict | None = None  # the latest measure_sampling record
        #: the VAE page's -ELBO (nats per image) on the same test digits and categorical likelihood, from its run in
        #: this browser session (the page sets it; None without one): the bound the exact NLL is compared with
        self.vae_bound: float | None = None

    @property
    def n_orders(self) -> int:
        return self.model.n_orders if self.images else 1

    @property
    def dims(self) -> int:
        return self.train_x.shape[1]

    # -- training --------------------------------------------------------------------------------
    def _batch(self) -> Tensor:
        if self.dist is not None:
            return self.dist.sample(self.config.batch, self.gen)
        idx = torch.randint(0, self.train_x.shape[0], (self.config.batch,), generator=self.gen, device=self.device)
        return self.train_x[idx]

    def train_step(self):
        x = self._batch()
        if self.images:  # MADE's orderings take turns, one per batch (connectivity-agnostic training)
            loss = -self.model.cond_log_probs(x, self.iteration % self.n_orders).sum(1).mean()
        else:
            loss = -self.model.log_prob(x).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"batch_nll": loss.detach()}

    # -- evaluation ------------------------------------------------------------------------------
    def _nll(self, model, x: Tensor, one: bool = False) -> float:
        lp = model.cond_log_probs(x, 0).sum(1) if one else model.log_prob(x)
        return float(-lp.mean())

    def _test_metrics(self) -> dict[str, float]:
        """Test figures of the best checkpoint, cached per checkpoint."""
        b = self.best_model
        key = (int(b.best_step), float(b.best_val))
        if key not in self._test_cache:
            nll = self._nll(b, self.test_x)
            out = {"nll": nll}
            if self.images:
                out["bits_per_dim"] = nll / (self.dims * math.log(2))
                if self.n_orders > 1:
                    out["nll_one"] = self._nll(b, self.test_x, one=True)
            self._test_cache = {key: out}
        return dict(self._test_cache[key])

    def evaluate(self) -> dict[str, float]:
        m = self.model
        out = {"train_nll": self._nll(m, self.train_probe), "val_nll": self._nll(m, self.val_x)}
        if self.n_orders > 1:
            out["val_nll_one"] = self._nll(m, self.val_x, one=True)
        if out["val_nll"] < float(self.best_model.best_val):
            self.best_model.load_state_dict({**m.state_dict(), "best_val": torch.tensor(out["val_nll"]),
                                             "best_step": torch.tensor(self.iteration)})
        out.update(self._test_metrics(), best_step=int(self.best_model.best_step),
                   best_val_nll=float(self.best_model.best_val))
        return out

    def on_restore(self) -> None:
        self._test_cache, self._dependency = {}, {}

    # -- what the page measures of the current model ---------------------------------------------------
    def dependency(self, k: int = 0, current: bool = True) -> np.ndarray:
        """The dependency matrix of ordering k (``model.dependency``: [i, j] = mean |d log p(x_i | ...) / d x_j|),
        averaged over PROBES images of random levels (in a digit the border pixels are always blank, which would
        silence some units by chance). Kept with its step: ``current=False`` takes the kept one whatever its step
        (a lesson's status line, every frame, reads the page's once-a-second check instead of making its own)."""
        kept = self._dependency.get(k)
        if kept is None or (current and kept[0] != self.iteration):
            m = self.model
            probes = torch.randint(0, m.L, (PROBES, m.D), generator=self.eval_generator(5), device=self.device)
            kept = self._dependency[k] = (self.iteration, dependency(m, probes, k).cpu().numpy())
        return kept[1]

    def dependency_counts(self, k: int = 0, current: bool = True) -> tuple[int, int, int]:
        """Of ordering k's dependency check: (dependencies on the pixel itself or later ones: must be 0; earlier
        pixels not seen: a blind spot; earlier pairs)."""
        return dependency_counts(self.dependency(k, current), positions(self.model.order(k)).cpu().numpy())

    def measure_sampling(self, n: int, gen: torch.Generator) -> dict:
        """n samples of the current model, drawn one pixel at a time, with the step of each pixel, the time the
        batch took, and the time of one pass of the exact likelihood of the same images (the fastest of
        LIKELIHOOD_REPEATS); kept as ``self.sampling``."""
        (x, pos), seconds = timed_sample(self.model, n, gen)
        with torch.no_grad():
            once = min(timed(lambda: self.model.log_prob(x), self.device)[1] for _ in range(LIKELIHOOD_REPEATS))
        self.sampling = {"x": (x.float() / (self.levels - 1)).cpu().numpy(), "pos": pos.cpu().numpy(),
                         "seconds": seconds, "likelihood_seconds": once, "n": n, "step": self.iteration}
        return self.sampling

    def final(self) -> dict[str, float]:
        """All latest metrics, and the measured sampling time per image (or 2D point) in seconds."""
        super().final()
        n = 100 if self.images else HELDOUT_2D
        self.latest_eval["sample_seconds"] = sample_seconds(self.model, n, self.eval_generator(8))
        return {**self.latest, **self.latest_eval}


def dependency_counts(dep: np.ndarray, pos: np.ndarray) -> tuple[int, int, int]:
    """(dependencies on the pixel itself or later ones: must be 0; earlier pixels not seen; earlier pairs)."""
    earlier = pos[None, :] < pos[:, None]
    return int(((dep > 0) & ~earlier).sum()), int(((dep == 0) & earlier).sum()), int(earlier.sum())


def timed(fn, device: torch.device):
    """``fn()`` and its wall time in seconds (synchronised on a GPU)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def timed_sample(model, n: int, gen: torch.Generator):
    """``model.sample(n, gen)`` and its wall time in seconds."""
    return timed(lambda: model.sample(n, gen), gen.device)


def sample_seconds(model, n: int, gen: torch.Generator) -> float:
    return timed_sample(model, n, gen)[1] / n


def samples(trainer: ARTrainer, n: int) -> np.ndarray:
    """n model samples: points (n, 2) for 2D data; for the digits, images (n, 64) with intensities in [0, 1]."""
    gen = trainer.eval_generator(7)
    if not trainer.images:
        return trainer.model.sample(n, gen).cpu().numpy()
    x, _ = trainer.model.sample(n, gen)
    return (x.float() / (trainer.levels - 1)).cpu().numpy()
