"""OncoSeg Common: a hidden module that carries the logic and panels the OncoSeg modules share.

It has no panel of its own. Its library, ``OncoSegCommonLib``, is importable once Slicer has
loaded this module, and makes the engine package ``oncoseg`` importable too. When the
application has started it loads OncoSeg's terminology (the segments' SNOMED CT codes) and
registers the phantom cases in Sample Data (category OncoSeg). :class:`OncoSegCommonTest` runs
the shared library's scenarios in the application.
"""

import logging
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

RESOURCES = Path(__file__).resolve().parent / "Resources"


class OncoSegCommon(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "OncoSeg Common"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = []
        self.parent.hidden = True
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "Shared logic of the OncoSeg modules (RectalSeg, OARSeg, StagingCNN, "
            "BrainTumor2D3D). For research use only, not for clinical use."
        )
        self.parent.acknowledgementText = (
            "OncoSeg implements methods published by their authors; each module cites its paper."
        )
        slicer.app.connect("startupCompleted()", on_startup)


def on_startup():
    """Terminology and sample data, once Terminologies and SampleData exist; skipped (the
    panels offer the install) while the engine's dependencies are missing."""
    from SegmentEditorOncoSegRefine import register_effect

    from OncoSegCommonLib import dependencies

    register_effect()  # Segment Editor effect "OncoSeg refine" (imports the engine when used)
    if not dependencies.check().ready:
        logging.info("OncoSeg: dependencies missing; sample data not registered yet")
        return
    slicer.modules.terminologies.logic().LoadTerminologyFromFile(
        str(RESOURCES / "Terminology" / "OncoSeg.term.json"))
    import SampleData

    from OncoSegCommonLib.context import MRMLContext
    from OncoSegCommonLib.sample_data import load_sample, register_sample_data

    cache = Path(slicer.app.cachePath) / "OncoSeg"
    register_sample_data(SampleData.SampleDataLogic.registerCustomSampleDataSource,
                         lambda task: load_sample(MRMLContext.from_application(), task, cache),
                         RESOURCES / "Icons")


# The base class by its module's name, not imported by name: unittest's loader (Slicer's
# slicer.testing.runUnitTest, loadTestsFromName) would run every TestCase class found here.
class OncoSegCommonTest(slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest):
    """The shared library's scenarios (``OncoSegCommonLib.checks.COMMON_SCENARIOS``: volumes,
    segmentations, probability overlays, the loss plot), as the headless tests run them, on the
    application's scene, each failing on a VTK/MRML error or warning it logs.

    Every scripted module's ``runTest`` is registered in ``slicer.selfTests`` (the Self Tests
    module runs them all; so do the developer-mode Test buttons), and it looks this class up
    by name: without it ``ScriptedLoadableModule.runTest`` raises "Test case class not found"
    (Base/Python/slicer/ScriptedLoadableModule.py, v5.10.0 and v5.12.3). The scenarios need
    only what Slicer ships (numpy, SimpleITK, VTK), so they run before the engine's own
    dependencies are installed."""

    def runTest(self):
        from OncoSegCommonLib.checks import COMMON_SCENARIOS, run_scenarios_in_app

        run_scenarios_in_app(COMMON_SCENARIOS, self.delayDisplay)
        self.delayDisplay("OncoSegCommon scenarios passed")
