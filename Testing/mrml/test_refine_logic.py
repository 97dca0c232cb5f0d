"""OncoSeg refine on real MRML (slicer-core): finding a result's probability volumes, RAS
clicks landing on the right voxel of a RAS-stored volume, modifier labelmaps that reproduce the
engine's answer, hand edits locked, an undo forgetting the undone step."""

import numpy as np
import SimpleITK as sitk

from oncoseg.prediction import Prediction
from oncoseg.refine import RefineSettings, Stroke, refine
from oncoseg.tasks import SegmentSpec, get_task
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.refine import (
    RefineLogic,
    apply_edit,
    describe_refine,
    is_oncoseg_result,
    probability_nodes,
    ras_of_voxel,
    refine_settings_for,
)
from OncoSegCommonLib.segmentations import (
    input_nodes,
    labels_from_segmentation_node,
    segment_id,
    segmentation_node_from_labels,
    set_segments_from_labels,
)
from OncoSegCommonLib.taskrun import add_prediction
from OncoSegCommonLib.volumes import volume_node_from_image

SPECS = (SegmentSpec(1, "Tumour", (0.9, 0.3, 0.2)), SegmentSpec(2, "Bladder", (0.9, 0.8, 0.3)))


def scene_case():
    """A RAS-stored 48 x 40 x 12 volume (1.5 x 1.5 x 4 mm) with a bright tumour box and a
    bladder box beside it; the 'model' missed the tumour's right part and holds the bladder."""
    shape = (12, 40, 48)
    array = np.zeros(shape, np.float32)
    array[3:9, 10:30, 8:24] = 100.0  # tumour
    array[3:9, 10:30, 26:40] = 60.0  # bladder
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(array + rng.normal(0, 2, shape).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 4.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # stored RAS
    image.SetOrigin((30.0, 25.0, -20.0))
    truth = np.zeros(shape, np.uint8)
    truth[3:9, 10:30, 8:24] = 1
    truth[3:9, 10:30, 26:40] = 2
    model = truth.copy()
    model[3:9, 10:30, 16:24] = 0  # missed
    labels = sitk.GetImageFromArray(model)
    labels.CopyInformation(image)
    probability = sitk.GetImageFromArray(np.where(truth == 1, 0.7, 0.05).astype(np.float32))
    probability.CopyInformation(image)
    return image, labels, probability, truth


def add_result(mrml):
    image, labels, probability, truth = scene_case()
    volume = volume_node_from_image(mrml.scene, image, "T2")
    bladder = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(labels) == 2, 0.9,
                                              0.05).astype(np.float32))
    bladder.CopyInformation(image)
    prediction = Prediction(task="toy", model={"name": "toy"}, images={"t2w": image},
                            display_role="t2w", segments=SPECS, labels=labels,
                            probabilities={"Tumour": probability, "Bladder": bladder})
    nodes = add_prediction(mrml.scene, prediction, "Case 1", volume)
    return volume, nodes, image, labels, probability, truth


def test_the_results_probability_volumes_are_found(mrml):
    volume, nodes, image, labels, *_ = add_result(mrml)
    found = probability_nodes(nodes.segmentation)
    assert {k: v.GetID() for k, v in found.items()} == \
        {k: v.GetID() for k, v in nodes.probabilities.items()}
    assert is_oncoseg_result(nodes.segmentation)
    # a second result of another case does not lend its maps; a hand-made segmentation has none
    add_prediction(mrml.scene, Prediction(task="toy", model={}, images={}, display_role="t2w",
                                          segments=SPECS, labels=labels,
                                          probabilities={"Tumour": image}), "Case 2", volume)
    assert probability_nodes(nodes.segmentation)["Tumour"].GetID() == \
        nodes.probabilities["Tumour"].GetID()
    plain = segmentation_node_from_labels(mrml.scene, labels, SPECS, volume, "Mine")
    assert probability_nodes(plain) == {} and not is_oncoseg_result(plain)


