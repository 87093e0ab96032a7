"""Likelihood and sample quality disagree (Theis, van den Oord & Bethge 2016; Grover, Dhar & Ermon 2018): the
lectures' arguments, measured on a 2D mixture whose density is known exactly.

- ``noise_mixture``: a perfect model p mixed 1% with 99% uniform noise. log(0.01 p(x) + 0.99 u(x)) >=
  log p(x) - log 100, so its held-out NLL is at most log 100 ≈ 4.6 nats worse than the perfect model's,
  while 99% of its samples are noise.
- ``memorising_kde``: a kernel density estimate with a tiny bandwidth on the training points. Its samples are
  the training points (jittered): precision and recall look perfect, but held-out points lie between the
  kernels and get a poor likelihood.
- Precision against recall across families (a GAN's sharp samples on few modes, a flow's blur over all) is
  read from an arena run's table (``precision_recall``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

import dgm.core.data
from dgm.core import quality
from dgm.core.metrics import kde_log_prob

SEED = 7
N = 2500  # samples, held-out points and reference points of each contrast


def _sets(data: str):
    dist = dgm.core.data.get(data)
    g = torch.Generator().manual_seed(SEED)
    return dist, g, dist.sample(N, g), dist.sample(N, g)  # (heldout, reference)


def noise_mixture(data: str = "ring8", good: float = 0.01) -> dict[str, Any]:
    """The perfect model p against ``good`` p + (1 - good) uniform on the data's box: NLLs (nats per point),
    the change and its bound log(1 / good), and the precision and recall of each one's samples."""
    dist, g, heldout, ref = _sets(data)
    xmin, xmax, ymin, ymax = dist.box
    log_u = -math.log((xmax - xmin) * (ymax - ymin))
    lp = dist.log_prob(heldout).double()
    log_mix = torch.logaddexp(math.log(good) + lp, torch.full_like(lp, math.log(1 - good) + log_u))
    k = int(round(good * N))  # samples of the mixture: k from p, the rest uniform on the box
    noise = torch.rand(N - k, 2, generator=g) * torch.tensor([xmax - xmin, ymax - ymin]) + torch.tensor([xmin, ymin])
    mixed = torch.cat([dist.sample(k, g), noise])
    out = {"nll_good": float(-lp.mean()), "nll_mixture": float(-log_mix.mean()), "bound": math.log(1 / good),
           "good": good, "samples": mixed.numpy(), "data": data}
    out["change"] = out["nll_mixture"] - out["nll_good"]
    for name, x in (("good", dist.sample(N, g)), ("mixture", mixed)):
        pr = quality.prdc(ref, x)
        out[f"precision_{name}"], out[f"recall_{name}"] = pr["precision"], pr["recall"]
    return out


def memorising_kde(data: str = "8gaussians", train: int = N, narrow: float = 0.01) -> dict[str, Any]:
    """A KDE of ``train`` training points with bandwidth ``narrow`` (it memorises them) against one with
    Scott's bandwidth and the true density: held-out NLLs, and precision and recall of their samples."""
    dist, g, heldout, ref = _sets(data)
    x_train = dist.sample(train, g)
    scott = float(x_train.std(0).mean()) * train ** (-1 / 6)
    out: dict[str, Any] = {"data": data, "train": train, "narrow": narrow, "scott": scott,
                           "nll_true": float(-dist.log_prob(heldout).mean())}
    for name, h in (("narrow", narrow), ("scott", scott)):
        out[f"nll_{name}"] = float(-kde_log_prob(x_train, heldout, bandwidth=h).mean())
        pick = torch.randint(0, train, (N,), generator=g)
        x = x_train[pick] + h * torch.randn(N, 2, generator=g)  # samples of the KDE
        pr = quality.prdc(ref, x)
        out[f"precision_{name}"], out[f"recall_{name}"] = pr["precision"], pr["recall"]
        if name == "narrow":
            out["samples"] = x.numpy()
    return out


def precision_recall(table: list[dict[str, Any]], pair: tuple[str, str] = ("GAN", "flow")) -> str | None:
    """The lectures' contrast of sharp samples on part of the data against blur over all of it, read from an
    arena table: the two families' precision, recall, density and coverage in one line (None until both are
    measured), saying which one has the higher precision and which the higher recall."""
    rows = {r["family"]: r for r in table if "precision" in r}
    if not all(f in rows for f in pair):
        return None
    a, b = (rows[f] for f in pair)
    sharp = pair[0] if a["precision"] >= b["precision"] else pair[1]
    covers = pair[0] if a["recall"] > b["recall"] else pair[1]
    parts = [f"{f}: precision {r['precision']:.2f}, recall {r['recall']:.2f}, density {r['density']:.2f}, "
             f"coverage {r['coverage']:.2f}" for f, r in zip(pair, (a, b))]
    return "; ".join(parts) + f". Sharper samples: {sharp}; more of the data covered: {covers}."
