"""A study's summary: per setting and metric, the median over seeds and a bootstrap interval for it (or, with
``stat="mean"``, the mean and its standard error, the form in which papers such as PacGAN report their trials).

The interval is the percentile bootstrap of the median (``BOOT`` resamples of the seeds with replacement,
from a generator of fixed seed, so the same runs always give the same table); it says how much the median
could move with other seeds, not how much one run varies (the per-seed values show that).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BOOT = 2000
LEVEL = 0.95
BOOT_SEED = 0
#: the metrics a summary shows by default, in this order, where the runs have them
DEFAULT_METRICS = ("modes", "high_quality", "mode_kl", "mmd", "w1", "heldout_nll", "nll", "val_nll", "test_nll", "loss")


def median_interval(values: list[float], boot: int = BOOT, level: float = LEVEL,
                    seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """(median, lower, upper) of ``values``, the interval a percentile bootstrap of the median."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    meds = np.median(x[rng.integers(0, x.size, size=(boot, x.size))], axis=1)
    a = (1 - level) / 2
    return float(np.median(x)), float(np.quantile(meds, a)), float(np.quantile(meds, 1 - a))


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of ``values``: the sample standard deviation (n - 1) over sqrt(n)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def metrics_of(runs: list[dict[str, Any]], wanted: tuple[str, ...] | list[str] = ()) -> list[str]:
    have = {m for r in runs for m, v in r["final"].items() if isinstance(v, (int, float))}
    if wanted:
        return [m for m in wanted if m in have]
    return [m for m in DEFAULT_METRICS if m in have][:4]


def summarize(runs: list[dict[str, Any]], metrics: list[str], order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per setting: its values, runs, diverged runs, and per metric its median and interval (over
    the runs with a finite value). ``order``: setting keys in the order to show them."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["setting"], []).append(r)
    keys = [k for k in (order or sorted(by)) if k in by]
    rows = []
    for k in keys:
        rs = by[k]
        row: dict[str, Any] = {"setting": k, "values": rs[0]["values"], "runs": len(rs),
                               "diverged": sum(r["status"] == "diverged" for r in rs),
                               "refused": sum(r["status"] == "refused" for r in rs)}
        for m in metrics:
            vals = [float(r["final"][m]) for r in rs if isinstance(r["final"].get(m), (int, float))
                    and math.isfinite(r["final"][m])]
            med, lo, hi = median_interval(vals)
            mean, se = mean_se(vals)
            row[m] = {"median": med, "lo": lo, "hi": hi, "mean": mean, "se": se, "n": len(vals), "values": vals}
        rows.append(row)
    return rows


def _num(v: float) -> str:
    if math.isnan(v):
        return "-"
    if v == int(v) and abs(v) < 1e6:
        return f"{int(v)}"
    return f"{v:.3g}"


def setting_label(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items()) or "(defaults)"


def table(rows: list[dict[str, Any]], metrics: list[str], markdown: bool = False, stat: str = "median") -> str:
    """The summary as a plain-text (or markdown) table: one line per setting, each metric 'median [lo, hi]'
    (``stat="mean"``: 'mean ± standard error')."""
    if stat not in ("median", "mean"):
        raise ValueError(f"stat: median or mean, not {stat!r}")
    head = ["setting", "runs"] + [f"{m} median [{LEVEL:.0%} CI]" if stat == "median" else f"{m} mean ± s.e."
                                  for m in metrics]
    body = []
    for r in rows:
        runs = f"{r['runs']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else "") + \
            (f" ({r['refused']} refused)" if r["refused"] else "")
        cells = [setting_label(r["values"]), runs]
        for m in metrics:
            s = r[m]
            cells.append(f"{_num(s['median'])} [{_num(s['lo'])}, {_num(s['hi'])}]" if stat == "median"
                         else f"{_num(s['mean'])} ± {_num(s['se'])}")
        body.append(cells)
    if markdown:
        return "\n".join("| " + " | ".join(c) + " |" for c in [head, ["---"] * len(head), *body])
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])
