"""``python -m dgm arena --data D --budget 60s|3000 [--seeds N] [--out FILE.csv]``: the arena, headless
(``--data-file points.csv``: on your own 2D data).

Prints one JSON object: {"data", "budget", "seeds", "rounds", "seconds", "table"} with one row per family (the
measured taxonomy table; a family that does not train on the data is listed as skipped). ``--out`` also writes
the table as CSV. A bad flag is refused with one line on stderr and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from typing import Any, Sequence

from dgm.arena.run import DATASETS, MAX_SEEDS, ArenaRun, Budget
from dgm.core import registry
from dgm.core.outputs import jsonable

EXIT_OK, EXIT_REFUSED, EXIT_STOPPED = 0, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(f"{message} (see python -m dgm arena --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m dgm arena", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="ring8", help=f"the data set: {', '.join(DATASETS)} or another 2D set's name")
    p.add_argument("--data-file", default=None, metavar="CSV",
                   help="your own 2D data instead: a CSV with two numeric columns (overrides --data)")
    p.add_argument("--budget", default="1000", help="per family: steps (3000) or seconds of training (60s)")
    p.add_argument("--seeds", type=int, default=1, help=f"runs of each family [1 to {MAX_SEEDS}] (stability)")
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--rounds", type=int, default=8, help="measurements along the budget [1 to 100]")
    p.add_argument("--families", default=None,
                   help=f"comma-separated experiment names (default: all that enter: "
                        f"{', '.join(e.name for e in registry.arena_entries())})")
    p.add_argument("--out", default=None, help="also write the table to this CSV file")
    return p



def write_csv(path: str, table: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in table for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(jsonable(table))


def _user_data(path: str):
    from dgm.core import userdata

    if os.path.getsize(path) > userdata.MAX_BYTES:
        raise ValueError(f"--data-file {path}: larger than {userdata.MAX_BYTES / 1e6:.0f} MB")
    with open(path, "rb") as f:
        points = userdata.parse_csv(f.read())
    return userdata.make_distribution(points, f"the file {os.path.basename(path)}")[0]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[2:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        budget = Budget.parse(args.budget)
        if not 1 <= args.rounds <= 100:
            raise ValueError(f"--rounds {args.rounds}: give 1 to 100")
        known = [e.name for e in registry.arena_entries()]
        families = None if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = [f for f in families or () if f not in known]
        if unknown:
            raise ValueError(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
        data = args.data
        if args.data_file is not None:
            dist = _user_data(args.data_file)
            data = dist.name  # held by ``dist`` for the run (the registry keeps what someone holds)
        arena = ArenaRun(data, budget, seeds=args.seeds, seed=args.seed, rounds=args.rounds, families=families)
    except (ValueError, KeyError, OSError) as e:
        print(f"refused: {' '.join(str(e).strip(chr(39)).split())}", file=sys.stderr)
        return EXIT_REFUSED
    t0 = time.perf_counter()
    try:
        table = arena.run()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return EXIT_STOPPED
    if args.out:
        write_csv(args.out, table)
    print(json.dumps(jsonable({"data": data, "budget": str(budget), "seeds": args.seeds, "rounds": args.rounds,
                                "seconds": time.perf_counter() - t0, "table": table}), indent=1))
    return EXIT_OK
