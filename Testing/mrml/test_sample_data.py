"""Phantom sample data: registered once per task with a thumbnail drawn from its own case,
loaded into a real MRML scene, all or nothing."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from OncoSegCommonLib import sample_data
from OncoSegCommonLib.export import series_of_volume
from OncoSegCommonLib.sample_data import SAMPLES, load_sample, register_sample_data


def test_every_task_registers_one_sample_in_the_oncoseg_category(tmp_path):
    from oncoseg.tasks import all_tasks

    registered, loaded = [], []
    register_sample_data(lambda **kw: registered.append(kw), loaded.append, tmp_path)
    assert {kw["category"] for kw in registered} == {"OncoSeg"}
    assert len(registered) == len(SAMPLES)
    assert set(SAMPLES) == {t.name for t in all_tasks() if t.method_module.startswith("oncoseg.")}
    registered[2]["customDownloader"](None)  # SampleData calls it with the source
    assert loaded == [list(SAMPLES)[2]]


@pytest.mark.parametrize("task, roles, segments", [
    ("rectal", ["t2w", "dwi_b0", "dwi_b1000"], ["Rectal tumour"]),
    ("brain", ["t1", "t1c", "t2", "flair"], ["Necrotic and non-enhancing tumour core",
                                             "Peritumoral oedema", "Enhancing tumour"]),
    ("oar-ct", ["ct"], None),
])
def test_a_sample_loads_its_volumes_and_reference(mrml, tmp_path, task, roles, segments):
    nodes = load_sample(mrml, task, tmp_path)
    volumes = [n for n in nodes if n.IsA("vtkMRMLScalarVolumeNode")]
    assert [n.GetName().split()[-1] for n in volumes] == roles
    found = [n for n in nodes if n.IsA("vtkMRMLSegmentationNode")]
    if segments is None:  # the CT comes from a DICOM series: exports will reference it
        assert not found
        assert series_of_volume(volumes[0]) is not None
        return
    (reference,) = found
    segmentation = reference.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName()
            for i in range(segmentation.GetNumberOfSegments())] == segments
    again = load_sample(mrml, task, tmp_path)  # from the cache: the same case
    assert [n.GetName() for n in again] == [n.GetName() for n in nodes]


def test_a_failing_sample_leaves_no_nodes(mrml, tmp_path, monkeypatch):
    before = mrml.node_names()

    def broken(*args, **kwargs):
        raise RuntimeError("import failed")

    monkeypatch.setattr(sample_data, "segmentation_node_from_labels", broken)
    with pytest.raises(RuntimeError):
        load_sample(mrml, "rectal", tmp_path)
    assert mrml.node_names() == before


ROOT = Path(__file__).resolve().parents[2]
ICONS = ROOT / "OncoSegCommon" / "Resources" / "Icons"  # what OncoSegCommon.py registers from


def test_every_sample_has_its_thumbnail():
    """Sample Data shows ``thumbnailFileName`` on the sample's button (Slicer
    Modules/Scripted/SampleData/SampleData.py, registerCustomSampleDataSource, v5.8.0 to
    v5.12.3); Slicer's own thumbnails are 288 x 261 PNGs, so are these."""
    registered = []
    register_sample_data(lambda **kw: registered.append(kw), lambda task: None, ICONS)
    assert [Path(kw["thumbnailFileName"]) for kw in registered] == \
        [ICONS / f"{task}.png" for task in SAMPLES]
    for kw in registered:
        with Image.open(kw["thumbnailFileName"]) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("PNG", (288, 261)), kw["sampleName"]


def pictures_script():
    spec = importlib.util.spec_from_file_location("extension_pictures",
                                                  ROOT / "scripts" / "extension_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_thumbnail_is_remade_from_the_sample_it_shows(tmp_path):
    """The committed thumbnail is what scripts/extension_pictures.py draws from the case the
    sample loads: when the phantom changes, this fails until the pictures are remade."""
    drawn = np.asarray(pictures_script().sample_thumbnail("brain", tmp_path), np.float32)
    with Image.open(ICONS / "brain.png") as committed:
        difference = np.abs(drawn - np.asarray(committed.convert("RGB"), np.float32))
    assert difference.mean() < 1.0, "remake: python scripts/extension_pictures.py --only thumbnails"
