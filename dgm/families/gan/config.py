"""The GAN page's settings: the data, the game (seven losses and CFG), the two networks, the training
schedule and the mode-collapse remedies (``GANConfig``), and what changes without a restart (``GANRuntime``)."""

from __future__ import annotations

from dataclasses import dataclass

import dgm.core.data
from dgm.core.config import knob
from dgm.families.gan.model import LOSSES

REMEDIES = "Mode-collapse remedies"
GAMMAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _is(*names):
    return lambda c: c.loss in names


@dataclass
class GANConfig:
    data: str = knob("ring8", "the 2D data set (p)", choices=(*dgm.core.data.names(), "custom"), group="Data")
    loss: str = knob("nonsaturating", "the game the two players play", choices=LOSSES, group="Loss",
                     label="loss")
    clip: float = knob(0.01, "WGAN: clip every D parameter to [-c, c] after each D step", lo=0.001, hi=1.0,
                       log=True, group="Loss", label="clip c", show=_is("wgan"))
    gp: float = knob(0.1, "WGAN-GP: weight of the gradient penalty (||grad D|| - 1)^2", lo=0.01, hi=100.0,
                     log=True, group="Loss", label="gradient penalty λ", show=_is("wgan_gp"))
    eta: float = knob(0.1, "CFG: particle step size, x <- x + eta grad D(x)", lo=0.01, hi=5.0, log=True,
                      group="Loss", label="CFG step η", show=_is("cfg"))
    T: int = knob(5, "CFG: particle steps per generator update", lo=1, hi=50, group="Loss",
                  label="CFG particle steps T", show=_is("cfg"))
    sn: bool = knob(False, "spectral normalisation of every layer of D (bounds its Lipschitz constant)",
                    group="Loss", label="spectral norm on D")
    d_steps: int = knob(2, "discriminator steps per generator step", lo=1, hi=10, group="Training",
                        label="D steps per G step (k)")
    lr_d: float = knob(2e-3, "discriminator learning rate", lo=1e-5, hi=1e-1, log=True, group="Training",
                       label="D learning rate")
    lr_g: float = knob(2e-3, "generator learning rate", lo=1e-5, hi=1e-1, log=True, group="Training",
                       label="G learning rate")
    optimizer: str = knob("adam", "optimiser of both players", choices=("adam", "sgd", "rmsprop"),
                          group="Training")
    beta1: float = knob(0.5, "Adam's beta1 (momentum)", lo=0.0, hi=0.99, step=0.01, group="Training",
                        label="Adam β1", show=lambda c: c.optimizer == "adam")
    beta2: float = knob(0.9, "Adam's beta2", lo=0.5, hi=0.999, step=0.001, group="Training", label="Adam β2",
                        show=lambda c: c.optimizer == "adam")
    batch: int = knob(256, "real and generated samples per step", lo=16, hi=2048, step=16, group="Training")
    decay: float = knob(0.85, "learning rates are multiplied by this every 1,000 steps (1: no decay); a decay "
                        "lets G settle precisely on narrow modes", lo=0.5,
                        hi=1.0, step=0.01, group="Training", label="LR decay per 1k steps")
    ema: float = knob(0.0, "the samples shown and measured come from an exponential moving average of G's weights "
                      "with this decay (0: G itself; 0.999 averages over about the last 1,000 steps). Averaging "
                      "smooths out G's oscillation around the equilibrium, so the samples sit tighter on the modes",
                      choices=(0.0, 0.99, 0.999, 0.9999), group="Training", label="G weight average (EMA)")
    g_width: int = knob(64, "hidden units per layer of G", lo=8, hi=512, step=8, group="Networks",
                        label="G width")
    g_depth: int = knob(4, "hidden layers of G", lo=1, hi=6, group="Networks", label="G depth")
    d_width: int = knob(64, "hidden units per layer of D", lo=8, hi=512, step=8, group="Networks",
                        label="D width")
    d_depth: int = knob(3, "hidden layers of D", lo=1, hi=6, group="Networks", label="D depth")
    z_dim: int = knob(2, "latent dimension", lo=1, hi=16, group="Networks", label="latent dim")
    prior: str = knob("gaussian", "latent prior: N(0, I) or uniform on [-1, 1]^d", choices=("gaussian", "uniform"),
                      group="Networks")
    # pack=2, r1=0.1 and the rates above: the robust default (README seed tables); plain-game lessons set PLAIN
    pack: int = knob(2, "PacGAN: D judges packs of m samples side by side (all real or all generated), so it can "
                     "see that a pack of collapsed samples lacks variety; the batch is cut into batch // m packs "
                     "(1: off)", lo=1, hi=8, group=REMEDIES, label="PacGAN packing m")
    unroll: int = knob(0, "unrolled GAN: G's loss is taken at D's parameters after k more (differentiable) steps of D's "
                       "optimiser, so G sees how D will answer its move (0: off). Costs about k + 1 times a D step "
                       "per G step", lo=0, hi=10, group=REMEDIES, label="unrolled D steps k",
                       show=lambda c: c.loss != "cfg")
    r1: float = knob(0.1, "R1 penalty: D's loss adds γ/2 E_p ||∇D(x)||² at data points, so D stays flat on the data "
                     "and stops sharpening its boundary around the modes (0: off)", choices=GAMMAS, group=REMEDIES,
                     label="R1 weight γ")
    r2: float = knob(0.0, "R2 penalty: the same at generated points, γ/2 E_q ||∇D(G(z))||² (0: off)", choices=GAMMAS,
                     group=REMEDIES, label="R2 weight γ")
    mbstd: int = knob(0, "minibatch standard deviation: D's last layer also gets the spread of its features over a "
                      "group of this many samples, so a collapsed group looks fake (0: off)", choices=(0, 2, 4, 8, 16),
                      group=REMEDIES, label="minibatch-std group")

@dataclass
class GANRuntime:
    """How the next steps run, without restarting the run: "both" trains k D steps then one G step;
    "d" trains only D; "g" only G (as in GAN Lab)."""

    mode: str = "both"
