"""Exports of a run: metric history as CSV, figures as PNG/SVG, the run as an animated GIF, and
model weights as safetensors (which hold tensors only, so loading a file can never run code)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import dgm
from dgm.core import config as cfglib
from dgm.core.train import Trainer


class WeightsError(ValueError):
    """An uploaded weights file that cannot be used here; the message says why."""


def history_csv(trainer: Trainer) -> str:
    rows = trainer.history.merged()
    keys = sorted({k for r in rows for k in r} - {"step"})
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["step", *keys])
    for r in rows:
        w.writerow([r["step"], *(r.get(k, "") for k in keys)])
    return out.getvalue()


def weights_bytes(trainer: Trainer, experiment: str) -> bytes:
    """Every module's parameters and buffers (from the last finite state), with the config in the
    metadata."""
    state = trainer.last_good
    tensors = {}
    for mod_name, sd in state["objects"].items():
        if mod_name not in trainer.modules():
            continue  # optimisers and schedulers are not saved: training resumes with a fresh optimiser
        for k, v in sd.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{mod_name}.{k}"] = v.detach().cpu().contiguous()
    meta = {"experiment": experiment, "config": json.dumps(cfglib.to_dict(trainer.config)),
            "seed": str(trainer.seed), "iteration": str(state["iteration"]), "dgm_version": dgm.__version__}
    return st_save(tensors, metadata=meta)


def read_weights(raw: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not raw:
        raise WeightsError("The file is empty.")
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")  # the header (with the metadata) is JSON after a length
        header = json.loads(raw[8:8 + n])
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError, OverflowError) as e:
        raise WeightsError(f"This is not a safetensors weights file ({type(e).__name__}).") from None
    return tensors, dict(header.get("__metadata__") or {})


def load_weights(trainer: Trainer, raw: bytes, experiment: str) -> int:
    """Load an uploaded weights file into ``trainer``; returns the iteration it was saved at.
    Raises WeightsError (and changes nothing) when the file does not match this model."""
    tensors, meta = read_weights(raw)
    if meta.get("experiment") != experiment:
        raise WeightsError(f"These weights are for the {meta.get('experiment', 'unknown')!r} page, not {experiment!r}.")
    try:
        saved_cfg = json.loads(meta.get("config", "{}"))
    except json.JSONDecodeError:
        saved_cfg = {}
    here = cfglib.to_dict(trainer.config)
    diff = [f"{k}={saved_cfg[k]!r} (here {here[k]!r})" for k in here if k in saved_cfg and saved_cfg[k] != here[k]]
    modules = trainer.modules()
    expected = {f"{m}.{k}": v for m, mod in modules.items() for k, v in mod.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or extra or shapes:
        detail = "; ".join(filter(None, [
            f"settings differ: {', '.join(diff)}" if diff else "",
            f"{len(missing)} tensors missing" if missing else "",
            f"{len(extra)} unexpected tensors" if extra else "",
            f"{len(shapes)} tensors of another shape" if shapes else ""]))
        raise WeightsError(f"These weights do not fit this model ({detail}). Set the same settings and try again.")
    for m, mod in modules.items():
        sd = {k: tensors[f"{m}.{k}"].to(v.device, v.dtype) for k, v in mod.state_dict().items()}
        mod.load_state_dict(sd)
    it = int(meta.get("iteration", "0") or 0)
    trainer.iteration = it
    trainer.mark_good()
    return it


def figures_zip(figures: Mapping[str, Any], prefix: str, svg: bool = True) -> bytes:
    """PNG (and SVG) of every figure, zipped. Needs kaleido (Chromium) for plotly figures."""
    from dgm.core import viz

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, fig in figures.items():
            z.writestr(f"{prefix}_{name}.png", viz.to_image(fig, "png"))
            if svg:
                z.writestr(f"{prefix}_{name}.svg", viz.to_image(fig, "svg"))
    return buf.getvalue()


def animation_gif(make: Callable[[], Trainer], figure: Callable[[Trainer], Any], steps: int, frames: int = 16,
                  ms_per_frame: int = 300) -> bytes:
    """Replay a run from its seed (training is deterministic) and render ``frames`` snapshots of it,
    evenly spaced from step 0 to ``steps``, as an animated GIF."""
    from PIL import Image

    from dgm.core import viz

    trainer = make()
    marks = sorted({round(i * steps / max(frames - 1, 1)) for i in range(frames)})
    images = []
    for m in marks:
        if m > trainer.iteration:
            trainer.step(m - trainer.iteration)
        png = viz.to_image(figure(trainer), "png", scale=1.0)
        images.append(Image.open(io.BytesIO(png)).convert("P", palette=Image.Palette.ADAPTIVE))
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return out.getvalue()


def frozen_copy(make: Callable[[], Trainer], trainer: Trainer) -> Trainer:
    """A private copy of ``trainer`` at its last finite state, so an export can run on its own
    thread while the original keeps training."""
    t = make()
    t.restore(trainer.last_good)
    return t
