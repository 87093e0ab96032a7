"""Exports of a run: metric history as CSV, figures as PNG/SVG, the run as an animated GIF, and
model weights as safetensors (which hold tensors only, so loading a file can never run code).

Every export is bounded: images come from one headless Chromium that is closed when the last export
using it ends (``images``); a GIF replays at most ``GIF_MAX_STEPS`` steps and stops when asked
(``should_stop``: the server is stopping). A weights file is checked whole before anything is loaded:
its metadata as strictly as a link's parameters, its tensors for shape, kind and finite values.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import dgm
from dgm.core import config as cfglib
from dgm.core.train import Trainer


GIF_MAX_STEPS = cfglib.REPLAY_MAX  # a GIF replays the run from its seed, as a replay link does: as far


class WeightsError(ValueError):
    """An uploaded weights file that cannot be used here; the message says why."""


class ExportStopped(RuntimeError):
    """An export was refused (too large) or stopped before it finished; the message says why."""


_IMAGES_LOCK = threading.Lock()
_images_users = 0


@contextlib.contextmanager
def images() -> Iterator[None]:
    """One headless Chromium (kaleido's) for the images of an export, closed when the last export that
    uses it ends, so that none stays running under the server (or the CLI) between exports."""
    global _images_users
    import kaleido

    with _IMAGES_LOCK:
        if _images_users == 0:
            kaleido.start_sync_server(silence_warnings=True)
        _images_users += 1
    try:
        yield
    finally:
        with _IMAGES_LOCK:
            _images_users -= 1
            if _images_users == 0:
                kaleido.stop_sync_server(silence_warnings=True)


def write_pngs(figures: Mapping[str, Any], folder: str, prefix: str) -> list[str]:
    """Each figure as ``folder/prefix_name.png``; returns the file names."""
    from dgm.core import viz

    names = []
    with images():
        for name, fig in figures.items():
            names.append(f"{prefix}_{name}.png")
            viz.write_png(fig, os.path.join(folder, names[-1]))
    return names


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
            if isinstance(v, torch.Tensor):  # a copy: tensors that modules share (a flow's masks) are written each
                tensors[f"{mod_name}.{k}"] = v.detach().cpu().clone(memory_format=torch.contiguous_format)
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
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise WeightsError("The file's metadata is not a table of texts.")
    return tensors, dict(meta or {})


def _checked_meta(trainer: Trainer, meta: dict[str, str], experiment: str) -> tuple[int, list[str]]:
    """The metadata of a weights file, checked as a link's parameters are (``config.check``): the page,
    the settings (a JSON object of this page's knobs), the seed and the step. Returns (iteration,
    differences from the settings here)."""
    shown = cfglib.shown
    if meta.get("experiment") != experiment:
        raise WeightsError(f"These weights are for the {shown(meta.get('experiment', 'unknown'))} page, "
                           f"not {experiment!r}.")
    try:
        saved = json.loads(meta.get("config", "{}"))
    except (json.JSONDecodeError, RecursionError):
        raise WeightsError("The settings in this file are not readable (not JSON).") from None
    if not isinstance(saved, dict):
        raise WeightsError(f"The settings in this file are not a table of settings ({type(saved).__name__}).")
    known = cfglib.knob_map(trainer.config)
    # settings this version does not know are left out (as a link's are); a value of a known one must be
    # valid, except a name of the user's own data ("custom:<hash>"), which is not one of the choices
    values, notes = cfglib.check(type(trainer.config), {k: v for k, v in saved.items() if k in known})
    bad = [n for k, n in notes.items() if not (isinstance(saved[k], str) and saved[k].startswith("custom:"))]
    if bad:
        raise WeightsError(f"The settings in this file are not valid here: {'; '.join(bad[:3])}.")
    checked = {}
    for name in ("iteration", "seed"):
        if name in meta:
            v, note = cfglib.run_setting(name, meta[name])
            if note is not None or v is None:
                raise WeightsError(f"The file's {name} is not valid: {note}.")
            checked[name] = v
    here = cfglib.to_dict(trainer.config)
    diff = [f"{k}={shown(values[k])} (here {here[k]!r})" for k in here if k in values and values[k] != here[k]]
    return checked.get("iteration", 0), diff


def load_weights(trainer: Trainer, raw: bytes, experiment: str) -> int:
    """Load an uploaded weights file into ``trainer``; returns the iteration it was saved at.
    Raises WeightsError (and changes nothing) when the file does not match this model: everything is
    checked before anything is loaded."""
    tensors, meta = read_weights(raw)
    it, diff = _checked_meta(trainer, meta, experiment)
    modules = trainer.modules()
    expected = {f"{m}.{k}": v for m, mod in modules.items() for k, v in mod.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    kinds = [k for k in expected if k in tensors and tensors[k].is_floating_point() != expected[k].is_floating_point()]
    if missing or extra or shapes or kinds:
        detail = "; ".join(filter(None, [
            f"settings differ: {', '.join(diff[:5])}" if diff else "",
            f"{len(missing)} tensors missing" if missing else "",
            f"{len(extra)} unexpected tensors" if extra else "",
            f"{len(shapes)} tensors of another shape" if shapes else "",
            f"{len(kinds)} tensors of another kind" if kinds else ""]))
        raise WeightsError(f"These weights do not fit this model ({detail}). Set the same settings and try again.")
    # NaN nowhere, infinities only in buffers (where they mark "nothing yet", such as no best validation score)
    params = {f"{m}.{k}" for m, mod in modules.items() for k, _ in mod.named_parameters()}
    bad = [k for k in expected if tensors[k].is_floating_point() and not bool(
        (torch.isfinite(tensors[k]) if k in params else ~torch.isnan(tensors[k])).all())]
    if bad:
        raise WeightsError(f"These weights hold NaN or infinite values ({len(bad)} tensors, e.g. "
                           f"{cfglib.shown(bad[0])}); they cannot be trained from.")
    states = {m: {k: tensors[f"{m}.{k}"].to(v.device, v.dtype) for k, v in mod.state_dict().items()}
              for m, mod in modules.items()}
    before = trainer.checkpoint()
    try:
        for m, mod in modules.items():
            mod.load_state_dict(states[m])
    except Exception as e:  # checked above; should a module still refuse, nothing is half loaded
        trainer.restore(before, copy_=False)
        raise WeightsError(f"These weights could not be loaded: {e}") from None
    trainer.on_weights_loaded(it)
    trainer.mark_good()
    return it


def figures_zip(figures: Mapping[str, Any], prefix: str, svg: bool = True) -> bytes:
    """PNG (and SVG) of every figure, zipped. Needs kaleido (Chromium) for plotly figures."""
    from dgm.core import viz

    buf = io.BytesIO()
    with images(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, fig in figures.items():
            z.writestr(f"{prefix}_{name}.png", viz.to_image(fig, "png"))
            if svg:
                z.writestr(f"{prefix}_{name}.svg", viz.to_image(fig, "svg"))
    return buf.getvalue()


def animation_gif(make: Callable[[], Trainer], figure: Callable[[Trainer], Any], steps: int, frames: int = 16,
                  ms_per_frame: int = 300, *, should_stop: Callable[[], bool] | None = None,
                  max_seconds: float | None = None) -> bytes:
    """Replay a run from its seed (training is deterministic) and render ``frames`` snapshots of it,
    evenly spaced from step 0 to ``steps``, as an animated GIF. Raises ExportStopped for more than
    ``GIF_MAX_STEPS`` steps, when the replay takes longer than ``max_seconds``, and when
    ``should_stop()`` turns true between bursts."""
    from PIL import Image

    from dgm.core import viz

    if not (isinstance(steps, int) and 0 <= steps <= GIF_MAX_STEPS) or not 1 <= frames <= 100:
        raise ExportStopped(f"A GIF replays at most {GIF_MAX_STEPS:,} steps in 1..100 frames; asked for "
                            f"{cfglib.shown(steps)} steps.")
    t0 = time.monotonic()
    late = lambda: max_seconds is not None and time.monotonic() - t0 > max_seconds  # noqa: E731
    asked = should_stop or (lambda: False)
    should_stop = lambda: asked() or late()  # noqa: E731
    trainer = make()
    marks = sorted({round(i * steps / max(frames - 1, 1)) for i in range(frames)})
    images_ = []
    with images():
        for m in marks:
            if m > trainer.iteration:
                trainer.run(steps=m - trainer.iteration, burst=None, should_stop=should_stop)
            if should_stop():
                raise ExportStopped(f"The GIF was not finished: it took longer than {max_seconds:g} s."
                                    if late() else "The GIF was not finished: the server is stopping.")
            png = viz.to_image(figure(trainer), "png", scale=1.0)
            images_.append(Image.open(io.BytesIO(png)).convert("P", palette=Image.Palette.ADAPTIVE))
    out = io.BytesIO()
    images_[0].save(out, format="GIF", save_all=True, append_images=images_[1:], duration=ms_per_frame, loop=0)
    return out.getvalue()


def frozen_copy(make: Callable[[], Trainer], trainer: Trainer) -> Trainer:
    """A private copy of ``trainer`` at its last finite state, so an export can run on its own
    thread while the original keeps training."""
    t = make()
    t.restore(trainer.last_good)
    return t
