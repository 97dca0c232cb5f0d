"""The layering rules of DESIGN.md, checked on the source (not on what happens to be imported)."""

import ast
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
