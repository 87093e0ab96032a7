"""The registry of experiments: one per page, run headless by ``python -m dgm NAME``.

Each backend module defines ``EXPERIMENT = Experiment(...)``; the registry imports the modules
lazily, so ``dgm.data`` stays importable without the heavier model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dgm.train import Trainer

#: experiment name -> the module that defines it
MODULES = {
    "demo": "dgm.demo",
    "divergence": "dgm.divergences",
    "gan": "dgm.gan",
    "flow": "dgm.flows",
    "vae": "dgm.vae",
}


@dataclass(frozen=True)
class Experiment:
    name: str
    help: str  # one line for --help
    config: type  # the config dataclass (its knobs become flags)
    trainer: Callable[..., Trainer]  # (config, seed=, device=) -> Trainer
    figures: Callable[[Trainer], Mapping[str, Any]] | None = None  # the page's main figures, by name
    samples: Callable[[Trainer, int], np.ndarray] | None = None  # n final 2D samples, where it makes them
    presets: dict[str, dict[str, Any]] | None = None  # lesson name -> knob values (unset knobs: defaults)
    lessons: dict[str, str] | None = None  # lesson name -> one line on what it shows (home page)

    def make(self, config: Any = None, seed: int = 0, device: str = "auto") -> Trainer:
        return self.trainer(config if config is not None else self.config(), seed=seed, device=device)


def names() -> list[str]:
    """Experiments whose module is present."""
    out = []
    for name, mod in MODULES.items():
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def get(name: str) -> Experiment:
    if name not in MODULES or importlib.util.find_spec(MODULES[name]) is None:
        raise KeyError(f"unknown experiment {name!r}; choose one of {', '.join(names())}")
    return importlib.import_module(MODULES[name]).EXPERIMENT
