"""Knobs: config dataclass fields that carry their own help text, choices and limits.

One declaration drives three things, so they can never disagree:
- the page's widgets (``dgm.ui.controls``), with the same label, range and step;
- the URL parameters of a shareable link, parsed and clamped to the same limits;
- the command line (``python -m dgm EXPERIMENT --flag``), with the same help and choices.

    @dataclass
    class GANConfig:
        loss: str = knob("nonsaturating", "GAN loss", choices=("minimax", "nonsaturating"))
        lr_d: float = knob(2e-4, "discriminator learning rate", lo=1e-5, hi=1e-1, log=True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

SHOWN_CHARS = 40  # a user's value in a message is cut to this many characters


def shown(raw: Any, limit: int = SHOWN_CHARS, quote: bool = True) -> str:
    """A raw value as a message quotes it, cut to ``limit`` characters (a 10 kB link value is not
    echoed in full). Pages also escape it before display (``dgm.ui.common.plain``)."""
    s = str(raw)
    if len(s) > limit:
        s = f"{s[:limit]}… ({len(s):,} characters)"
    return repr(s) if quote else s


@dataclass(frozen=True)
class Knob:
    name: str
    type: type  # bool, int, float or str
    default: Any
    help: str
    label: str
    choices: tuple | None = None  # allowed values (str knobs, or a fixed set of numbers)
    lo: float | None = None  # inclusive limits for numbers
    hi: float | None = None
    step: float | None = None  # widget step for numbers
    log: bool = False  # spans orders of magnitude: shown as a log-spaced select
    group: str = "Model"  # sidebar section on the page
    show: Callable[[Any], bool] | None = None  # cfg -> is this knob relevant right now?

    def parse(self, raw: Any) -> Any:
        """Convert a raw value (a URL string, a CLI string, a JSON value) to this knob's type.
        Raises ValueError with a message naming the knob and the accepted values."""
        if self.type is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.name}: expected true or false, got {shown(raw)}")
        if self.type is str:
            s = str(raw)
            if self.choices and s not in self.choices:
                raise ValueError(f"{self.name}: {shown(s)} is not one of {', '.join(map(str, self.choices))}")
            return s
        try:
            v = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: expected a number, got {shown(raw)}") from None
        if not math.isfinite(v):
            raise ValueError(f"{self.name}: expected a finite number, got {shown(raw)}")
        if self.type is int:
            if v != int(v):
                raise ValueError(f"{self.name}: expected a whole number, got {shown(raw)}")
            v = int(v)
        return v

    def clamp(self, v: Any) -> tuple[Any, bool]:
        """Clamp a parsed value to the knob's limits; returns (value, was_changed)."""
        if self.type in (int, float):
            if self.choices:
                nearest = min(self.choices, key=lambda c: abs(c - v))
                return nearest, nearest != v
            c = v
            if self.lo is not None:
                c = max(c, self.type(self.lo))
            if self.hi is not None:
                c = min(c, self.type(self.hi))
            return c, c != v
        return v, False

    def limits(self) -> str:
        """The accepted values in words, for messages."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.lo is None or self.hi is None:
            return "any number"
        if self.type is int:
            return f"{int(self.lo):,}..{int(self.hi):,}"
        return f"{self.lo:g}..{self.hi:g}"


def knob(default: Any, help: str, *, label: str | None = None, choices: Sequence | None = None,
         lo: float | None = None, hi: float | None = None, step: float | None = None,
         log: bool = False, group: str = "Model", show: Callable[[Any], bool] | None = None) -> Any:
    """A dataclass field that describes itself (see the module docstring)."""
    meta = dict(help=help, label=label, choices=tuple(choices) if choices is not None else None,
                lo=lo, hi=hi, step=step, log=log, group=group, show=show)
    return field(default=default, metadata={"knob": meta})


def knobs(cls_or_cfg: Any) -> list[Knob]:
    """The knobs of a config dataclass (class or instance), in declaration order."""
    out = []
    for f in dataclasses.fields(cls_or_cfg):
        meta = f.metadata.get("knob")
        if meta is None:
            continue
        typ = type(f.default)
        label = meta["label"] or f.name.replace("_", " ")
        out.append(Knob(name=f.name, type=typ, default=f.default, label=label,
                        **{k: v for k, v in meta.items() if k != "label"}))
    return out


def knob_map(cls_or_cfg: Any) -> dict[str, Knob]:
    return {k.name: k for k in knobs(cls_or_cfg)}


def check(cls: type, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The one validation of raw settings (strings from a URL, a CLI, a file's metadata), shared by the
    pages (``dgm.ui.controls``) and the command line: each value parsed by its knob and clamped to its
    limits. Returns (values by name, notes by name); a name with a note and no value was unknown or
    unusable, one with a note and a value was out of range and clamped. A note says what is wrong
    with the value, not what was done about it: the page corrects the value and says so, the command
    line refuses it."""
    kmap = knob_map(cls)
    values: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for name, r in raw.items():
        k = kmap.get(name)
        if k is None:
            notes[name] = f"unknown setting {shown(name)}"
            continue
        try:
            v = k.parse(r)
        except ValueError as e:
            notes[name] = str(e)
            continue
        c, changed = k.clamp(v)
        if changed:
            notes[name] = f"{name}={shown(r, quote=False)} is {'not' if k.choices else 'outside'} {k.limits()}"
        values[name] = c
    return values, notes


def from_raw(cls: type, raw: dict[str, Any], *, strict: bool = True) -> tuple[Any, list[str]]:
    """Build a config from raw values (see ``check``). With ``strict``, any note is a ValueError
    (the values are refused); otherwise unusable values keep their defaults and out-of-range ones
    are clamped. Returns (config, notes)."""
    values, notes = check(cls, raw)
    if strict and notes:
        raise ValueError("; ".join(notes.values()))
    return cls(**values), list(notes.values())


# ---- the settings of a run beside its model's --------------------------------------------------------

SEED_MAX = 2**31 - 1  # the seed's range everywhere: sidebar, links, weights files, command line
REPLAY_MAX = 50_000  # a replay link (?steps=N) trains at most this many steps in the server
STEPS_MAX = 100_000_000  # the command line's --steps
SECONDS_MAX = 7 * 24 * 3600.0  # the command line's --seconds: a week


@dataclass
class RunSettings:
    """The settings of a run that are not its model's, declared once for the page's sidebar and links,
    weights files and the command line, and checked by the same ``check``."""

    seed: int = knob(0, "random seed: the same seed and settings give the same run", lo=0, hi=SEED_MAX)
    steps: int = knob(1000, "train this many steps", lo=1, hi=STEPS_MAX)
    seconds: float = knob(60.0, "train for this wall time (seconds) instead", lo=1e-3, hi=SECONDS_MAX)
    replay: int = knob(0, "a replay link trains exactly this many steps on the CPU", lo=0, hi=REPLAY_MAX)
    iteration: int = knob(0, "the step a weights file was saved at", lo=0, hi=STEPS_MAX)


def run_setting(name: str, raw: Any) -> tuple[Any, str | None]:
    """One run setting checked (``check`` over ``RunSettings``): (value or None, note or None)."""
    values, notes = check(RunSettings, {name: raw})
    return values.get(name), notes.get(name)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
