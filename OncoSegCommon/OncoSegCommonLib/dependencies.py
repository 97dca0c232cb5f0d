"""Are the engine's Python packages there, and installing them inside Slicer.

Standard library only, so it runs before anything it checks is importable. Packages Slicer
ships (numpy, SimpleITK, vtk, scipy, pydicom, pillow, and those of them that the requirements
also need: packaging, pyparsing, python-dateutil, six, typing_extensions) are never installed
or upgraded from here: every install is constrained to the versions Slicer has, since Slicer's
own modules (DICOM, the Extensions Manager, PythonQt) were built and tested with them and some
are already imported in the running process. ``slicer.packaging.pip_ensure`` (Slicer 5.11+:
check, ask, install with progress, offer a restart) is used where it exists, otherwise
``slicer.util.pip_install``. PyTorch comes from the PyTorch extension, whose ``PyTorchUtils``
installs the build that matches the computer's GPU.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
# Slicer's SuperBuild installs them (SuperBuild/External_python-*.cmake, External_SimpleITK.cmake,
# and VTK's dist-info; 5.10 and 5.12 alike): the first six the engine imports, the rest are
# what matplotlib, scikit-image and pynrrd need of Slicer's packages (Testing/mrml/
# test_dependencies.py checks the list against constraints/slicer-*.txt).
SHIPPED_BY_SLICER = ("numpy", "SimpleITK", "vtk", "scipy", "pydicom", "pillow", "packaging",
                     "pyparsing", "python-dateutil", "six", "typing_extensions")
REQUESTER = "OncoSeg"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [line for line in lines if line]


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _satisfied(requirement: str) -> bool:
    version = installed_version(requirement_name(requirement))
    if version is None:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging: presence is all that can be told
        return True
    return Requirement(requirement).specifier.contains(version, prereleases=True)


def unmet(requirements: list[str]) -> list[str]:
    return [r for r in requirements if not _satisfied(r)]


@dataclass(frozen=True)
class DependencyStatus:
    missing: tuple[str, ...]
    torch_version: str | None

    @property
    def ready(self) -> bool:
        return not self.missing and self.torch_version is not None

    def summary(self) -> str:
        if self.ready:
            return f"Dependencies ready (PyTorch {self.torch_version})."
        parts = []
        if self.missing:
            parts.append("Python packages missing or too old: " + ", ".join(self.missing) + ".")
        if self.torch_version is None:
            parts.append("PyTorch is not installed: install it with the PyTorch extension "
                         "(Extensions Manager, 'PyTorch'), which picks the build for this "
                         "computer's GPU.")
        return " ".join(parts)


def check(requirements: list[str] | None = None) -> DependencyStatus:
    return DependencyStatus(tuple(unmet(read_requirements() if requirements is None
                                        else requirements)),
                            installed_version("torch"))


def shipped_constraints() -> list[str]:
    """``name==version`` for every package Slicer ships that is present: installs may not
    move them."""
    pins = []
    for name in SHIPPED_BY_SLICER:
        version = installed_version(name)
        if version is not None:
            pins.append(f"{name}=={version}")
    return pins


def install(requirements: list[str], slicer_module: Any) -> None:
    """Install what is unmet, never touching Slicer's own packages; ``slicer_module`` is
    ``slicer`` (a parameter so the choice of installer can be tested without the app)."""
    shipped = {canonical(n) for n in SHIPPED_BY_SLICER}
    wanted = [r for r in unmet(requirements) if requirement_name(r) not in shipped]
    if not wanted:
        return
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "slicer-constraints.txt"
        constraints.write_text("\n".join(shipped_constraints()) + "\n", "utf-8")
        packaging = getattr(slicer_module, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(wanted, requester=REQUESTER, constraints=str(constraints))
        else:
            slicer_module.util.pip_install(["-c", str(constraints), *wanted])


def install_torch() -> str:
    """PyTorch through the PyTorch extension; its version, or an error saying what to do."""
    try:
        import PyTorchUtils
    except ImportError:
        raise RuntimeError("Install the PyTorch extension (View > Extensions Manager, search "
                           "'PyTorch'), restart Slicer, then press this button again.") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
    if torch is None:
        raise RuntimeError("PyTorch was not installed.")
    return torch.__version__
