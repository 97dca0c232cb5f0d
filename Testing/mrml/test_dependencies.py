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


def test_requirements_plus_slicers_packages_and_torch_are_the_engines_dependencies():
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    engine = {dependencies.requirement_name(r) for r in re.findall(r'"([^"]+)"', block)}
    assert "torch" in engine and "highdicom" in engine
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
