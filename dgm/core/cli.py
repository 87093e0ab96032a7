"""``python -m dgm EXPERIMENT [flags]``: every page's experiment, headless.

Prints one JSON object: {"config", "steps", "seconds", "final", "history"}. ``--out DIR`` also
writes final.json, history.csv and (for 2D generators) samples.npy with 2,500 final samples;
``--png DIR`` writes the page's main figures as PNG images.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from dgm.core import config as cfglib
from dgm.core import registry
from dgm.core.metrics import EVAL_SAMPLES


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_knobs(p: argparse.ArgumentParser, cls: type) -> None:
    g = p.add_argument_group("model and training (the page's controls)")
    for k in cfglib.knobs(cls):
        extra = ""
        if k.lo is not None or k.hi is not None:
            extra = f" [{k.lo} .. {k.hi}]"
        kw: dict[str, Any] = dict(dest=k.name, default=None, help=f"{k.help}{extra} (default: {k.default})")
        if k.type is str and k.choices:
            kw["choices"] = k.choices
            kw["metavar"] = "{" + ",".join(k.choices) + "}" if len(k.choices) <= 12 else k.name.upper()
        g.add_argument(_flag(k.name), **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dgm", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name in registry.names():
        exp = registry.get(name)
        sp = sub.add_parser(name, help=exp.help, description=exp.help)
        run = sp.add_argument_group("run")
        run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        budget = run.add_mutually_exclusive_group()
        budget.add_argument("--steps", type=int, default=None, help="train this many steps (default 1000)")
        budget.add_argument("--seconds", type=float, default=None, help="train for this wall time instead")
        run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
        run.add_argument("--preset", default=None, choices=sorted(exp.presets or {}) or None,
                         help="start from a lesson preset (flags given override it)")
        run.add_argument("--out", default=None, help="write final.json, history.csv (and samples.npy) here")
        run.add_argument("--png", default=None, help="write the main figures as PNG images here")
        _add_knobs(sp, exp.config)
    return p


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    exp = registry.get(args.experiment)
    raw: dict[str, Any] = dict((exp.presets or {}).get(args.preset, {})) if args.preset else {}
    raw.update({k.name: getattr(args, k.name) for k in cfglib.knobs(exp.config) if getattr(args, k.name) is not None})
    try:
        cfg, _ = cfglib.from_raw(exp.config, raw, strict=True)
    except ValueError as e:
        raise SystemExit(f"python -m dgm {exp.name}: {e}")
    trainer = exp.make(cfg, seed=args.seed, device=args.device)
    start = time.perf_counter()
    if args.seconds is not None:
        steps = trainer.run(seconds=args.seconds)
    else:
        steps = trainer.run(steps=1000 if args.steps is None else args.steps)
    seconds = time.perf_counter() - start
    final = trainer.final()
    result = {"config": cfglib.to_dict(cfg), "seed": args.seed, "device": str(trainer.device), "steps": steps,
              "seconds": round(seconds, 3), "final": final, "history": trainer.history.merged()}
    result = _jsonable(result)
    if args.out:
        _write_out(args.out, exp, trainer, result)
    if args.png:
        os.makedirs(args.png, exist_ok=True)
        from dgm.core import viz

        for name, fig in (exp.figures(trainer) if exp.figures else {}).items():
            viz.write_png(fig, os.path.join(args.png, f"{exp.name}_{name}.png"))
    return result


def _write_out(out: str, exp: registry.Experiment, trainer, result: dict) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "final.json"), "w") as f:
        json.dump({k: result[k] for k in ("config", "seed", "device", "steps", "seconds", "final")}, f, indent=2)
    rows = result["history"]
    keys = sorted({k for r in rows for k in r} - {"step"})
    with open(os.path.join(out, "history.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *keys])
        for r in rows:
            w.writerow([r["step"], *("" if r.get(k) is None else r[k] for k in keys)])
    if exp.samples is not None:
        np.save(os.path.join(out, "samples.npy"), np.asarray(exp.samples(trainer, EVAL_SAMPLES), dtype=np.float32))


def main(argv: Sequence[str] | None = None) -> int:
    from dgm.core.train import TrainingDiverged

    try:
        result = run(argv)
    except TrainingDiverged as e:
        print(json.dumps({"error": str(e), "step": e.step}), file=sys.stderr)
        return 3
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0
