"""OncoSeg Common: a hidden module that carries the logic and panels the OncoSeg modules share.

It has no panel of its own. Its library, ``OncoSegCommonLib``, is importable once Slicer has
loaded this module, and makes the engine package ``oncoseg`` importable too.
"""

from slicer.ScriptedLoadableModule import ScriptedLoadableModule


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
