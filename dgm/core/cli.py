"""``python -m dgm EXPERIMENT [flags]``: every page's experiment, headless.

Prints one JSON object: {"config", "seed", "device", "steps", "seconds", "status", "final", "history"}.
``--out DIR`` also writes final.json, history.csv (row by row while the run trains) and, for 2D
generators, samples.npy with 2,500 final samples; ``--png DIR`` writes the page's main figures as PNG
images. ``--data-file points.csv`` trains on your own data (a CSV of two numeric columns). ``--seeds K``
(where the family has a batched trainer) trains K seeds at once and adds "seeds", "runs" (each seed's
finals) and "summary" (median and range over the seeds); samples.npy then holds (K, 2500, 2).

Every flag is checked before any training, by the same rules as the page's controls and links
(``dgm.core.config.check``); a bad one is refused with one line on stderr and exit code 2. A run
that diverges writes what it had and exits 3; Ctrl-C (SIGINT) or SIGTERM stops it cleanly, writes
what it had and exits 130. Exit code 1 is an unexpected failure, told in one line (``DGM_DEBUG=1``
shows its traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Sequence

import numpy as np

from dgm.core import config as cfglib
from dgm.core import registry
from dgm.core.many import MAX_SEEDS  # --seeds K: at most this many runs in one batch
from dgm.core.outputs import jsonable

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_DIVERGED, EXIT_STOPPED = 0, 1, 2, 3, 130
PROG = "python -m dgm"
MESSAGE_CHARS = 300  # a message is one line of at most about this many characters
DEFAULT_STEPS = cfglib.knob_map(cfglib.RunSettings)["steps"].default


class Refused(ValueError):
    """A flag or its value cannot be used; the message says which and why (one line, exit code 2)."""


class _Stop(BaseException):
    """Raised by the signal handler while the run trains (a BaseException: no ``except Exception``
    in a trainer swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "…"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors turned into ``Refused`` (one line, no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise Refused(f"{message} (see {self.prog} --help)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _custom_knob(cls: type) -> cfglib.Knob | None:
    """The knob whose choice "custom" means the user's own data (data, or the divergence page's target)."""
    from dgm.core.userdata import CUSTOM

    return next((k for k in cfglib.knobs(cls) if k.type is str and k.choices and CUSTOM in k.choices), None)


def _add_knobs(p: argparse.ArgumentParser, cls: type) -> None:
    g = p.add_argument_group("model and training (the page's controls)")
    for k in cfglib.knobs(cls):
        extra = f" [{k.limits()}]" if k.lo is not None or k.hi is not None else ""
        kw: dict[str, Any] = dict(dest=k.name, default=None, help=f"{k.help}{extra} (default: {k.default})")
        if k.type is str and k.choices:
            kw["choices"] = k.choices
            kw["metavar"] = "{" + ",".join(k.choices) + "}" if len(k.choices) <= 12 else k.name.upper()
        g.add_argument(_flag(k.name), **kw)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=f"{PROG} study --help: one experiment over a grid of settings and seeds (a study)")
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    limits = cfglib.knob_map(cfglib.RunSettings)
    for name in registry.names():
        exp = registry.get(name)
        sp = sub.add_parser(name, help=exp.help, description=exp.help)
        run = sp.add_argument_group("run")
        run.add_argument("--seed", default=None, help=f"random seed [{limits['seed'].limits()}] (default 0)")
        budget = run.add_mutually_exclusive_group()
        budget.add_argument("--steps", default=None,
                            help=f"train this many steps [{limits['steps'].limits()}] (default {DEFAULT_STEPS})")
        budget.add_argument("--seconds", default=None,
                            help=f"train for this wall time instead, in seconds [{limits['seconds'].limits()}]")
        run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
        if exp.seeds is not None:
            run.add_argument("--seeds", default=None, metavar="K",
                             help=f"train K seeds at once (--seed, --seed + 1, ..., --seed + K - 1) as one batched "
                                  f"model [1 to {MAX_SEEDS}]; reports each seed's finals and their median and range")
        run.add_argument("--preset", default=None, choices=sorted(exp.presets or {}) or None,
                         help="start from a lesson preset (flags given override it)")
        run.add_argument("--out", default=None, help="write final.json, history.csv (and samples.npy) here")
        run.add_argument("--png", default=None, help="write the main figures as PNG images here")
        ck = _custom_knob(exp.config)
        if ck is not None:
            run.add_argument("--data-file", default=None, metavar="CSV",
                             help=f"train on your own data: a CSV with two numeric columns (sets {_flag(ck.name)} custom)")
        _add_knobs(sp, exp.config)
    return p



def _run_setting(flag: str, raw: str | None, default: Any) -> Any:
    if raw is None:
        return default
    v, note = cfglib.run_setting(flag, raw)
    if note is not None:
        raise Refused(f"refused: --{note}")
    return v


def _user_data(exp: registry.Experiment, args: argparse.Namespace, raw: dict[str, Any]) -> str | None:
    """The name of the user's data set (registered from --data-file), or None; refuses "custom" without
    a file, and a file with another data set."""
    ck = _custom_knob(exp.config)
    path = getattr(args, "data_file", None)
    if ck is None:
        return None
    from dgm.core import userdata

    chosen = raw.get(ck.name)
    if path is None:
        if chosen == userdata.CUSTOM:
            raise Refused(f"refused: {_flag(ck.name)} custom needs --data-file CSV (a file with two numeric columns)")
        return None
    if chosen not in (None, userdata.CUSTOM):
        raise Refused(f"refused: --data-file trains on your data; {_flag(ck.name)} {chosen} asks for another data set")
    try:
        size = os.path.getsize(path)
        if not os.path.isfile(path):
            raise IsADirectoryError(21, "a folder, not a file")
        if size > userdata.MAX_BYTES:
            raise userdata.UserDataError(f"The file is {size / 1e6:.1f} MB; the limit is {userdata.MAX_BYTES / 1e6:.0f} MB.")
        with open(path, "rb") as f:
            points = userdata.parse_csv(f.read())
        dist, _ = userdata.make_distribution(points, f"the file {os.path.basename(path)}")
    except OSError as e:
        raise Refused(f"refused: --data-file {cfglib.shown(path)}: {e.strerror or e}") from None
    except userdata.UserDataError as e:
        raise Refused(f"refused: --data-file {cfglib.shown(path)}: {e}") from None
    raw.pop(ck.name, None)
    args.data_dist = dist  # held for the run: the registry keeps data sets while someone holds them
    return dist.name


def _seeds(args: argparse.Namespace) -> int | None:
    """--seeds K as a number (None without the flag); refuses what is not 1 to MAX_SEEDS, and --png with it."""
    raw = getattr(args, "seeds", None)
    if raw is None:
        return None
    try:
        k = int(str(raw).strip())
    except ValueError:
        raise Refused(f"refused: --seeds {cfglib.shown(raw)}: give a whole number of seeds, 1 to {MAX_SEEDS}") from None
    if not 1 <= k <= MAX_SEEDS:
        raise Refused(f"refused: --seeds {k}: give 1 to {MAX_SEEDS} seeds")
    if args.png is not None:
        raise Refused("refused: --png draws one run's figures; with --seeds, give --out (samples.npy holds every seed's)")
    return k


def _batch_samples(exp: registry.Experiment):
    """The samples of every run of a batch, (K, n, 2), from the experiment's samples of one run."""
    def samples(batch, n: int) -> np.ndarray:
        runs = []
        for k in range(batch.k):
            with batch.as_run(k) as r:
                runs.append(np.asarray(exp.samples(r, n)))
        return np.stack(runs)

    return samples


class _Signals:
    """SIGINT and SIGTERM: while ``armed`` (building and training) the handler raises ``_Stop`` at once;
    otherwise (writing results) it only notes the signal, which ends the run once the files are written."""

    def __init__(self):
        self.armed = False
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (an embedding program): leave its handlers alone
                break
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame) -> None:
        self.pending = signum
        if self.armed:
            raise _Stop(signum)

    def check(self) -> None:
        if self.pending is not None:
            raise _Stop(self.pending)


def _prepare(args: argparse.Namespace):
    exp = registry.get(args.experiment)
    if args.preset is not None and args.preset not in (exp.presets or {}):
        raise Refused(f"refused: --preset {cfglib.shown(args.preset)}: this experiment has no lesson presets")
    raw: dict[str, Any] = dict((exp.presets or {}).get(args.preset, {})) if args.preset else {}
    raw.update({k.name: getattr(args, k.name) for k in cfglib.knobs(exp.config) if getattr(args, k.name) is not None})
    data_name = _user_data(exp, args, raw)
    try:
        cfg, _ = cfglib.from_raw(exp.config, raw, strict=True)
    except ValueError as e:
        raise Refused(f"refused: {e}") from None
    if data_name is not None:
        cfg = dataclasses.replace(cfg, **{_custom_knob(exp.config).name: data_name})
    seed = _run_setting("seed", args.seed, 0)
    steps = _run_setting("steps", args.steps, None)
    seconds = _run_setting("seconds", args.seconds, None)
    if steps is None and seconds is None:
        steps = DEFAULT_STEPS
    args.n_seeds = _seeds(args)
    if args.device == "cuda":
        from dgm.core import device as devlib

        if not devlib.cuda_available():
            raise Refused("refused: --device cuda: no CUDA device is available here; use --device cpu or auto")
    from dgm.core.outputs import OutputError, Outputs

    try:
        outputs = Outputs(args.out, args.png)
    except OutputError as e:
        raise Refused(f"refused: {e}") from None
    return args, exp, cfg, seed, steps, seconds, outputs


def _train(exp, cfg, seed, steps, seconds, args, outputs, signals) -> tuple[dict[str, Any], int, str]:
    """Build, train, write. Returns (result, exit code, message for stderr or "")."""
    from dgm.core.train import TrainingDiverged

    status, code, message = "finished", EXIT_OK, ""
    trainer = None
    start = time.perf_counter()
    try:
        signals.armed = True
        signals.check()
        try:
            if args.n_seeds is None:
                trainer = exp.make(cfg, seed=seed, device=args.device)
            else:
                trainer = exp.seeds(cfg, seeds=range(seed, seed + args.n_seeds), device=args.device)
        except ValueError as e:  # settings that do not go together (e.g. reverse KL on sampled data)
            raise Refused(f"refused: {e}") from None
        trainer.run(steps=steps, seconds=seconds, burst=None, after_burst=lambda done: outputs.add(trainer))
        trainer.final()
    except TrainingDiverged as e:
        status, code = "diverged", EXIT_DIVERGED
        message = f"{e} The run up to step {trainer.last_good['iteration']:,} is kept"
        diverged_at = e.step
        trainer.restore_last_good()
    except _Stop as e:
        status, code = "interrupted", EXIT_STOPPED
        name = signal.Signals(e.signum).name
        if trainer is None:
            signals.armed = False
            return {}, code, f"stopped by {name} before training began"
        trainer.restore_last_good()  # the burst it was in is dropped: the run stops where it last stood whole
        message = f"stopped by {name} at step {trainer.iteration:,}; the run up to there is kept"
    finally:
        signals.armed = False
    seconds_run = time.perf_counter() - start
    result = {"config": cfglib.to_dict(cfg), "seed": seed, "device": str(trainer.device), "steps": trainer.iteration,
              "seconds": round(seconds_run, 3), "status": status,
              "final": {**trainer.latest, **trainer.latest_eval}, "history": trainer.history.merged()}
    if status == "diverged":
        result["diverged_at"] = diverged_at
        result["error"] = message
    if getattr(args, "data_file", None):
        result["data_file"] = args.data_file
    if args.n_seeds is not None:
        result["seeds"] = list(trainer.seeds)
        result["runs"] = trainer.finals()
        result["summary"] = trainer.summary()
        exp = dataclasses.replace(exp, figures=None, samples=exp.samples and _batch_samples(exp))
    result = jsonable(result)
    written = outputs.finish(result, trainer, exp)
    if message and written:
        message += f" (written: {', '.join(written)})"
    return result, code, message


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The run that ``argv`` describes, as the dict ``main`` prints (for scripts and tests); its "status"
    says how it ended. A refused flag raises ``Refused``."""
    args, exp, cfg, seed, steps, seconds, outputs = _prepare(build_parser().parse_args(argv))
    try:
        return _train(exp, cfg, seed, steps, seconds, args, outputs, _Signals())[0]
    finally:
        outputs.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code. Nothing but one line per problem reaches stderr."""
    given = list(sys.argv[1:] if argv is None else argv)
    name = f"{PROG} {given[0]}" if given and given[0] in registry.names() else PROG
    outputs = None
    try:
        with _Signals() as signals:
            try:
                args = build_parser().parse_args(given)
                args, exp, cfg, seed, steps, seconds, outputs = _prepare(args)
                signals.check()
                result, code, message = _train(exp, cfg, seed, steps, seconds, args, outputs, signals)
            except _Stop as e:
                result, code, message = {}, EXIT_STOPPED, f"stopped by {signal.Signals(e.signum).name}"
            if result:
                json.dump(result, sys.stdout)
                sys.stdout.write("\n")
                sys.stdout.flush()
            if message:
                print(f"{name}: {_one_line(message)}", file=sys.stderr)
            if signals.pending is not None and code == EXIT_OK:
                code = EXIT_STOPPED
            return code
    except Refused as e:
        print(f"{name}: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as e:  # a failure of ours: one line, never a traceback (unless asked for)
        if os.environ.get("DGM_DEBUG"):
            raise
        print(f"{name}: failed: {_one_line(f'{type(e).__name__}: {e}')} (DGM_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        if outputs is not None:
            outputs.close()
