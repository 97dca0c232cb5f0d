"""One start / compute / finish shape for every task: a method defined only in the tests
(Testing/helpers/toymethod.py), registered by one line, runs through the Slicer logic and the
review app with no edit anywhere else; the four modules' logics are that shape under Slicer's
names. (Testing/engine/test_method_contract.py is the command-line half of the same proof.)"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.volumes import read_image
from oncoseg.method import Hints
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.lazy import lazy_attribute
from OncoSegCommonLib.segmentations import input_nodes, labels_from_segmentation_node
from OncoSegCommonLib.tasklogic import RunRequest, TaskLogic, TaskResult, logic_for
from OncoSegCommonLib.volumes import image_from_volume_node, volume_node_from_image

ROOT = Path(__file__).resolve().parents[2]



def _loaded_by_slicer(context: MRMLContext, path: Path, name: str):
    """A volume node read from ``path`` by Slicer's own volume reader (its archetype storage
    node, ITK underneath), keeping the storage node as a file loaded in Slicer does."""
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    context.scene.AddNode(storage)
    node = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node) == 1  # Slicer loads it
    return node


def _volume(context: MRMLContext, path: Path, name: str = "image"):
    return volume_node_from_image(context.scene, read_image(path), name)


def test_a_new_method_runs_through_the_slicer_logic(toy, mrml, tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path))  # no model trained here
    task, image, model = toy
    node = _volume(mrml, image)
    logic = logic_for(mrml, task.name)
    assert type(logic) is TaskLogic and logic.task is task  # no module logic of its own
    inputs = logic.guess_inputs()
    assert inputs == {"image": node}
    started = logic.start(inputs, RunRequest(model=str(model), device="cpu"))
    before = mrml.node_names()
    prediction = logic.compute(started)
    assert mrml.node_names() == before, "compute touched the scene"
    result = logic.finish(prediction, started)
    assert isinstance(result, TaskResult) and result.reference is node
    segmentation = result.nodes.segmentation
    assert segmentation is not None and segmentation.GetScene() is mrml.scene
    assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "Spot"
    on_volume = sitk.GetArrayFromImage(labels_from_segmentation_node(segmentation, node))
    expected = sitk.GetArrayFromImage(prediction.labels)
    assert on_volume.any() and np.array_equal(on_volume > 0, expected > 0)
    assert list(result.nodes.probabilities) == ["Spot"]
    assert result.summary() == "1 of 1 segment(s) found"
    assert [r["segment"] for r in result.rows()] == ["Spot"] and result.rows()[0]["volume_ml"] > 0
    assert set(result.all_nodes()) == {segmentation, result.nodes.probabilities["Spot"]}
    assert input_nodes(segmentation) == [node]  # what a refine click reads with it
    assert [m.label for m in logic.models()] == []  # no bundled model, none trained here


def test_a_new_method_runs_through_the_review_app(toy):
    from OncoSegWebLib.runners import ReviewResult, plan_run, task_titles

    task, image, model = toy
    assert task_titles()[task.name] == task.title
    for name in ("image", "scan 1"):  # named for its role, or the case's only volume
        context = MRMLContext.headless()
        node = _volume(context, image, name)
        planned = plan_run(context, task.name, model=str(model), device="cpu")
        assert (planned.task, planned.inputs) == (task.name, {"image": name})
        review = planned.finish(planned.compute(None, None))
        assert isinstance(review, ReviewResult) and review.task == task.name
        assert review.reference is node and review.segmentation is not None
        assert review.segmentation in review.nodes and list(review.probabilities) == ["Spot"]
        assert review.summary == "1 of 1 segment(s) found" and review.rows


def test_refusals_come_at_start_by_name_and_change_nothing(toy, mrml):
    task, image, _ = toy
    logic = logic_for(mrml, task.name)
    node = _volume(mrml, image)
    before = mrml.node_names()
    with pytest.raises(InputError, match="image: has no volume selected"):
        logic.start({"image": None})
    with pytest.raises(InputError, match="image: is missing"):
        logic.start({})
    with pytest.raises(InputError, match="--seed-point: is not used by task 'toy-spot'"):
        logic.start({"image": node}, RunRequest(hints=Hints(seed_lps_mm=(0.0, 0.0, 0.0))))
    with pytest.raises(InputError, match="other: is not an input of the toy-spot task"):
        logic.start({"image": node, "other": node})
    assert mrml.node_names() == before


MODULES = {  # module -> Slicer's name of its logic, the Lib class it is, the tasks it runs
    "RectalSeg": ("RectalSegLogic", "RectalSegLogic", ("rectal",)),
    "OARSeg": ("OARSegLogic", "OARSegLogic", ("oar-ct", "oar-mr")),
    "StagingCNN": ("StagingCNNLogic", "StagingLogic", ("staging",)),
    "BrainTumor2D3D": ("BrainTumor2D3DLogic", "BrainTumorLogic", ("brain",)),
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_exposes_its_lib_logic_under_slicers_name(module, mrml):
    """``<Name>.<Name>Logic`` is the Lib's TaskLogic, found through the file's module-level
    ``__getattr__ = lazy_attribute(...)`` (the file imports qt, so that call is made alone);
    the file imports neither the Lib logic nor the engine when Slicer loads it."""
    import importlib

    slicer_name, lib_name, tasks = MODULES[module]
    tree = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert slicer_name not in classes, "an empty logic class shadows the Lib logic"
    loaded = [alias.name if isinstance(n, ast.Import) else n.module
              for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
              for alias in n.names]
    assert not [m for m in loaded if m.startswith(("oncoseg", f"{module}Lib"))], loaded
    [call] = [n.value for n in tree.body if isinstance(n, ast.Assign)
              and [t.id for t in n.targets if isinstance(t, ast.Name)] == ["__getattr__"]]
    assert isinstance(call, ast.Call) and call.func.id == "lazy_attribute"
    assert isinstance(call.args[0], ast.Name) and call.args[0].id == "__name__"
    attribute = lazy_attribute(module, *[ast.literal_eval(a) for a in call.args[1:]])
    found = attribute(slicer_name)
    lib = importlib.import_module(f"{module}Lib.logic")
    assert found is getattr(lib, lib_name) and issubclass(found, TaskLogic)
    with pytest.raises(AttributeError):
        attribute("Nothing")
    for task in tasks:
        assert type(logic_for(mrml, task)) is found


def test_results_land_in_the_input_study(toy, mrml):
    """A volume loaded from DICOM sits under its patient and study in the subject hierarchy;
    the run's nodes join it there instead of the scene's top level."""
    import slicer

    task, image, model = toy
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Anonymous")
    study = hierarchy.CreateStudyItem(patient, "MR pelvis")
    node = _volume(mrml, image)
    hierarchy.CreateItem(study, node)  # as DICOM loading does (headless: no automatic items)
    result = logic_for(mrml, task.name).run({"image": node},
                                            RunRequest(model=str(model), device="cpu"))
    placed = {n.GetName(): hierarchy.GetItemParent(hierarchy.GetItemByDataNode(n))
              for n in result.all_nodes()}
    assert len(placed) >= 2 and set(placed.values()) == {study}, placed

    loose = _volume(mrml, image, "loose")  # no study: the results stay at the top level
    hierarchy.CreateItem(hierarchy.GetSceneItemID(), loose)
    result = logic_for(mrml, task.name).run({"image": loose},
                                            RunRequest(model=str(model), device="cpu"))
    top = hierarchy.GetSceneItemID()
    assert {hierarchy.GetItemParent(hierarchy.GetItemByDataNode(n))
            for n in result.all_nodes()} == {top}


def test_a_nifti_file_whose_placements_disagree_is_named_in_the_result(toy, mrml, tmp_path,
                                                                       monkeypatch):
    """Slicer's own reader (vtkMRMLVolumeArchetypeStorageNode, through ITK) takes the qform of
    a file whose ALIGNED_ANAT sform mirrors it, as the engine does, and says nothing; the run's
    messages say it, as the CLI's do. A node moved since it was loaded gets no such note."""

    pytest.importorskip("nibabel")
    from nifti_placements import with_mirrored_sform

    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path))
    task, image, model = toy
    path = with_mirrored_sform(image, tmp_path / "placed.nii.gz")

    node = _loaded_by_slicer(mrml, path, "image")
    engine = read_image(path)  # the engine's reading: the qform
    in_slicer = image_from_volume_node(node)
    assert np.allclose(in_slicer.GetDirection(), engine.GetDirection(), atol=1e-6)
    assert np.allclose(in_slicer.GetOrigin(), engine.GetOrigin(), atol=1e-4)

    logic = logic_for(mrml, task.name)
    started = logic.start({"image": node}, RunRequest(model=str(model), device="cpu"))
    [note] = started.notes
    assert note.startswith("input image: placed.nii.gz is placed differently by different tools")
    assert "left and right swapped" in note
    assert logic.compute(started).messages[0] == note

    node.SetOrigin(*(np.asarray(node.GetOrigin()) + 10.0))  # moved in the scene since
    assert logic.start({"image": node}, RunRequest(model=str(model), device="cpu")).notes == []


