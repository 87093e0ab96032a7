"""The registry of experiments: one per page, run headless by ``python -m dgm NAME``.

Each family's ``lessons`` module defines ``EXPERIMENT = Experiment(...)``; the registry imports it
lazily (by name, so the floor never imports a family), and ``dgm.core.data`` stays importable without
the heavier model code. A new family joins by adding one line to ``MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dgm.core.train import Trainer

#: experiment name -> the module that defines it (as ``EXPERIMENT``, or as the attribute after a colon)
MODULES = {
    "demo": "dgm.families.demo.lessons",
    "divergence": "dgm.families.divergences.lessons",
    "gan": "dgm.families.gan.lessons",
    "flow": "dgm.families.flows.lessons",
    "vae": "dgm.families.vae.lessons",
    "latents": "dgm.families.latents.lessons",
    "autoregressive": "dgm.families.autoregressive.lessons",
    "diffusion": "dgm.families.diffusion.lessons",
    "gan_seeds": "dgm.families.gan.lessons:SEEDS_EXPERIMENT",
}


@dataclass(frozen=True)
class Lesson:
    """A preset that shows one phenomenon: its knob values and what it teaches, in one place."""

    name: str
    values: dict[str, Any]  # knob values (knobs not named keep their defaults)
    blurb: str  # one line: what it shows (home page, lesson list)
    text: str = ""  # the page's note: what to do and what to look at


@dataclass(frozen=True)
class PageText:
    """What a page says around its figures: the title, an introduction, and a theory section
    (markdown paragraphs; a part that starts with "$$" is a formula in LaTeX)."""

    title: str
    intro: str
    theory_title: str = ""
    theory: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    name: str
    help: str  # one line for --help
    config: type  # the config dataclass (its knobs become flags)
    trainer: Callable[..., Trainer]  # (config, seed=, device=) -> Trainer
    figures: Callable[[Trainer], Mapping[str, Any]] | None = None  # the page's main figures, by name
    samples: Callable[[Trainer, int], np.ndarray] | None = None  # n final 2D samples, where it makes them
    lessons: tuple[Lesson, ...] = ()
    text: PageText | None = None
    #: (config, seeds=, device=) -> a trainer of many seeds at once whose ``runs[k]`` is the run of
    #: ``seeds[k]`` (with ``as_run(k)``, ``finals()`` and ``summary()``), where the family has one
    seeds: Callable[..., Trainer] | None = None

    def make(self, config: Any = None, seed: int = 0, device: str = "auto") -> Trainer:
        return self.trainer(config if config is not None else self.config(), seed=seed, device=device)

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        """Lesson name -> knob values."""
        return {les.name: les.values for les in self.lessons}

    def lesson(self, name: str | None) -> Lesson | None:
        return next((les for les in self.lessons if les.name == name), None)


def names() -> list[str]:
    """Experiments whose module is present."""
    out = []
    for name, mod in MODULES.items():
        if importlib.util.find_spec(mod.split(":")[0]) is not None:
            out.append(name)
    return out


def get(name: str) -> Experiment:
    if name not in MODULES or importlib.util.find_spec(MODULES[name].split(":")[0]) is None:
        raise KeyError(f"unknown experiment {name!r}; choose one of {', '.join(names())}")
    module, _, attr = MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attr or "EXPERIMENT")
