"""``python -m dgm study EXPERIMENT --grid KNOB=v1,v2 [--grid ...] --seeds N --steps S --out DIR``, or
``python -m dgm study --spec FILE --out DIR`` (JSON or TOML): every setting of the grid on N seeds, on Ray
(a local instance, or ``--address ray://HOST:PORT`` / RAY_ADDRESS for a cluster), kept in DIR/study.sqlite.

Progress with an ETA goes to stderr; the summary table (median and 95% bootstrap interval per setting) to
stdout. Running it again continues the study: runs already stored are skipped. A bad knob, value or folder
is refused before anything runs, in one line with exit code 2; Ctrl-C stops it (exit 130) keeping every run
stored so far; an unexpected failure is one line with exit code 1 (``DGM_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Sequence

from dgm.core import registry
from dgm.studies import engine, summary
from dgm.studies.spec import MANY_SEEDS, StudyError, StudySpec, parse_grid
from dgm.studies.store import Store

PROG = "python -m dgm study"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_STOPPED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise StudyError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                   help=f"one of {', '.join(n for n in registry.names() if n not in MANY_SEEDS)}")
    p.add_argument("--grid", action="append", default=[], metavar="KNOB=v1,v2",
                   help="a knob and its values (repeat for more knobs; every combination runs)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=value", help="a knob value for every setting")
    p.add_argument("--seeds", default=None, metavar="N", help="seeds per setting: --seed .. --seed + N - 1")
    p.add_argument("--seed", default=0, help="the first seed (default 0)")
    p.add_argument("--steps", default=None, metavar="S", help="training steps of every run")
    p.add_argument("--evals", default="end", choices=("end", "schedule"),
                   help="evaluate at the end only (default), or on the page's schedule too (slower)")
    p.add_argument("--metric", action="append", default=[], help="a metric of the summary (repeat; default: the usual)")
    p.add_argument("--markdown", action="store_true", help="print the summary as a markdown table")
    p.add_argument("--stat", default="median", choices=("median", "mean"),
                   help="each cell: the median over seeds and its bootstrap interval (default), or the mean and its "
                        "standard error (as papers report trials)")
    p.add_argument("--spec", default=None, metavar="FILE", help="the study as a JSON or TOML file instead")
    p.add_argument("--out", required=True, metavar="DIR", help="the study's folder (its store; resumes a study there)")
    p.add_argument("--address", default=None, help="a Ray cluster, ray://HOST:PORT (default: RAY_ADDRESS, else local)")
    p.add_argument("--cpus", default=None, type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--local", action="store_true", help="run in this process, without Ray")
    p.add_argument("--one-by-one", action="store_true", help="train seeds one at a time, not batched")
    return p


def spec_from(args: argparse.Namespace) -> StudySpec:
    if args.spec is not None:
        if args.experiment or args.grid or args.set or args.seeds or args.steps:
            raise StudyError("--spec FILE holds the whole study; give no EXPERIMENT, --grid, --set, --seeds or --steps")
        return StudySpec.from_file(args.spec)
    if not args.experiment:
        raise StudyError(f"give an EXPERIMENT ({', '.join(registry.names())}) or --spec FILE")
    missing = [f for f, v in (("--seeds", args.seeds), ("--steps", args.steps)) if v is None]
    if missing:
        raise StudyError(f"give {' and '.join(missing)}")
    fixed = {}
    for item in args.set:
        name, eq, value = item.partition("=")
        if not eq:
            raise StudyError(f"--set {item!r}: write KNOB=value")
        fixed[name.strip()] = value.strip()
    return StudySpec.make(args.experiment, parse_grid(args.grid), args.seeds, args.steps, fixed, args.seed,
                          args.evals, args.metric)


class _Progress:
    """One line on stderr, at most once a second (rewritten in place on a terminal)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.last, self.tty = 0.0, self.stream.isatty()

    def __call__(self, p: engine.Progress) -> None:
        now = time.monotonic()
        if p.event != "done" and now - self.last < 1.0:
            return
        self.last = now
        end = "\n" if (not self.tty or p.event == "done") else ""
        print(("\r" if self.tty else "") + f"study: {p.line()}", end=end, file=self.stream, flush=True)


def report(out: str, spec: StudySpec, markdown: bool = False, stat: str = "median") -> str:
    store = Store.read(out)
    try:
        runs = store.runs() if store else []
    finally:
        if store:
            store.close()
    from dgm.studies.spec import key

    wanted = {key(s) for s in spec.settings()}
    seeds = set(spec.seed_list())
    runs = [r for r in runs if r["setting"] in wanted and r["seed"] in seeds]
    metrics = summary.metrics_of(runs, spec.metrics)
    rows = summary.summarize(runs, metrics, order=[key(s) for s in spec.settings()])
    return summary.table(rows, metrics, markdown, stat)


def main(argv: Sequence[str] | None = None) -> int:
    stop = {"signal": None}

    def handle(signum, frame):
        stop["signal"] = signum

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handle)
        except ValueError:
            break
    try:
        args = build_parser().parse_args(list(sys.argv[2:] if argv is None else argv))
        spec = spec_from(args)
        result = engine.run_study(spec, args.out, address=args.address, executor="inline" if args.local else "ray",
                                  num_cpus=args.cpus, batched=not args.one_by_one, on_progress=_Progress(),
                                  should_stop=lambda: stop["signal"] is not None)
        print(report(args.out, spec, args.markdown, args.stat))
        print(f"study: {result.runs_new} runs done now, {result.runs_total} in {args.out}, "
              f"{result.seconds:.1f} s" + (f", {result.retried} tasks retried" if result.retried else ""),
              file=sys.stderr)
        if stop["signal"] is not None:
            print(f"study: stopped by {signal.Signals(stop['signal']).name}; the runs stored so far are kept "
                  "(run the same command to continue)", file=sys.stderr)
            return EXIT_STOPPED
        return EXIT_OK
    except StudyError as e:
        print(f"{PROG}: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as e:  # a failure of ours (or of the cluster): one line, never a traceback
        if os.environ.get("DGM_DEBUG"):
            raise
        msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        print(f"{PROG}: failed: {msg} (DGM_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