@pytest.mark.parametrize("ending", [".nii", ".hdr", ".img"])
def test_a_node_loaded_from_a_nifti_file_cut_short_is_refused(toy, mrml, tmp_path, ending):
    """Slicer's reader loads an interrupted copy of a NIfTI file (or of a NIfTI pair's voxel
    file, loaded by its .hdr or its .img) without a word (the missing voxels zero); the run
    refuses it by name, as the CLI refuses the file."""

    task, image, model = toy
    whole, cut = tmp_path / f"whole{ending}", tmp_path / f"cut{ending}"
    for path in (whole, cut):
        sitk.WriteImage(sitk.Cast(read_image(image), sitk.sitkFloat32), str(path))
    voxels = cut.with_suffix(".nii" if ending == ".nii" else ".img")
    data = voxels.read_bytes()
    voxels.write_bytes(data[: len(data) * 2 // 3])
    nodes = {}
    for path in (whole, cut):
        node = _loaded_by_slicer(mrml, path, path.stem)
        nodes[path.stem] = node
    logic = logic_for(mrml, task.name)
    before = mrml.node_names()
    with pytest.raises(InputError, match=rf"image \('cut'\): was loaded from cut\{ending}, "
                       "which is cut short"):
        logic.start({"image": nodes["cut"]}, RunRequest(model=str(model), device="cpu"))
    assert mrml.node_names() == before
    assert logic.start({"image": nodes["whole"]},
                       RunRequest(model=str(model), device="cpu")).notes == []


def test_a_node_with_a_sheared_grid_is_refused(toy, mrml, tmp_path):
    """Slicer keeps a NRRD's shear in the node's IJK-to-RAS matrix (read on slicer-core): the
    run refuses it by name, as the CLI refuses the file."""
    import nrrd

    task, _, model = toy
    nrrd.write(str(tmp_path / "sheared.nrrd"), np.zeros((12, 10, 8), np.int16),
               {"space": "left-posterior-superior", "space origin": np.zeros(3),
                "space directions": np.array([[1.0, 0, 0], [0.3, 1.0, 0], [0, 0, 3.0]])})
    node = _loaded_by_slicer(mrml, tmp_path / "sheared.nrrd", "sheared")
    before = mrml.node_names()
    with pytest.raises(InputError, match=r"image \('sheared'\): its voxel axes are not at "
                       "right angles"):
        logic_for(mrml, task.name).start({"image": node},
                                         RunRequest(model=str(model), device="cpu"))
    assert mrml.node_names() == before


def test_a_label_map_given_for_a_scan_is_refused_by_name_and_a_mask_role_takes_one(mrml):
    from oncoseg.tasks import get_task
    from OncoSegCommonLib.tasklogic import refuse_label_maps

    labels = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    mask = volume_node_from_image(mrml.scene, labels, "Bladder mask", labelmap=True)
    before = mrml.node_names()
    with pytest.raises(InputError, match=r"ct \('Bladder mask'\): is a label map volume"):
        logic_for(mrml, "oar-ct").start({"ct": mask})
    assert mrml.node_names() == before
    refuse_label_maps(get_task("staging"), {"roi": mask})  # a mask role takes a label map


def test_a_volume_under_a_transform_is_refused_unless_the_transform_is_the_identity(mrml):
    """The engine reads a node's voxels and IJK-to-RAS, which a parent transform leaves where
    the file put them: the result would lie 20 mm from where the CT is shown."""
    import vtk

    from OncoSegCommonLib.volumes import refuse_unhardened_transform

    ct = volume_node_from_image(mrml.scene, sitk.Image(8, 8, 4, sitk.sitkInt16), "CT")
    moved = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 20.0)
    moved.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(moved.GetID())
    before = mrml.node_names()
    with pytest.raises(InputError, match=r"ct \('CT'\): lies under the transform "
                                         r"'Registration'.*Harden transform"):
        logic_for(mrml, "oar-ct").start({"ct": ct})
    assert mrml.node_names() == before
    identity = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Identity")
    ct.SetAndObserveTransformNodeID(identity.GetID())
    refuse_unhardened_transform("CT", ct)  # nothing moves: accepted
    warp = mrml.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "Warp")
    ct.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(InputError, match="CT: lies under the transform 'Warp'"):
        refuse_unhardened_transform("CT", ct)
    # what Slicer's DICOM module puts over a series with a missing slice or a tilted gantry
    # (DICOMScalarVolumePlugin, its default 'apply regularization transform'): named for what
    # it is, with the setting that avoids it
    regularization = mrml.scene.AddNewNodeByClass("vtkMRMLGridTransformNode",
                                                  "CT acquisition transform")
    ct.SetAndObserveTransformNodeID(regularization.GetID())
    with pytest.raises(InputError, match=r"CT: lies under 'CT acquisition transform', which "
                       r"Slicer's DICOM module adds where a series' slices are not evenly "
                       r"spaced.*Acquisition geometry regularization"):
        refuse_unhardened_transform("CT", ct)


