"""What OARSeg must do on a scene, written once for pytest on slicer-core and for OARSegTest in
the application. Each takes an MRML context and a scratch folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from OARSegLib.logic import ORGANS, OARSegLogic, OARSegParameters
from oncoseg.io.volumes import read_image
from oncoseg.oar.ct_pipeline import phantom
from oncoseg.oar.task import CT_SEGMENTS
from OncoSegCommonLib.checks import cancelling_mid_run_changes_nothing
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.segmentations import segment_id, segmentation_node_from_labels
from OncoSegCommonLib.volumes import volume_node_from_image

PHANTOM_SEED = 4343  # not a seed the demo model trained on


def load_phantom(context: MRMLContext, folder: Path) -> tuple[object, Path]:
    [case] = phantom(folder, cases=1, seed=PHANTOM_SEED)
    return volume_node_from_image(context.scene, read_image(case), "Pelvis CT"), case


def run_gives_one_segment_per_organ(context: MRMLContext, folder: Path):
    ct, case = load_phantom(context, folder)
    result = OARSegLogic(context).run(ct)
    segmentation = result.nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == list(ORGANS), names
    assert context.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    rows = result.volume_rows()
    assert [r["organ"] for r in rows] == list(ORGANS)
    assert all(r["volume_ml"] > 1.0 for r in rows), rows
    return result, ct, case


def a_subset_of_organs(context: MRMLContext, folder: Path) -> None:
    ct, _ = load_phantom(context, folder)
    result = OARSegLogic(context).run(ct, OARSegParameters(organs=("Bladder", "Femoral head L")))
    segmentation = result.nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    labels = np.unique(sitk.GetArrayViewFromImage(result.prediction.labels))
    assert set(labels.tolist()) <= {0, 1, 3}


def cancelling_leaves_the_scene_unchanged(context: MRMLContext, folder: Path) -> None:
    ct, _ = load_phantom(context, folder)
    cancelling_mid_run_changes_nothing(
        context, lambda progress, cancel: OARSegLogic(context).run(ct, progress=progress,
                                                                  cancel=cancel))


def comparing_the_bladder_with_the_structure_set(context: MRMLContext, folder: Path) -> None:
    result, ct, case = run_gives_one_segment_per_organ(context, folder)
    from oncoseg.io.rtstruct import read_rtstruct

    structure_set = read_rtstruct(next(case.glob("RS_*.dcm")))
    image = read_image(case)
    bladder_name = next(s.name for s in structure_set.structures if "ladder" in s.name)
    mask = sitk.GetImageFromArray(structure_set.mask(bladder_name, image).astype(np.uint8) * 3)
    mask.CopyInformation(image)
    bladder = next(s for s in CT_SEGMENTS if s.name == "Bladder")
    reader = segmentation_node_from_labels(context.scene, mask, (bladder,), ct, "Reader")
    figures = OARSegLogic(context).compare(result, reader, "Bladder", segment_id(bladder))
    assert figures["dsc"] > 0.8, figures


ALL = (run_gives_one_segment_per_organ, a_subset_of_organs,
       cancelling_leaves_the_scene_unchanged, comparing_the_bladder_with_the_structure_set)