def test_a_ras_click_adds_at_its_voxel_and_the_modifiers_reproduce_the_engine(mrml):
    volume, nodes, image, labels, probability, truth = add_result(mrml)
    logic = RefineLogic(nodes.segmentation, volume)
    tumour = segment_id(SPECS[0])
    ijk = (20, 20, 6)  # x, y, z of a missed tumour voxel
    ras = ras_of_voxel(volume, ijk)
    # the same physical point by the engine's own transform of the LPS image
    assert image.TransformPhysicalPointToIndex(tuple(ras_lps(np.array(ras)))) == ijk
    edit = logic.stroke(tumour, [ras], positive=True)
    assert edit.removed is None and edit.added is not None
    apply_edit(nodes.segmentation, edit)
    logic.applied()
    after = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume,
                                                                 SPECS))
    assert after[ijk[2], ijk[1], ijk[0]] == 1
    # exactly the engine's answer (segment 1 -> value 1, 2 -> 2 in both), bladder untouched
    np.testing.assert_array_equal(after, sitk.GetArrayFromImage(edit.result.labels))
    np.testing.assert_array_equal(after == 2, truth == 2)
    assert (after == 1).sum() > (sitk.GetArrayFromImage(labels) == 1).sum() + 200
    # the expected engine call, made directly, gives the same label map
    direct = refine(image, probability, labels, 1,
                    [Stroke.click(ras_lps(np.array(ras)), positive=True)])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(direct.labels), after)


def test_a_click_reads_every_image_the_model_read(mrml):
    """A result made from two sequences links both (``add_prediction``'s ``inputs``) and a
    click reads both, as the benchmark measures refine: the T2w shows the tumour and a region
    beside it alike, the DWI the tumour alone. Read with the T2w only (the source volume, what
    the effect read before) the click also took 41 voxels of that region."""
    image, labels, probability, truth = scene_case()
    beside = np.zeros(truth.shape, bool)
    beside[3:9, 30:38, 8:24] = True
    rng = np.random.default_rng(2)
    t2 = sitk.GetArrayFromImage(image)
    t2[beside] = 100.0 + rng.normal(0, 2, int(beside.sum()))
    dwi = np.where(truth == 1, 100.0, 0.0) + rng.normal(0, 2, truth.shape)
    t2w_image, dwi_image = (sitk.GetImageFromArray(a.astype(np.float32)) for a in (t2, dwi))
    prior = sitk.GetArrayFromImage(probability)
    prior[beside] = 0.4  # the model unsure there
    maps = {"Tumour": prior, "Bladder": np.where(truth == 2, 0.9, 0.05).astype(np.float32)}
    maps = {name: sitk.GetImageFromArray(a) for name, a in maps.items()}
    for made in (t2w_image, dwi_image, *maps.values()):
        made.CopyInformation(image)
    t2w = volume_node_from_image(mrml.scene, t2w_image, "T2")
    dwi_node = volume_node_from_image(mrml.scene, dwi_image, "DWI")
    prediction = Prediction(task="toy", model={"name": "toy"},
                            images={"t2w": t2w_image, "dwi": dwi_image}, display_role="t2w",
                            segments=SPECS, labels=labels, probabilities=maps)
    nodes = add_prediction(mrml.scene, prediction, "Case 1", t2w,
                           inputs={"t2w": t2w, "dwi": dwi_node})
    logic = RefineLogic(nodes.segmentation, t2w)  # the T2w is Segment Editor's source
    assert [n.GetName() for n in logic.channel_nodes()] == ["T2", "DWI"]
    # the links are saved with the scene and read back with it
    mrml.scene.SetSaveToXMLString(1)
    mrml.scene.Commit()
    reloaded = type(mrml.scene)()
    reloaded.SetLoadFromXMLString(1)
    reloaded.SetSceneXMLString(mrml.scene.GetSceneXMLString())
    reloaded.Import()
    again = reloaded.GetNodeByID(nodes.segmentation.GetID())
    assert [n.GetName() for n in input_nodes(again)] == ["T2", "DWI"]
    assert describe_refine(nodes.segmentation, t2w) == \
        "Probability maps found: Bladder, Tumour. Clicks read: T2, DWI."  # the effect's panel
    ras = ras_of_voxel(t2w, (20, 20, 6))  # a tumour voxel the model missed
    apply_edit(nodes.segmentation, logic.stroke(segment_id(SPECS[0]), [ras], positive=True))
    after = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, t2w,
                                                                 SPECS))
    click = [Stroke.click(ras_lps(np.array(ras)))]
    both = refine([t2w_image, dwi_image], maps["Tumour"], labels, 1, click).labels
    np.testing.assert_array_equal(after, sitk.GetArrayFromImage(both))
    np.testing.assert_array_equal(after == 1, truth == 1)
    t2w_alone = sitk.GetArrayFromImage(refine(t2w_image, maps["Tumour"], labels, 1,
                                              click).labels)
    assert ((t2w_alone == 1) & beside).sum() > 20
    # a sequence removed from the scene is no longer read; with none left, the source volume
    mrml.scene.RemoveNode(dwi_node)
    assert [n.GetName() for n in logic.channel_nodes()] == ["T2"]
    plain = add_prediction(mrml.scene, prediction, "Case 2", t2w)  # nothing linked
    assert RefineLogic(plain.segmentation, t2w).channel_nodes() == [t2w]
    assert describe_refine(plain.segmentation, t2w).endswith("Clicks read: T2.")
    mine = segmentation_node_from_labels(mrml.scene, labels, SPECS, t2w, "Mine")
    assert describe_refine(mine, t2w).startswith("No OncoSeg probability map")