def test_a_dicom_volume_loaded_from_files_without_pixel_spacing_is_refused(toy, mrml,
                                                                           tmp_path):
    """Slicer's DICOM module reads a series without PixelSpacing through GDCM at 1 mm between
    pixels (emulated by SimpleITK's GDCM reading, the reader Slicer's vtkITK uses): the run
    looks the files up in the DICOM database and refuses, as the engine refuses the series;
    the same series with its PixelSpacing runs."""
    import pydicom
    from dicom_ct import uniform_series

    from OncoSegCommonLib.export import INSTANCE_UIDS_ATTRIBUTE

    task, _, model = toy
    nodes, paths = {}, {}
    for name in ("intact", "stripped"):
        files = uniform_series(tmp_path / name, count=6)
        uids = []
        for path in files:
            ds = pydicom.dcmread(path)
            if name == "stripped":
                del ds.PixelSpacing
                ds.save_as(path)
            uids.append(str(ds.SOPInstanceUID))
            paths[uids[-1]] = str(path)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        nodes[name] = volume_node_from_image(mrml.scene, reader.Execute(), name)
        nodes[name].SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(uids))
    assert image_from_volume_node(nodes["stripped"]).GetSpacing()[:2] == (1.0, 1.0)

    class Database:  # ctkDICOMDatabase's one call used here
        def fileForInstance(self, uid):
            return paths.get(uid, "")

    mrml.database = Database()
    try:
        logic = logic_for(mrml, task.name)
        with pytest.raises(InputError, match=r"image \('stripped'\): was loaded by 3D Slicer's "
                           "DICOM module from files without a usable PixelSpacing: Slicer "
                           "guessed where its voxels lie"):
            logic.start({"image": nodes["stripped"]}, RunRequest(model=str(model), device="cpu"))
        logic.start({"image": nodes["intact"]}, RunRequest(model=str(model), device="cpu"))
    finally:
        mrml.database = None


