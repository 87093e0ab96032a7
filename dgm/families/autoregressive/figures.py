"""The autoregressive page's figures: the NLL curves here; the digits' figures in ``image_figures``, the 2D
ones in ``plane_figures``; ``figures(trainer)`` gathers the page's main ones for the CLI's --png and exports.
"""

from __future__ import annotations

import functools
from typing import Sequence

import plotly.graph_objects as go

from dgm.core import viz
from dgm.families.autoregressive import image_figures as imf
from dgm.families.autoregressive import plane_figures as plf
from dgm.families.autoregressive.trainer import SIDE, ARTrainer

DEFAULT_PIXEL = 5 * SIDE + 2  # row 5, column 2: the plain PixelCNN's blind spot is plain to see there


def nll_curves(rows: list[dict], refs: dict[str, float] | None = None, entropy: float | None = None,
               per: str = "image") -> go.Figure:
    """Train and validation NLL of the current model, the test NLL of the best checkpoint, and reference
    lines (``refs``: other models' figures on the same data, by label)."""
    labels = {"train_nll": "train (current)", "val_nll": "validation (current)",
              "val_nll_one": "validation, first ordering alone", "nll": "test (best checkpoint)"}
    colors = {"train_nll": viz.PALETTE[1], "val_nll": viz.PALETTE[0], "val_nll_one": viz.PALETTE[3], "nll": "#555"}
    hl = dict(refs or {})
    if entropy is not None:
        hl["H(p): the floor"] = entropy
    fig = viz.curves(rows, list(labels), title=f"Exact NLL (nats per {per})", labels=labels, colors=colors,
                     hlines=hl, height=320)
    for tr in fig.data:
        if tr.name.startswith("test"):
            tr.line.dash, tr.line.width = "dash", 1.5
        elif tr.name.endswith("alone"):
            tr.line.dash, tr.line.width = "dot", 1.5
    return fig


def figures(trainer: ARTrainer, digits: Sequence[int] | None = None, pixel: int = DEFAULT_PIXEL,
            k: int = 0) -> viz.Figures:
    """The page's main figures for ``trainer``, each built when first used: on the digits the curves, the
    per-pixel NLL of ``digits`` (test indices), the dependency map of ``pixel`` and the matrix of
    ordering ``k``, and 64 samples; on 2D data the learned density, the target, samples, slices, curves."""
    rows = trainer.history.merged()
    if not trainer.images:
        s, sl = functools.cache(lambda: plf.plane(trainer)), functools.cache(lambda: plf.slices(trainer))
        return viz.Figures({
            "density": lambda: plf.learned(s()), "target": lambda: plf.target(s()),
            "samples": lambda: plf.samples(s()), "conditionals": lambda: plf.conditionals(sl()),
            "nll": lambda: nll_curves(rows, entropy=trainer.dist.entropy, per="point")})
    idx = list(digits) if digits is not None else imf.default_digits(trainer.test_y.tolist())
    dep = functools.cache(lambda: imf.dependency_data(trainer, k))
    return viz.Figures({
        "samples": lambda: imf.samples_figure(trainer.measure_sampling(64, trainer.eval_generator(7))),
        "pixels": lambda: imf.pixel_nll_figure(imf.pixel_nll(trainer, idx)),
        "dependency": lambda: imf.dependency_figure(dep()["dep"], dep()["pos"], pixel),
        "matrix": lambda: imf.matrix_figure(dep()["dep"], dep()["pos"]),
        "nll": lambda: nll_curves(rows)})