def test_a_negative_click_removes_and_the_bladder_is_never_touched(mrml):
    volume, nodes, *_ = add_result(mrml)
    logic = RefineLogic(nodes.segmentation, volume)
    before = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume,
                                                                  SPECS))
    ras = ras_of_voxel(volume, (10, 20, 6))  # inside what the model kept of the tumour
    edit = logic.stroke(segment_id(SPECS[0]), [ras], positive=False)
    assert edit.added is None and edit.removed is not None
    apply_edit(nodes.segmentation, edit)
    after = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume,
                                                                 SPECS))
    assert after[6, 20, 10] == 0
    assert (after == 1).sum() < (before == 1).sum()
    np.testing.assert_array_equal(after == 2, before == 2)


def test_hand_painted_voxels_are_locked_and_an_undo_forgets_the_step(mrml):
    volume, nodes, image, labels, *_ = add_result(mrml)
    logic = RefineLogic(nodes.segmentation, volume)
    tumour = segment_id(SPECS[0])
    first = logic.stroke(tumour, [ras_of_voxel(volume, (20, 20, 6))])
    apply_edit(nodes.segmentation, first)
    logic.applied()
    # the reader erases a slab of what refine added, by hand
    painted = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume,
                                                                   SPECS))
    painted[5, 10:30, 18:24] = 0
    hand = sitk.GetImageFromArray(painted)
    hand.CopyInformation(image)
    set_segments_from_labels(nodes.segmentation, hand, SPECS)
    # a second click nearby gives the slab back to a logic that never saw the segmentation
    # before (to it, the erased slab is the model's)...
    click = [ras_of_voxel(volume, (22, 12, 4))]
    fresh = RefineLogic(nodes.segmentation, volume).stroke(tumour, click)
    assert (sitk.GetArrayFromImage(fresh.result.labels)[5, 10:30, 18:24] == 1).any()
    # ...but to the logic that made the first step the slab was painted by hand: locked
    second = logic.stroke(tumour, click)
    out = sitk.GetArrayFromImage(second.result.labels)
    assert (out[5, 10:30, 18:24] == 0).all()
    # undo of the first step: the segmentation is the model's again; nothing is locked and the
    # undone click is no longer a seed
    set_segments_from_labels(nodes.segmentation, labels, SPECS)
    third = logic.stroke(tumour, [ras_of_voxel(volume, (20, 20, 6))])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(third.result.labels),
                                  sitk.GetArrayFromImage(first.result.labels))


