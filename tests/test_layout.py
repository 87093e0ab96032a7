"""The architecture's arrows (docs/ARCHITECTURE.md), read from the code: pages -> ui -> arena -> families -> core,
a family's rooms point down (lessons -> figures -> trainer -> model), no family reaches into another,
Streamlit only in the ui layer, and no import circles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: a family's rooms, from the bottom: a module may import rooms of its own rank or lower only
ROOMS = {"model": 0, "layers": 0, "targets": 0, "trainer": 1, "fits": 1, "figures": 2, "elbo_figures": 2,
         "image_figures": 2, "plane_figures": 2, "lessons": 3}
ROOMS.update({"exact": 0, "samplers": 0, "sweeps": 2})  # the diffusion family's closed forms, samplers, measurements
ROOMS.update({"seeds": 1, "seeds_figures": 2})  # many seeds at once: the batched trainer and its view
ROOMS.update({"mixing": 0, "config": 0})  # the flows' layers between transforms; the GAN's settings (below its trainer)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports (``from a import b`` counts as ``a.b`` where that is a module), leaving
    out imports only made for type checkers (under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skip.update(id(n) for n in ast.walk(node))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    files = [*ROOT.glob("dgm/**/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"]
    mods = {_module_name(p): p for p in files}
    return {m: {i for i in _imports(p) if i in mods} for m, p in mods.items()}, {m: _imports(p) for m, p in mods.items()}


GRAPH, ALL_IMPORTS = _graph()


def _layer(m: str) -> int:
    if m.startswith("dgm.core") or m == "dgm":
        return 0
    if m.startswith("dgm.families"):
        return 1
    if m.startswith("dgm.arena"):
        return 2  # composes families (the arena); below the ui
    if m.startswith("dgm.studies"):
        return 2  # studies compose the registry's experiments (found by name, no family imported); below the ui
    if m.startswith("dgm.ui"):
        return 3
    return 4  # pages, app.py, and dgm.__main__ (the CLI's entry point: it dispatches to the arena's and the studies' CLIs)


def test_arrows_point_from_pages_to_ui_to_families_to_core():
    bad = [f"{a} -> {b}" for a, bs in GRAPH.items() for b in bs if _layer(b) > _layer(a)]
    assert not bad, "imports against the layers: " + ", ".join(sorted(bad))


def test_families_keep_to_their_own_folder_and_their_rooms_point_down():
    bad = []
    for a, bs in GRAPH.items():
        if not a.startswith("dgm.families.") or a.count(".") < 3:
            continue
        family, room = a.split(".")[2], a.split(".")[3]
        assert room in ROOMS, f"{a}: a family module must be one of the rooms {sorted(ROOMS)} (docs/ARCHITECTURE.md)"
        for b in bs:
            if not b.startswith("dgm.families."):
                continue
            if b.split(".")[2] != family:
                bad.append(f"{a} -> {b} (another family)")
            elif b.count(".") >= 3 and ROOMS[b.split(".")[3]] > ROOMS[room]:
                bad.append(f"{a} -> {b} (up from {room})")
    assert not bad, ", ".join(bad)


def test_studies_reach_families_only_through_the_registry():
    bad = [f"{a} -> {b}" for a, bs in GRAPH.items() if a.startswith("dgm.studies") for b in bs
           if b.startswith("dgm.families")]
    assert not bad, ", ".join(bad)


def test_only_the_ui_layer_imports_streamlit():
    bad = [m for m, imps in ALL_IMPORTS.items()
           if _layer(m) < 3 and any(i == "streamlit" or i.startswith("streamlit.") for i in imps)]
    assert not bad


def test_no_import_circles():
    seen, stack, on_stack, cycles = {}, [], set(), []

    def visit(m):  # Tarjan's strongly connected components
        seen[m] = low = len(seen)
        stack.append(m)
        on_stack.add(m)
        for n in GRAPH.get(m, ()):
            if n not in seen:
                low = min(low, visit(n))
            elif n in on_stack:
                low = min(low, seen[n])
        if low == seen[m]:
            comp = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
        return low

    for m in GRAPH:
        if m not in seen:
            visit(m)
    assert not cycles, cycles


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("dgm/**/*.py")))
def test_modules_stay_small(path):
    n = len((ROOT / path).read_text().splitlines())
    assert n <= 420, f"{path} has {n} lines; split it by job (docs/ARCHITECTURE.md)"


def test_every_document_the_repository_cites_is_in_it():
    """Issue 15, item 9: the code and README cited a DESIGN.md that was not in the repository. Every `NAME.md`
    named in a tracked file must exist, at that path from the repository root, or beside the citing file, or as
    the bare name of a file somewhere in the repository (README's tree lists docs/ARCHITECTURE.md by name)."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = {Path(f).name for f in files}
    missing = []
    for f in files:
        if not f.endswith((".py", ".md", ".toml", ".txt", ".cfg", "Makefile")) or f == "tests/test_layout.py":
            continue
        for doc in set(re.findall(r"[A-Za-z0-9_./-]+\.md\b", (ROOT / f).read_text(errors="ignore"))):
            if not ((ROOT / doc).is_file() or (ROOT / f).parent.joinpath(doc).is_file() or doc in names):
                missing.append(f"{f}: {doc}")
    assert not missing, missing
