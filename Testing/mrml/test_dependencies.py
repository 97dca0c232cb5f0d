"""Dependency checks and the choice of installer, without the Slicer application: the
installer calls go to a recording stand-in for ``slicer`` (nothing is installed)."""

import re
from pathlib import Path
from types import SimpleNamespace

from OncoSegCommonLib import dependencies

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        constraints = kwargs.get("constraints") or (args[0][1] if args[0][0] == "-c" else None)
        pins = Path(constraints).read_text("utf-8").split() if constraints else []
        self.calls.append((args, kwargs, pins))


def engine_requirements() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    block = "\n".join(line.split("#", 1)[0] for line in block.splitlines())
    return {dependencies.requirement_name(r) for r in re.findall(r'"([^"]+)"', block)}


def slicer_pins() -> set[str]:
    """Every package some supported Slicer release ships (constraints/slicer-*.txt), by
    canonical name."""
    names = set()
    for path in sorted((ROOT / "constraints").glob("slicer-*.txt")):
        for line in path.read_text("utf-8").splitlines():
            if "==" in line.split("#", 1)[0]:
                names.add(dependencies.requirement_name(line))
    return names - {"slicer-core"}  # PyPI's build of Slicer's libraries, for the tests only


def test_requirements_plus_slicers_packages_and_torch_are_the_engines_dependencies():
    engine = engine_requirements()
    assert "torch" in engine
    listed = {dependencies.requirement_name(r) for r in dependencies.read_requirements()}
    shipped = {dependencies.canonical(n) for n in dependencies.SHIPPED_BY_SLICER}
    assert not listed & shipped, "Slicer's own packages must not be in requirements.txt"
    assert listed | (shipped & engine) | {"torch"} == engine


def test_unmet_tells_missing_and_too_old_from_satisfied():
    assert dependencies.unmet(["numpy>=1", "no-such-package-oncoseg>=1", "numpy>=999"]) == \
        ["no-such-package-oncoseg>=1", "numpy>=999"]
    status = dependencies.check(["numpy>=1"])
    assert status.ready and "ready" in status.summary()
    status = dependencies.check(["no-such-package-oncoseg"])
    assert not status.ready and "no-such-package-oncoseg" in status.summary()


def test_pip_ensure_is_used_where_slicer_has_it_and_slicers_packages_stay_pinned():
    ensure, pip = Recorder(), Recorder()
    fake = SimpleNamespace(packaging=SimpleNamespace(pip_ensure=ensure),
                           util=SimpleNamespace(pip_install=pip))
    dependencies.install(["no-such-package-oncoseg>=1", "numpy>=999", "pynrrd>=0.1"], fake)
    assert pip.calls == []
    ((args, kwargs, pins),) = ensure.calls
    assert args[0] == ["no-such-package-oncoseg>=1"]  # numpy is Slicer's; pynrrd is there
    assert kwargs["requester"] == "OncoSeg"
    numpy_pin = [p for p in pins if p.startswith("numpy==")]
    assert numpy_pin and re.fullmatch(r"numpy==[\w.]+", numpy_pin[0])


def test_older_slicer_gets_pip_install_with_the_same_constraints():
    pip = Recorder()
    fake = SimpleNamespace(util=SimpleNamespace(pip_install=pip))
    dependencies.install(["no-such-package-oncoseg>=1"], fake)
    ((args, _, pins),) = pip.calls
    assert args[0][0] == "-c" and args[0][2:] == ["no-such-package-oncoseg>=1"]
    assert any(p.startswith("SimpleITK==") for p in pins)
    dependencies.install(["numpy>=1"], fake)  # nothing unmet: nothing to install
    assert len(pip.calls) == 1


def test_the_engine_needs_no_highdicom():
    """No highdicom release runs on Slicer 5.10 (pydicom 2.4.4 and numpy 2.0.2: highdicom 0.23
    and later need pydicom 3, 0.22 uses ``np.float_``, which numpy 2 removed), so DICOM SEG is
    written with pydicom alone; highdicom is the tests' independent reader only."""
    assert "highdicom" not in engine_requirements()
    assert "highdicom" not in {dependencies.requirement_name(r)
                               for r in dependencies.read_requirements()}
    importers = []
    for folder in ("oncoseg", "OncoSegCommon", "RectalSeg", "OARSeg", "StagingCNN",
                   "BrainTumor2D3D", "OncoSegWeb"):
        for path in (ROOT / folder).rglob("*.py"):
            if re.search(r"^\s*(import|from)\s+highdicom\b", path.read_text("utf-8"), re.M):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def requirement_closure(roots: list[str]) -> set[str]:
    """Canonical names of the installed distributions ``roots`` need, transitively."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    stack = [dependencies.requirement_name(r) for r in roots]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(dependencies.canonical(requirement.name))
    return seen


def test_every_package_slicer_ships_that_the_requirements_need_stays_at_slicers_version():
    """An install from requirements.txt may not move a package Slicer ships (its DICOM
    module, Extensions Manager and PythonQt use them, some already imported): every such
    package the requirements pull in, read from the installed metadata, is pinned by
    ``shipped_constraints``. Slicer 5.10 ships pillow 11.2.1; scikit-image or matplotlib
    asking for a newer one must get an older release of theirs instead."""
    roots = dependencies.read_requirements()
    assert dependencies.unmet(roots) == [], "the test environment installs requirements.txt"
    needed = requirement_closure(roots)
    shipped = {dependencies.canonical(n) for n in dependencies.SHIPPED_BY_SLICER}
    assert {"numpy", "scipy", "pillow", "packaging"} <= needed  # the closure was followed
    assert needed & slicer_pins() <= shipped
    assert shipped - {"vtk"} <= slicer_pins()  # VTK is Slicer's, but no pip pin (no wheel)
    pinned = {dependencies.requirement_name(p) for p in dependencies.shipped_constraints()}
    assert {"numpy", "scipy", "simpleitk", "pydicom", "pillow", "packaging"} <= pinned
