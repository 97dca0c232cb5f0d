"""RectalSeg's module logic on a real MRML scene (slicer-core): the scenarios RectalSegTest
also runs in the application."""

import pytest

from oncoseg.errors import InputError
from OncoSegCommonLib.checks import run_scenario
from RectalSegLib import scenarios
from RectalSegLib.logic import RectalSegParameters, guess_inputs


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
def test_scenario(mrml, tmp_path, scenario):
    """Each scenario passes its asserts and logs no VTK/MRML error or warning."""
    run_scenario(scenario, mrml, tmp_path)


def test_auto_fill_reads_scanner_like_names(mrml):
    import SimpleITK as sitk

    from OncoSegCommonLib.volumes import volume_node_from_image

    image = sitk.Image(8, 8, 4, sitk.sitkFloat32)
    names = ["ep2d_diff_b1000", "t2_tse_tra", "ep2d_diff_b0", "Localizer"]
    nodes = {n: volume_node_from_image(mrml.scene, image, n) for n in names}
    found = guess_inputs(mrml.scene)
    assert found == {"t2w": nodes["t2_tse_tra"], "dwi_b0": nodes["ep2d_diff_b0"],
                     "dwi_b1000": nodes["ep2d_diff_b1000"]}


def test_parameters_turn_into_engine_settings():
    from oncoseg.method import demo_model_file, model_settings
    from oncoseg.modelfile import read_header

    demo = read_header(demo_model_file("rectal")).metadata
    off = RectalSegParameters(registration=False).overrides()
    assert off == {"threshold": 0.5, "registration": "none"}
    assert model_settings("rectal", demo, off).registration == "none"
    on = RectalSegParameters(threshold=0.3).overrides()
    assert on == {"threshold": 0.3}
    # registration on: the engine applies the preset the model was trained with
    settings = model_settings("rectal", demo, on)
    assert settings.registration == demo.preprocessing["registration"] == "rigid"
    assert settings.threshold == 0.3
    # the request carries them, and a seed placed in Slicer (RAS) as the engine's LPS hint
    request = RectalSegParameters(threshold=0.3, model="m.safetensors").request([1.0, 2.0, 3.0])
    assert (request.model, request.overrides) == ("m.safetensors", {"threshold": 0.3})
    assert list(request.hints.seed_lps_mm) == [-1.0, -2.0, 3.0]
    assert RectalSegParameters().request().hints.seed_lps_mm is None


# ------------------------------------------------------------------ every b-value in one node


@pytest.fixture(scope="module")
def dwi_case(tmp_path_factory):
    from oncoseg.verbs import phantom

    [case] = phantom("rectal", tmp_path_factory.mktemp("rectal"), cases=1,
                     seed=scenarios.PHANTOM_SEED)
    return case


def _multivolume(mrml, case, labels="0.0,50.0,1000.0", tag="GE.B-value"):
    """A node as MultiVolumeImporter makes one (a scalar volume whose image has one component
    per frame, MultiVolume.* attributes). The vtkMRMLMultiVolumeNode class comes with the
    MultiVolumeExplorer module, which the slicer-core wheel lacks: there the same image and
    attributes go on a scalar volume node, the class it derives from."""
    import SimpleITK as sitk
    from dwi_series import at_b_value

    from oncoseg.io.volumes import read_image
    from OncoSegCommonLib.volumes import update_volume_node

    b0, b1000 = (read_image(case / f"{r}.nii.gz") for r in ("dwi_b0", "dwi_b1000"))
    frames = [sitk.Cast(b0, sitk.sitkFloat32), at_b_value(b0, b1000, 50),
              sitk.Cast(b1000, sitk.sitkFloat32)]
    node = mrml.scene.CreateNodeByClass("vtkMRMLMultiVolumeNode")
    node = mrml.scene.AddNode(node) if node is not None else mrml.scene.AddNewNodeByClass(
        "vtkMRMLScalarVolumeNode")
    node.SetName("ep2d_diff_b0_b50_b1000 multivolume")
    update_volume_node(node, sitk.Compose(frames))
    node.SetAttribute("MultiVolume.FrameLabels", labels)
    node.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", tag)
    node.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "sec/mm2")
    node.SetAttribute("MultiVolume.NumberOfFrames", "3")
    return node


