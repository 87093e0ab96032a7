"""``python -m dgm prepare``: train, once, the state every lesson link opens at, ahead of a class.

A lesson whose point comes late opens at a fast-forward (``Lesson.start`` steps, e.g. the RealNVP lesson at
step 1,000), trained in the server when its link is first opened: up to half a minute on a laptop. The page
keeps that state on the server's disk (``persist.save_warm``), so it is trained once per machine and code
version; this command does it for every lesson beforehand. ``make run`` starts it in the background at the
lowest priority, so a teacher who starts the app before class finds every lesson ready.

    python -m dgm prepare              # every lesson with a fast-forward, seed 0
    python -m dgm prepare --only RealNVP --seed 3
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Iterator, Sequence

from dgm.core import registry
from dgm.core.registry import Experiment, Lesson


def lessons(only: str | None = None) -> Iterator[tuple[Experiment, Lesson]]:
    """Every lesson that opens at a fast-forward (whose name contains ``only``, case-insensitively)."""
    for name in registry.names():
        exp = registry.get(name)
        for les in exp.lessons:
            if les.start and (only is None or only.lower() in les.name.lower()):
                yield exp, les


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dgm prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="only the lessons whose name contains this")
    p.add_argument("--seed", type=int, default=0, help="the seed the links will use (default 0, a lesson link's)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    args = p.parse_args(list(sys.argv[2:] if argv is None else argv))

    from dgm.ui import scheduling, session  # streamlit's import is a second: after --help

    todo = list(lessons(args.only))
    if not todo and not args.quiet:
        print("no lesson with a fast-forward matches", file=sys.stderr)
    for exp, les in todo:
        cfg, runtime = exp.parts(exp.config(**les.values))
        try:
            # ahead of a class there is time: a fast-forward a page would cut (over REPLAY_SECONDS here, e.g. the
            # lottery's 2,800 steps of eight runs) is trained whole, and the page then opens it at once. Keyed as
            # the page keys it (its training config and runtime: view.loop)
            _, took = session.fast_forward(exp.name, session.config_json(cfg), args.seed, les.start, math.inf,
                                           session.runtime_json(runtime))
        except scheduling.ReplayCut:
            took = None
        if not args.quiet:
            what = ("on disk already" if took == 0 else "too slow here: the page trains it when opened"
                    if took is None else f"trained in {took:.1f} s")
            print(f"{exp.name} · {les.name}: step {les.start:,}, {what}", flush=True)
    return 0