def test_node_references_find_the_maps_of_a_renamed_segmentation(mrml):
    """taskrun.add_prediction links each map to the segmentation (a node reference, the map
    naming its segment): the link survives renaming, where the names alone do not."""
    from OncoSegCommonLib.segmentations import PROBABILITY_REFERENCE_ROLE

    _, nodes, *_ = add_result(mrml)
    nodes.segmentation.SetName("Reviewed by Dr X")
    assert {k: v.GetID() for k, v in probability_nodes(nodes.segmentation).items()} == \
        {k: v.GetID() for k, v in nodes.probabilities.items()}
    nodes.segmentation.RemoveNodeReferenceIDs(PROBABILITY_REFERENCE_ROLE)  # an older scene
    assert probability_nodes(nodes.segmentation) == {}  # renamed: its names match no map


def test_a_result_refines_with_its_tasks_settings(mrml, monkeypatch):
    """The effect reads the settings of the task that made the segmentation (a task may set
    its own for its model's map, as the rectal task did for a demo with a one-voxel rim until
    2026-12-08; none does now, so the rectal task is given some here); any other segmentation
    the defaults."""
    from oncoseg.tasks import Task

    tuned = RefineSettings(recalibration_margin_negative=3.0, recalibration_mm=25.0)
    plain_settings = Task.refine_settings
    monkeypatch.setattr(Task, "refine_settings", lambda task: tuned if task.name == "rectal"
                        else plain_settings(task))
    volume, nodes, image, labels, probability, _ = add_result(mrml)
    assert nodes.segmentation.GetAttribute("OncoSeg.task") == "toy"
    assert refine_settings_for(nodes.segmentation) == RefineSettings()  # not installed here
    rectal = add_prediction(mrml.scene, Prediction(
        task="rectal", model={}, images={}, display_role="t2w", segments=SPECS, labels=labels,
        probabilities={"Tumour": probability}), "Case 3", volume)
    assert refine_settings_for(rectal.segmentation) == get_task("rectal").refine_settings() \
        != RefineSettings()
    plain = segmentation_node_from_labels(mrml.scene, labels, SPECS, volume, "Mine")
    assert refine_settings_for(plain) == RefineSettings()
    # the logic's stroke is the engine's refine with those settings
    logic = RefineLogic(rectal.segmentation, volume)
    ras = ras_of_voxel(volume, (20, 20, 6))
    edit = logic.stroke(segment_id(SPECS[0]), [ras])
    expected = refine(image, probability, labels, 1, [Stroke.click(ras_lps(ras))],
                      settings=get_task("rectal").refine_settings())
    assert np.array_equal(sitk.GetArrayFromImage(edit.result.labels),
                          sitk.GetArrayFromImage(expected.labels))


def test_a_click_on_a_volume_under_a_transform_is_refused_and_changes_nothing(mrml):
    """Segment Editor gives world RAS; the volume's voxels sit where its file put them."""
    import pytest
    import vtk

    from oncoseg.errors import InputError

    volume, nodes, *_ = add_result(mrml)
    moved = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 15.0)
    moved.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(moved.GetID())
    before = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume))
    logic = RefineLogic(nodes.segmentation, volume)
    with pytest.raises(InputError, match="'T2': lies under the transform 'Registration'"):
        logic.stroke(segment_id(SPECS[0]), [ras_of_voxel(volume, (20, 20, 6))])
    after = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume))
    np.testing.assert_array_equal(after, before)
