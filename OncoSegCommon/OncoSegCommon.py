"""OncoSeg Common: a hidden module that carries the logic and panels the OncoSeg modules share.

It has no panel of its own. Its library, ``OncoSegCommonLib``, is importable once Slicer has
loaded this module, and makes the engine package ``oncoseg`` importable too. When the
application has started it loads OncoSeg's terminology (the segments' SNOMED CT codes) and
registers the phantom cases in Sample Data (category OncoSeg).
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
    from OncoSegCommonLib import dependencies

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