def test_a_multivolume_node_is_the_dwi_input(mrml, dwi_case):
    import numpy as np

    from oncoseg.io.volumes import read_image
    from OncoSegCommonLib.volumes import volume_node_from_image
    from RectalSegLib.diffusion import diffusion_series_from_node
    from RectalSegLib.logic import RectalSegLogic, guess_dwi_node, inputs_ready

    node = _multivolume(mrml, dwi_case)
    series = diffusion_series_from_node(node)
    assert [i.b_value for i in series.images] == [0.0, 50.0, 1000.0]
    assert "GE slop_int_6 (0043,1039)" in series.b_value_source
    t2w = volume_node_from_image(mrml.scene, read_image(dwi_case / "t2w.nii.gz"), "t2_tse_tra")
    # the multivolume's name holds 'b0': it must not be taken for the b0 volume
    assert guess_inputs(mrml.scene) == {"t2w": t2w, "dwi_b0": None, "dwi_b1000": None}
    assert guess_dwi_node(mrml.scene) is node
    inputs = {"t2w": t2w, "dwi": node}
    assert inputs_ready(inputs)
    result = RectalSegLogic(mrml).run(inputs, RectalSegParameters(registration=False).request())
    note = next(m for m in result.prediction.messages if m.startswith("dwi: "))
    assert note.startswith("dwi: 3 b-values (0, 50, 1000 s/mm^2); b0 = 0, high b = 1000"), note
    b0 = read_image(dwi_case / "dwi_b0.nii.gz")
    picked = result.reference
    assert picked.GetName() == "RectalSeg DWI b=0"
    from OncoSegCommonLib.volumes import image_from_volume_node

    np.testing.assert_allclose(
        image_from_volume_node(picked).GetOrigin(), b0.GetOrigin(), atol=1e-4)
    assert result.rows()
    # a refine click reads each sequence where the model read it: the b-values picked from
    # the series, the T2w as resampled onto the b0 grid (never the T2w node as loaded)
    from OncoSegCommonLib.segmentations import input_nodes

    linked = {n.GetName() for n in input_nodes(result.nodes.segmentation)}
    assert linked == {"RectalSeg DWI b=0", "RectalSeg DWI b=1000", "RectalSeg t2w (registered)"}


def test_sequences_with_b_values_in_index_or_attributes(mrml, dwi_case):
    import slicer

    from oncoseg.io.volumes import read_image
    from OncoSegCommonLib.volumes import update_volume_node
    from RectalSegLib.diffusion import diffusion_series_from_node

    made = scenarios.dwi_volume_sequence(mrml, dwi_case)  # MultiVolumeImporter's sequence
    assert [i.b_value for i in diffusion_series_from_node(made).images] == [0.0, 1000.0]
    by_index = mrml.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "by b-value")
    by_index.SetIndexName("b-value")
    by_index.SetIndexUnit("s/mm2")
    by_attribute = mrml.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "by attribute")
    for frame, (role, b) in enumerate((("dwi_b0", 0), ("dwi_b1000", 1000))):
        volume = slicer.vtkMRMLScalarVolumeNode()
        update_volume_node(volume, read_image(dwi_case / f"{role}.nii.gz"))
        by_index.SetDataNodeAtValue(volume, str(b))
        volume.SetAttribute("DICOM.DiffusionBValue", str(b))
        by_attribute.SetDataNodeAtValue(volume, str(frame))
    for node in (by_index, by_attribute):
        assert [i.b_value for i in diffusion_series_from_node(node).images] == [0.0, 1000.0]
    no_b = mrml.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "time series")
    no_b.SetDataNodeAtValue(slicer.vtkMRMLScalarVolumeNode(), "0")
    with pytest.raises(InputError, match=r"'time series'.*has no b-values"):
        diffusion_series_from_node(no_b)
    transforms = mrml.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "motion")
    transforms.SetDataNodeAtValue(slicer.vtkMRMLLinearTransformNode(), "0")
    with pytest.raises(InputError, match="item 0 is a vtkMRMLLinearTransformNode"):
        diffusion_series_from_node(transforms)


def test_a_dwi_node_read_by_slicers_nrrd_reader(mrml, dwi_case, tmp_path):
    import slicer
    from dwi_series import directional, write_dwmri_nrrd

    from oncoseg.io.diffusion import choose_b_values
    from oncoseg.io.volumes import read_image
    from RectalSegLib.diffusion import diffusion_series_from_node

    b0, b1000 = (read_image(dwi_case / f"{r}.nii.gz") for r in ("dwi_b0", "dwi_b1000"))
    path = write_dwmri_nrrd([(0.0, None, b0)] + [(1000.0, d, image) for d, image in
                                                 directional(b1000, 1000)], tmp_path / "d.nrrd")
    storage = slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(path))
    node = mrml.scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "DWI")
    assert storage.ReadData(node)
    choice = choose_b_values(diffusion_series_from_node(node), 1000)
    assert "b0 = 0, high b = 1000 (3 directions averaged)" in choice.note
    assert choice.high_b.GetSize() == b1000.GetSize()


def test_the_dwi_input_comes_in_one_form(mrml, dwi_case):
    from RectalSegLib.diffusion import diffusion_series_from_node
    from RectalSegLib.logic import RectalSegLogic, inputs_ready

    node = _multivolume(mrml, dwi_case)
    nodes, _ = scenarios.load_phantom(mrml, dwi_case.parent / "again")
    both = {**nodes, "dwi": node}
    assert not inputs_ready(both)
    assert not inputs_ready({"t2w": nodes["t2w"]})
    assert inputs_ready(nodes)
    before = mrml.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="dwi: and dwi_b0 and dwi_b1000 are two forms"):
        RectalSegLogic(mrml).run(both)
    assert mrml.scene.GetNumberOfNodes() == before
    timed = _multivolume(mrml, dwi_case, tag="TriggerTime")
    with pytest.raises(InputError, match="labelled by 'TriggerTime', not by b-value"):
        diffusion_series_from_node(timed)
    short = _multivolume(mrml, dwi_case, labels="0,1000")
    with pytest.raises(InputError, match="has 3 frames but 2 b-values"):
        diffusion_series_from_node(short)
