"""The layering rules of DESIGN.md, checked on the source (not on what happens to be imported).

Slicer GUI -> ``<Name>Lib`` -> ``OncoSegCommonLib`` -> ``oncoseg``, and the engine imports no
Slicer. Inside the engine arrows run one way through the layers of ``LAYERS`` (lowest first:
foundation, file formats and image maths, the task registry, engine services, methods, front
ends): no import cycle, no arrow up, no method importing another, and a model file loads its own
task's networks only. The task registry is low on purpose: registering a task is a low-level
act, and the registry reaches the methods only by module names in strings (see the comment
above ``LAYERS``).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_slicer_qt_or_ctk():
    files = sorted((ROOT / "oncoseg").rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(ROOT)): sorted(imported_top_level_modules(f) &
                                                  {"slicer", "qt", "ctk", "vtk"})
                 for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_lib_packages_never_import_qt_or_ctk():
    libs = sorted(p for p in ROOT.glob("*/*Lib") if p.is_dir())
    assert any(p.name == "OncoSegCommonLib" for p in libs)
    offenders = {}
    for lib in libs:
        for f in lib.rglob("*.py"):
            if "widget" in f.name.lower() or "panel" in f.name.lower():
                continue  # the Qt panels say so in their names
            bad = imported_top_level_modules(f) & {"qt", "ctk", "slicer.ScriptedLoadableModule"}
            if bad:
                offenders[str(f.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


# ---------------------------------------------------------------- arrows inside the engine
#
# Arrows run one way in ``oncoseg``: no import cycle, no module importing a higher layer, no
# method importing another method, and a model file loads its own task's networks only.
#
# What counts as an arrow: every ``import`` and ``from ... import`` statement anywhere in a
# module: at module level, inside functions, under ``if TYPE_CHECKING`` (a type-only import is
# still knowledge of the other module, and the day it is needed at run time it closes the
# circle). ``import a.b.c`` is an arrow to ``a.b.c``, or to the deepest of ``a.b`` / ``a`` that
# is a module of the engine; ``from a.b import c`` to ``a.b.c`` when that is a module, else to
# ``a.b``. A package's ``__init__`` is the module named after the package. Relative imports are
# resolved. Modules imported by a name in a string (``importlib.import_module``) are not arrows:
# that is how the task registry loads the declarations and methods of tasks it cannot know
# statically (built-in or plug-in), and how ``oncoseg.io`` loads its submodules lazily; the
# model-loading test below checks what such loading actually imports.
#
# Layers, lowest first. A module may import modules of its own layer or of a lower one.
# The task registry (``oncoseg.tasks``: the Task / InputRole / SegmentSpec declarations and
# the name -> Task table) sits low, below model files, data sets and prediction writing: each
# method's ``task.py`` registers its task there, model files look their task's networks up
# there, and results carry its SegmentSpecs. Registration is a low-level act; the registry
# reaches the methods only through module names in strings (``method_module``,
# ``network_modules``, ``BUILTIN_TASK_MODULES``). For the same reason prediction writing
# (``oncoseg.prediction``) and its picture (``oncoseg.overview``) sit below the methods: every
# method fills a Prediction. What drives the methods by name (the command line, ``oncoseg
# info``, export, the terminology file generator) is the top layer.
#
# An entry ending in ``.*`` is a package and everything under it; any other entry is one module.
# A module takes the rank of its exact entry, else of its longest matching package entry; a
# module with neither fails the test until it is given a rank here.
LAYERS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "foundation: errors, progress and cancel, setting values, memory and devices (and a "
        "network's inference copy, its fused convolutions, the graph tracing they read and "
        "their one-buffer upsampling), child processes, "
        "the vocabulary of codes, shipped data",
     ("oncoseg", "oncoseg.errors", "oncoseg.progress", "oncoseg.settings", "oncoseg.memory",
      "oncoseg.device", "oncoseg.network_inference", "oncoseg.network_fusion",
      "oncoseg.network_layers", "oncoseg.graph_tracing",
      "oncoseg.upsampling",
      "oncoseg.distributed",
      "oncoseg.childprocess", "oncoseg.terminology", "oncoseg.data.*")),
    (1, "file formats and image maths (a reader's clicks turned into a correction included)",
     ("oncoseg.io.*", "oncoseg.geometry", "oncoseg.orientation", "oncoseg.spacing",
      "oncoseg.intensity", "oncoseg.validation",
      "oncoseg.metrics", "oncoseg.postprocess", "oncoseg.body", "oncoseg.tiling",
      "oncoseg.slices", "oncoseg.registration", "oncoseg.plots", "oncoseg.refine")),
    (2, "the task registry",
     ("oncoseg.tasks",)),
    (3, "engine services: model files, data sets, phantoms, training loop, inference, "
        "evaluation tables, prediction writing and its picture, a case's quality control, "
        "what every method shares, structures' standard names",
     ("oncoseg.modelfile", "oncoseg.datasets.*", "oncoseg.phantoms.*", "oncoseg.training",
      "oncoseg.inference", "oncoseg.evaluation", "oncoseg.prediction", "oncoseg.overview",
      "oncoseg.overview_layout",
      "oncoseg.quality", "oncoseg.method", "oncoseg.structure_names")),
    (4, "methods, one subpackage per family (see METHOD_FAMILIES)",
     ("oncoseg.rectal.*", "oncoseg.oar.*", "oncoseg.staging.*", "oncoseg.brain.*")),
    (5, "front ends: the generic verbs every front end calls, cohort runs and their report, "
        "the command line, the demo, info, export, the terminology file generator",
     ("oncoseg.verbs", "oncoseg.cohort", "oncoseg.cohort_report", "oncoseg.demo",
      "oncoseg.__main__", "oncoseg.cli", "oncoseg.info", "oncoseg.export",
      "oncoseg.export_formats", "oncoseg.frontends", "oncoseg.terminology_context")),
)
# Method families never import each other. oar/ct and oar/mr share the modules of the oar
# package itself (oncoseg.oar.organs, oncoseg.oar.losses), which import neither of them.
METHOD_FAMILIES = ("oncoseg.rectal", "oncoseg.oar.ct", "oncoseg.oar.mr", "oncoseg.staging",
                   "oncoseg.brain", "oncoseg.oar")
SHARED_FAMILY_USERS = {"oncoseg.oar": ("oncoseg.oar.ct", "oncoseg.oar.mr")}


def package_modules(root: Path, package: str = "oncoseg") -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _deepest(name: str, modules: Mapping[str, Path]) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_arrows(modules: Mapping[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same set: line of its first import statement}."""
    arrows: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    above = package[:len(package) - node.level + 1]
                    base = ".".join([*above, *([node.module] if node.module else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                module = _deepest(target, modules)
                if module is not None and module != name:
                    found.setdefault(module, node.lineno)
        arrows[name] = found
    return arrows


def import_cycles(arrows: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in arrows.get(module, {}):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(arrows):
        if module not in index:
            visit(module)
    return sorted(groups)


def layer_rank(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching entry, rank)
    for rank, _, entries in LAYERS:
        for entry in entries:
            if entry == module:
                return rank
            if entry.endswith(".*"):
                package = entry[:-2]
                if (module == package or module.startswith(package + ".")) and \
                        (best is None or len(package) > best[0]):
                    best = (len(package), rank)
    return None if best is None else best[1]


def method_family(module: str) -> str | None:
    matching = [f for f in METHOD_FAMILIES if module == f or module.startswith(f + ".")]
    return max(matching, key=len) if matching else None


def _where(module: str, modules: Mapping[str, Path], line: int) -> str:
    return f"{modules[module].relative_to(ROOT)}:{line}"


ENGINE = package_modules(ROOT)


def test_the_import_graph_sees_every_kind_of_import(tmp_path):
    """The graph builder itself: relative, function-level and type-only imports are arrows."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "low.py").write_text("import os\n", encoding="utf-8")
    (pkg / "sub" / "__init__.py").write_text("from .. import low\n", encoding="utf-8")
    (pkg / "sub" / "deep.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import X\n",
        encoding="utf-8")
    (pkg / "high.py").write_text(
        "def f():\n    import pkg.sub.deep.name\n    from .sub import deep, nothing\n"
        "    from . import low as l\n", encoding="utf-8")
    modules = package_modules(tmp_path, "pkg")
    arrows = import_arrows(modules)
    assert arrows == {"pkg": {}, "pkg.low": {}, "pkg.sub": {"pkg.low": 1},
                      "pkg.sub.deep": {"pkg.high": 3},
                      "pkg.high": {"pkg.sub.deep": 2, "pkg.sub": 3, "pkg.low": 4}}
    assert import_cycles(arrows) == [["pkg.high", "pkg.sub.deep"]]


def test_the_engine_has_no_import_cycle():
    arrows = import_arrows(ENGINE)
    assert len(arrows) > 50
    cycles = import_cycles(arrows)
    described = [" / ".join(f"{m} -> {o} ({_where(m, ENGINE, arrows[m][o])})"
                            for m in group for o in sorted(arrows[m]) if o in group)
                 for group in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_every_arrow_points_down_the_layers():
    arrows = import_arrows(ENGINE)
    unranked = sorted(m for m in ENGINE if layer_rank(m) is None)
    assert not unranked, f"give these modules a layer in LAYERS: {unranked}"
    upward = [f"{m} (layer {layer_rank(m)}) -> {o} (layer {layer_rank(o)}) at "
              f"{_where(m, ENGINE, line)}"
              for m in sorted(arrows) for o, line in sorted(arrows[m].items())
              if layer_rank(o) > layer_rank(m)]
    assert not upward, "arrows up the layers:\n" + "\n".join(upward)


def test_methods_never_import_each_other():
    arrows = import_arrows(ENGINE)
    families = {method_family(m) for m in ENGINE} - {None}
    assert families == set(METHOD_FAMILIES)  # every family still exists
    crossing = []
    for module in sorted(arrows):
        family = method_family(module)
        for other, line in sorted(arrows[module].items()):
            target = method_family(other)
            if family is None or target is None or target == family:
                continue
            if family not in SHARED_FAMILY_USERS.get(target, ()):
                crossing.append(f"{module} -> {other} at {_where(module, ENGINE, line)}")
    assert not crossing, "one method imports another:\n" + "\n".join(crossing)


LOAD_ONE_MODEL = """
import dataclasses, json, sys
from oncoseg.errors import InputError
from oncoseg.modelfile import build_network, load_network
network, metadata = load_network(sys.argv[1])
try:  # another task's architecture under this task's name is looked for in this task only
    build_network(dataclasses.replace(metadata, architecture="brain-2d"), "m.safetensors")
except InputError as error:
    refusal = str(error)
loaded = sorted(m for m in sys.modules if m.startswith("oncoseg."))
from oncoseg.tasks import all_tasks
networks = {t.name: list(t.network_modules) for t in all_tasks()}
print(json.dumps({"task": metadata.task, "loaded": loaded, "networks": networks,
                  "refusal": refusal}))
"""


def test_loading_a_model_imports_only_its_tasks_networks():
    """A fresh interpreter loads the bundled oar-mr demo model: of all the tasks' network
    modules, only oar-mr's own are imported, also when the file names an architecture that
    oar-mr does not have (a clear error naming the file, the field and oar-mr's own)."""
    import json
    import subprocess
    import sys

    from oncoseg.modelfile import read_header

    models = sorted((ROOT / "oncoseg/data/models").glob("*.safetensors"))
    (model,) = [p for p in models if read_header(p).metadata.task == "oar-mr"]
    result = subprocess.run([sys.executable, "-c", LOAD_ONE_MODEL, str(model)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["task"] == "oar-mr"
    own = report["networks"].pop("oar-mr")
    others = [m for modules in report["networks"].values() for m in modules]
    assert own and len(others) >= 4  # the declarations are there to check against
    assert set(own) <= set(report["loaded"])
    assert sorted(set(others) & set(report["loaded"])) == []
    assert report["refusal"] == ("m.safetensors: field 'architecture' names 'brain-2d', which "
                                 "this OncoSeg does not know (architectures of the 'oar-mr' "
                                 "task: fcn-resnet50)")
