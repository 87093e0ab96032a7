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
    "arena": "dgm.arena.lessons",  # every family above at once (a floor above the families: dgm/arena)
}


@dataclass(frozen=True)
class Watch:
    """The number a lesson is about and its point: ``metric(trainer)`` (None until it can be measured) and
    ``point(value)``, true once the run shows what the lesson teaches; ``goal`` says it in words ("≤ 2").
    ``every`` and ``max_steps``: how often, and how long, a headless search for the point checks; ``after``: the
    first step it is measured at. A number measured on request (a page's button) names the button in ``press``
    and gives in ``measure(trainer)`` what it does, which a headless search runs before it reads the number, and
    in ``measured(trainer)`` the step of its last measurement (``after`` then applies to that step: a measurement
    pressed in the run's first steps does not count, and the page says so). A number that compares the run with
    another page's run in the same browser session names that page's url in ``first`` (the status line asks to
    play it first); ``measure`` then stands in for that run headless."""

    label: str
    metric: Callable[[Trainer], float | None]
    point: Callable[[float], bool]
    goal: str
    every: int = 100
    max_steps: int = 5000
    after: int = 0  # measured from this step on (where the start of a run would show the point by accident)
    press: str = ""  # the page's button that measures it, where it is measured on request only
    measure: Callable[[Trainer], None] | None = None  # what that button (or that page's run) does to the trainer
    first: str = ""  # the url of a page whose run in the same session the number compares with
    measured: Callable[[Trainer], int | None] | None = None  # the step of the last measurement (``press``)

    def at(self, trainer: Trainer) -> int | None:
        """The step the number is of: the run's, or its last measurement's (None before one)."""
        return trainer.iteration if self.measured is None else self.measured(trainer)

    def value(self, trainer: Trainer) -> float | None:
        at = self.at(trainer)
        if at is None or at < self.after:
            return None
        try:
            return self.metric(trainer)
        except (KeyError, TypeError, ValueError):
            return None

    def reached(self, trainer: Trainer) -> bool:
        v = self.value(trainer)
        return v is not None and bool(self.point(v))


def evaluated(key: str, minus: Callable[[Trainer], float] | str | None = None,
              scale: float = 1.0) -> Callable[[Trainer], float | None]:
    """A watch's metric: the run's latest evaluated ``key`` (None until its first evaluation), less ``minus``
    (another evaluated key, or a function of the trainer, e.g. the target's entropy) where given, times
    ``scale`` (100: a fraction shown in percent)."""

    def metric(t: Trainer) -> float | None:
        ev = t.latest_eval or {}
        if key not in ev:
            return None
        base = 0.0 if minus is None else ev[minus] if isinstance(minus, str) else minus(t)
        return (float(ev[key]) - float(base)) * scale

    return metric


@dataclass(frozen=True)
class Lesson:
    """A preset that shows one phenomenon: its knob values and what it teaches, in one place."""

    name: str
    values: dict[str, Any]  # knob values (knobs not named keep their defaults)
    blurb: str  # one line: what it shows (home page, lesson list)
    text: str = ""  # the page's note: what to do and what to look at
    look: str = ""  # the one thing to look at, one short line (shown above the figure)
    watch: Watch | None = None  # the number that shows the lesson's point, checked live on the page
    start: int = 0  # the page opens the lesson at this step (a cached fast-forward), so it lands soon after Play


@dataclass(frozen=True)
class PageText:
    """What a page says around its figures: the title, an introduction, and a theory section
    (markdown paragraphs; a part that starts with "$$" is a formula in LaTeX)."""

    title: str
    intro: str
    theory_title: str = ""
    theory: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arena:
    """How a family enters the arena (dgm/arena): one model of the family, built from its page's defaults
    with ``data`` set, competes with the others on the same data.

    ``samples(trainer, n)``: n samples as a float array in the data's own space (2D points; the digits as
    intensities in [0, 1], (n, 64)). ``likelihood(trainer, x)``: the held-out negative log-likelihood in nats
    per example of points ``x`` (2D points; the digits as grey levels 0..16), or None where the family gives
    none on this data; ``kind`` says what it is ("exact", "bound", ...). ``latent(trainer)``: the size of the
    code a sample is made from (None: no code)."""

    label: str
    samples: Callable[[Trainer, int], np.ndarray]
    latent: Callable[[Trainer], int | None]
    likelihood: Callable[[Trainer, Any], float | None] | None = None
    kind: str = "none"


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
    arena: Arena | None = None  # how the family enters the arena, where it does
    #: config -> (the config that identifies the run's training, the runtime settings taken from the rest), where
    #: some knobs only change how a run is sampled and evaluated (diffusion's sampler and NFE): changing those
    #: never restarts a run, and a fast-forward is trained with them (its evaluations measure what the page shows)
    split: Callable[[Any], tuple[Any, dict[str, Any]]] | None = None

    def make(self, config: Any = None, seed: int = 0, device: str = "auto") -> Trainer:
        return self.trainer(config if config is not None else self.config(), seed=seed, device=device)

    def parts(self, config: Any) -> tuple[Any, dict[str, Any]]:
        """``split(config)``: what trains and the runtime settings; the whole config and none without a split."""
        return self.split(config) if self.split is not None else (config, {})

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


def arena_entries() -> list[Experiment]:
    """The experiments that enter the arena (an ``arena`` record), in registry order."""
    return [e for e in (get(n) for n in names()) if e.arena is not None]


def get(name: str) -> Experiment:
    if name not in MODULES or importlib.util.find_spec(MODULES[name].split(":")[0]) is None:
        raise KeyError(f"unknown experiment {name!r}; choose one of {', '.join(names())}")
    module, _, attr = MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attr or "EXPERIMENT")
