"""The Dependencies section at the top of every OncoSeg panel (Qt; the checks are in
:mod:`OncoSegCommonLib.dependencies`).

A module calls :func:`dependencies_ready` first in its ``setup``: while something is missing the
panel shows only this section, with the install buttons, and asks for a restart once installed
(the engine cannot be imported half-installed).
"""

from pathlib import Path

import slicer

from OncoSegCommonLib import dependencies

UI_FILE = Path(__file__).resolve().parents[1] / "Resources" / "UI" / "OncoSegDependencies.ui"


class DependencyPanel:
    def __init__(self, layout):
        widget = slicer.util.loadUI(str(UI_FILE))
        layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        self.ui.installPackagesButton.connect("clicked()", self._install_packages)
        self.ui.installTorchButton.connect("clicked()", self._install_torch)
        self.refresh()

    def refresh(self) -> bool:
        status = dependencies.check()
        self.ui.dependencyStatusLabel.text = status.summary()
        self.ui.installPackagesButton.visible = bool(status.missing)
        self.ui.installTorchButton.visible = status.torch_version is None
        self.ui.dependenciesCollapsibleButton.collapsed = status.ready
        return status.ready

    def _install_packages(self):
        missing = dependencies.check().missing
        if not slicer.util.confirmOkCancelDisplay(
                "OncoSeg will install these Python packages into Slicer:\n"
                + "\n".join(missing) + "\n\nSlicer's own packages are not changed."):
            return
        with slicer.util.tryWithErrorDisplay("Installing the packages failed.",
                                             waitCursor=True):
            dependencies.install(list(missing), slicer)
        self._done()

    def _install_torch(self):
        with slicer.util.tryWithErrorDisplay("PyTorch could not be installed.", waitCursor=True):
            dependencies.install_torch()
        self._done()

    def _done(self):
        if self.refresh():
            slicer.util.infoDisplay("Dependencies are installed. Restart Slicer to use OncoSeg.")


def dependencies_ready(layout) -> bool:
    """Show the Dependencies section; True when the engine can be used."""
    return DependencyPanel(layout).refresh()
