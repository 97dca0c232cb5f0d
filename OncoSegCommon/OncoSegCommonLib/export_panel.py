"""The Export section under every segmentation module's result (Qt; the work is in
:mod:`OncoSegCommonLib.export`, which runs headless).

The user picks the segmentation (the result, or any other), the reference volume, a format and
a file; DICOM formats find the volume's series in Slicer's DICOM database, or in a folder the
user names. "DICOM SEG (probabilities)" writes the probability maps of the run that made the
segmentation (a FRACTIONAL SEG). An existing file is replaced only with the box ticked.
"""

from pathlib import Path

import slicer

UI_FILE = Path(__file__).resolve().parents[1] / "Resources" / "UI" / "OncoSegExport.ui"
FORMAT_CHOICES = (("DICOM SEG", "dicom-seg", ".dcm"),
                  ("DICOM SEG (probabilities)", "dicom-seg-fractional", ".dcm"),
                  ("DICOM RTSTRUCT", "rtstruct", ".dcm"),
                  ("DICOM SR (segment volumes, with a DICOM SEG beside it)", "dicom-sr", ".dcm"),
                  ("Slicer segmentation (.seg.nrrd)", "seg.nrrd", ".seg.nrrd"),
                  ("Label map (NRRD)", "nrrd", ".nrrd"), ("Label map (NIfTI)", "nifti", ".nii.gz"))


class ExportPanel:
    def __init__(self, layout):
        widget = slicer.util.loadUI(str(UI_FILE))
        layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        widget.setMRMLScene(slicer.mrmlScene)
        for text, fmt, _ in FORMAT_CHOICES:
            self.ui.exportFormatSelector.addItem(text, fmt)
        self.ui.exportFormatSelector.connect("currentIndexChanged(int)", self._suggest_name)
        self.ui.exportButton.connect("clicked()", self._export)
        self._maps = (None, None)  # (segmentation node, its run's probability nodes by name)

    def show(self, segmentation_node, volume_node, probability_nodes=None):
        """Offer a fresh result for export; ``probability_nodes`` (segment name -> volume
        node, the run's ``PredictionNodes.probabilities``) are what its probabilities export
        writes, else the run's links or names find them
        (OncoSegCommonLib.segmentations.probability_nodes).
        """
        self._maps = (segmentation_node, probability_nodes)
        self.ui.exportSegmentationSelector.setCurrentNode(segmentation_node)
        self.ui.exportVolumeSelector.setCurrentNode(volume_node)
        self._suggest_name()

    def _suggest_name(self, *_):
        node = self.ui.exportSegmentationSelector.currentNode()
        current = self.ui.exportOutputPathLineEdit.currentPath
        if node is None:
            return
        _, _, ending = FORMAT_CHOICES[self.ui.exportFormatSelector.currentIndex]
        folder = Path(current).parent if current else Path.home()
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in node.GetName())
        self.ui.exportOutputPathLineEdit.currentPath = str(folder / f"{stem}{ending}")

    def _export(self):
        from oncoseg.errors import InputError
        from OncoSegCommonLib.export import export_node

        segmentation = self.ui.exportSegmentationSelector.currentNode()
        volume = self.ui.exportVolumeSelector.currentNode()
        output = self.ui.exportOutputPathLineEdit.currentPath
        if segmentation is None or volume is None or not output:
            slicer.util.errorDisplay("Choose the segmentation, its reference volume and the "
                                     "output file.")
            return
        shown, maps = self._maps
        try:
            result = export_node(
                segmentation, volume, output, self.ui.exportFormatSelector.currentData,
                series_folder=self.ui.exportSeriesPathLineEdit.currentPath or None,
                overwrite=self.ui.exportOverwriteCheckBox.checked,
                database=getattr(slicer, "dicomDatabase", None),
                probability_nodes=maps if segmentation is shown else None,
                naming="tg263" if self.ui.exportTg263CheckBox.checked else "oncoseg")
        except InputError as error:
            self.ui.exportStatusLabel.text = str(error)
            return
        self.ui.exportStatusLabel.text = "\n".join(
            [f"Wrote {result.path} ({len(result.segments)} segments)", *result.messages])