def test_a_dicom_volume_whose_frames_carry_their_own_rescale_is_run_with_them(toy, mrml,
                                                                              tmp_path):
    """Slicer's DICOM module reads an enhanced image through GDCM, which applies one rescale
    slope to every frame (emulated here by SimpleITK's GDCM reading, the reader Slicer's
    vtkITK uses); the run finds the file in the DICOM database and reads each frame with its
    own slope, as pydicom's modality LUT does, says so, and leaves the node as it is."""
    import highdicom as hd
    import pydicom
    from dicom_ct import uniform_series

    from oncoseg.orientation import to_canonical
    from OncoSegCommonLib.export import INSTANCE_UIDS_ATTRIBUTE

    task, _, model = toy
    files = uniform_series(tmp_path / "ct", count=6)
    expected = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = ("1", "0") if k % 2 == 0 else ("0.5", "-10")
        ds.save_as(path)
        expected.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files], series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1)
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)
    as_slicer_reads = sitk.ReadImage(str(path))
    shown = sitk.GetArrayFromImage(as_slicer_reads)
    assert np.abs(shown - np.stack(expected)).max() > 100  # GDCM's one slope
    node = volume_node_from_image(mrml.scene, as_slicer_reads, "enhanced")
    node.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, str(enhanced.SOPInstanceUID))

    class Database:  # ctkDICOMDatabase's one call used here
        def fileForInstance(self, uid):
            return str(path) if uid == enhanced.SOPInstanceUID else ""

    mrml.database = Database()
    try:
        started = logic_for(mrml, task.name).start(
            {"image": node}, RunRequest(model=str(model), device="cpu"))
    finally:
        mrml.database = None
    # GDCM stacks the frames from the last (its z axis points down): compared in LPS order
    np.testing.assert_allclose(sitk.GetArrayFromImage(to_canonical(started.images["image"])),
                               np.stack(expected), atol=1e-4)
    [note] = [n for n in started.notes if "rescale" in n]
    assert "one rescale slope and intercept for all its frames" in note
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image_from_volume_node(node)),
                                  shown)  # the node is left as it was


