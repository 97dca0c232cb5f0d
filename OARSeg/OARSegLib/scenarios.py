"""What OARSeg must do on a scene, written once for pytest on slicer-core and for OARSegTest in
the application. Each takes an MRML context and a scratch folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from OARSegLib.logic import MODES, ORGANS, OARSegLogic, OARSegParameters
from oncoseg.errors import InputError
from oncoseg.io.volumes import read_image
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.mr.task import GI_SEGMENTS
from oncoseg.verbs import phantom
from OncoSegCommonLib.checks import cancelling_mid_run_changes_nothing, refused_without_change
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.segmentations import segment_id, segmentation_node_from_labels
from OncoSegCommonLib.volumes import volume_node_from_image

PHANTOM_SEED = 4343  # not a seed the demo model trained on


def load_phantom(context: MRMLContext, folder: Path) -> tuple[object, Path]:
    [case] = phantom("oar-ct", folder, cases=1, seed=PHANTOM_SEED)
    return volume_node_from_image(context.scene, read_image(case), "Pelvis CT"), case


def run_gives_one_segment_per_organ(context: MRMLContext, folder: Path):
    ct, case = load_phantom(context, folder)
    result = OARSegLogic(context).run({"ct": ct})
    segmentation = result.nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == list(ORGANS), names
    assert context.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    rows = result.rows()
    assert [r["organ"] for r in rows] == list(ORGANS)
    assert all(r["volume_ml"] > 1.0 for r in rows), rows
    return result, ct, case


def a_subset_of_organs(context: MRMLContext, folder: Path) -> None:
    ct, _ = load_phantom(context, folder)
    result = OARSegLogic(context).run(
        {"ct": ct}, OARSegParameters(organs=("Bladder", "Femoral head L")).request())
    segmentation = result.nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    labels = np.unique(sitk.GetArrayViewFromImage(result.prediction.labels))
    assert set(labels.tolist()) <= {0, 1, 3}


def cancelling_leaves_the_scene_unchanged(context: MRMLContext, folder: Path) -> None:
    ct, _ = load_phantom(context, folder)
    cancelling_mid_run_changes_nothing(
        context, lambda progress, cancel: OARSegLogic(context).run(
            {"ct": ct}, progress=progress, cancel=cancel))


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


def load_mr_phantom(context: MRMLContext, folder: Path):
    """An abdominal MR scan (a Kaggle scans folder) as a volume node, and its case."""
    from oncoseg.datasets.layouts import read_dataset

    phantom("oar-mr", folder, cases=1, seed=PHANTOM_SEED)
    case = read_dataset(folder).cases[0]
    return volume_node_from_image(context.scene, case.read("mr"), "Abdomen MR"), case


def mr_mode_segments_the_gi_tract(context: MRMLContext, folder: Path) -> None:
    from oncoseg.oar.mr.training import case_masks

    mr, case = load_mr_phantom(context, folder)
    parameters = OARSegParameters(mode="MR", probabilities=True)
    logic = OARSegLogic(context, parameters.task)
    assert [m.label for m in logic.models()] == ["Demo model (phantoms)"]
    result = logic.run({"mr": mr}, parameters.request())
    segmentation = result.nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == list(MODES["MR"].organs), names
    assert len(result.nodes.probabilities) == 3
    assert all(r["volume_ml"] > 1.0 for r in result.rows()), result.rows()
    stomach = next(s for s in GI_SEGMENTS if s.name == "Stomach")
    truth = case_masks(case, case.read("mr"))[0].astype(np.uint8) * stomach.label
    mask = sitk.GetImageFromArray(truth)
    mask.CopyInformation(case.read("mr"))
    reader = segmentation_node_from_labels(context.scene, mask, (stomach,), mr, "Reader")
    figures = logic.compare(result, reader, "Stomach", segment_id(stomach))
    assert figures["dsc"] > 0.7, figures


def a_model_of_the_other_mode_is_refused(context: MRMLContext, folder: Path) -> None:
    ct, _ = load_phantom(context, folder)
    request = OARSegParameters(mode="CT", model=str(MODES["MR"].demo_model)).request()
    refused_without_change(context, lambda: OARSegLogic(context).run({"ct": ct}, request),
                           InputError, "oar-mr", "oar-ct")


ALL = (run_gives_one_segment_per_organ, a_subset_of_organs,
       cancelling_leaves_the_scene_unchanged, comparing_the_bladder_with_the_structure_set,
       mr_mode_segments_the_gi_tract, a_model_of_the_other_mode_is_refused)