def test_a_node_read_with_an_intercept_the_standard_does_not_apply_is_run_without_it(
        toy, mrml, tmp_path):
    """Slicer's volume reader (ITK) adds scl_inter where scl_slope is 0; the run takes the
    stored values, as the CLI and nibabel read the file, and says what Slicer shows."""

    task, image, model = toy
    path = tmp_path / "scan.nii"
    sitk.WriteImage(sitk.Cast(read_image(image) * 100, sitk.sitkInt16), str(path))
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([0.0, 1024.0], "<f4").tobytes()  # scl_slope, scl_inter
    path.write_bytes(bytes(raw))
    node = _loaded_by_slicer(mrml, path, "scan")
    stored = sitk.GetArrayFromImage(read_image(path))
    shown = sitk.GetArrayFromImage(image_from_volume_node(node))
    np.testing.assert_array_equal(shown, stored + 1024)  # Slicer's reader adds it
    started = logic_for(mrml, task.name).start({"image": node},
                                               RunRequest(model=str(model), device="cpu"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(started.images["image"]), stored)
    assert any("3D Slicer add 1024" in n for n in started.notes)


def test_a_node_loaded_from_a_minc_file_is_refused_as_slicer_turns_it(toy, mrml, tmp_path):
    """Slicer 5.10 and 5.12 read MINC through ITK 5.4's MINCImageIO (``Module_ITKIOMINC`` in
    SuperBuild/External_ITK.cmake, v5.10.0), which takes MINC's RAS coordinates as LPS: the
    node lies turned by 180 degrees about the head-feet axis. slicer-core has no MINC reader,
    so the node is made as that reader makes it (SimpleITK 2.5, the same ITK 5.4 reader) and
    given the file as its storage; the run refuses it by name, and the file read by the CLI
    is placed right (Testing/engine/test_other_file_formats.py)."""
    import slicer

    from OncoSegCommonLib.volumes import volume_node_from_image

    task, image, model = toy
    path = tmp_path / "scan.mnc"
    sitk.WriteImage(sitk.Cast(read_image(image), sitk.sitkFloat32), str(path))
    node = volume_node_from_image(mrml.scene, sitk.ReadImage(str(path)), "scan")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    mrml.scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    before = mrml.node_names()
    with pytest.raises(InputError, match=r"image \('scan'\): was loaded from the MINC file "
                       r"scan\.mnc, which this Slicer's reader \(ITK 5\.4\) places turned by "
                       "180 degrees"):
        logic_for(mrml, task.name).start({"image": node},
                                         RunRequest(model=str(model), device="cpu"))
    assert mrml.node_names() == before


def test_a_node_loaded_from_a_freesurfer_file_without_orientation_is_refused(toy, mrml,
                                                                            tmp_path):
    """An MGZ whose goodRASFlag is not set: Slicer (ITK's MGHIO, ``Module_MGHIO`` in
    SuperBuild/External_ITK.cmake, v5.10.0 and v5.12.3) leaves ITK's defaults, axes L, P, S
    from the origin, while FreeSurfer and the CLI read L, I, A (with a note): until 2026-12-07
    the run went on without a word, on an orientation nobody knows. slicer-core has no MGH
    reader, so the node is made as MGHIO makes it and given the file as its storage. The same
    file with its orientation runs."""
    import nibabel as nib
    import slicer

    from OncoSegCommonLib.volumes import volume_node_from_image

    task, image, model = toy
    source = read_image(image)
    data = sitk.GetArrayFromImage(source).astype(np.float32).transpose(2, 1, 0)  # x fastest
    for placed in (False, True):
        path = tmp_path / f"{'placed' if placed else 'unplaced'}.mgz"
        mgh = nib.MGHImage(data, np.diag([*source.GetSpacing(), 1.0]))
        mgh.header["goodRASFlag"] = int(placed)
        nib.save(mgh, path)
        as_mghio = sitk.GetImageFromArray(data.transpose(2, 1, 0))
        if placed:
            from oncoseg.io.mgh import information

            header = information(path)
            as_mghio.SetSpacing(header.spacing)
            as_mghio.SetOrigin(header.origin)
            as_mghio.SetDirection(header.direction)
        node = volume_node_from_image(mrml.scene, as_mghio, path.stem)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        mrml.scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        from OncoSegCommonLib.volumes import _loaded_file

        assert _loaded_file(node, image_from_volume_node(node)) is not None  # where MGHIO put it
        logic = logic_for(mrml, task.name)
        if placed:
            started = logic.start({"image": node}, RunRequest(model=str(model), device="cpu"))
            assert not any("goodRASFlag" in n for n in started.notes)
            continue
        before = mrml.node_names()
        with pytest.raises(InputError, match=r"image \('unplaced'\): was loaded from "
                           r"unplaced\.mgz, which holds no orientation .*L, P, S \(axial\), "
                           r"FreeSurfer and OncoSeg's command line read them as L, I, A"):
            logic.start({"image": node}, RunRequest(model=str(model), device="cpu"))
        assert mrml.node_names() == before


def test_a_node_loaded_from_a_nifti_file_with_a_voxel_width_of_zero_is_refused(toy, mrml,
                                                                              tmp_path):
    """Slicer's reader (ITK's nifti1_io) reads a pixdim of 0 as 1 mm without a word
    (slicer-core); the run refuses the node by name, as the CLI refuses the file."""
    import struct

    task, image, model = toy
    path = tmp_path / "flat.nii"
    sitk.WriteImage(sitk.Cast(read_image(image), sitk.sitkFloat32), str(path))
    data = bytearray(path.read_bytes())
    struct.pack_into("<f", data, 84, 0.0)  # pixdim[2]
    path.write_bytes(bytes(data))
    node = _loaded_by_slicer(mrml, path, "flat")
    assert node.GetSpacing()[1] == 1.0
    before = mrml.node_names()
    with pytest.raises(InputError, match=r"image \('flat'\): was loaded from flat\.nii, which has "
                       r"a voxel width of 0 in its NIfTI header \(pixdim\[2\]\)"):
        logic_for(mrml, task.name).start({"image": node},
                                         RunRequest(model=str(model), device="cpu"))
    assert mrml.node_names() == before
