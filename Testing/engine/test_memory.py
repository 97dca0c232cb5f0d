"""Issue 17, point 4: declared sizes refused before reading, the memory budget, and the oar-ct
task's tiles (slab-wise resampling, labels mapped back, compact probability maps)."""

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from imaging import FLIPS, OBLIQUE, make_image

import oncoseg.memory
from oncoseg import verbs
from oncoseg.errors import InputError
from oncoseg.io.header import check_declared_size, declared_image
from oncoseg.io.volumes import read_image
from oncoseg.memory import MEMORY_LIMIT_ENV, available_memory, parse_bytes, process_rss
from oncoseg.prediction import Prediction, label_counts, overview_prediction, write_prediction
from oncoseg.tiling import Geometry, VolumeSource, resample_labels_onto, resample_onto
from oncoseg.validation import check_volume

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_memory.py"
# runs one command and reports that command's own peak RSS and CPU time
MEASURE = """
import json, resource, subprocess, sys
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": result.returncode, "stderr": result.stderr,
                  "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def measured(*command, env=None):
    output = subprocess.run([sys.executable, "-c", MEASURE, *map(str, command)],
                            capture_output=True, text=True, timeout=120, env=env, check=True)
    return json.loads(output.stdout)


def declaring_nrrd(path, size, kind="float"):
    """A gzipped NRRD of about 1.2 KB whose header declares size^3 voxels."""
    header = (f"NRRD0004\ntype: {kind}\ndimension: 3\nsizes: {size} {size} {size}\n"
              "spacings: 1 1 1\nencoding: gzip\nendian: little\n\n").encode()
    path.write_bytes(header + gzip.compress(b"\0" * (1 << 20), 9))
    return path


def test_a_declared_2000_cubed_volume_is_refused_before_reading(tmp_path):
    bomb = declaring_nrrd(tmp_path / "bomb.nrrd", 2000)  # float32: 32 GB of pixels
    assert bomb.stat().st_size < 1300
    available, _ = available_memory()
    if available is not None and available > 48 << 30:
        pytest.skip("this machine could hold a 2000^3 float volume and its label map")
    run = measured(sys.executable, "-m", "oncoseg", "info", bomb)
    assert run["rc"] == 2, run["stderr"]
    assert ("bomb.nrrd: needs about 44.7 GB of memory to read its 2000 x 2000 x 2000 voxels "
            "(32-bit float)") in run["stderr"]
    assert run["peak_rss_mb"] < 200 and run["cpu_s"] < 1.5, run


def test_predict_refuses_it_too_and_writes_nothing(tmp_path):
    bomb = declaring_nrrd(tmp_path / "bomb.nrrd", 2000, "uint8")  # 8 GB of pixels
    env = {**os.environ, MEMORY_LIMIT_ENV: "4G"}
    run = measured(sys.executable, "-m", "oncoseg", "predict", "staging", "--input",
                   f"t2w={bomb}", "--output", tmp_path / "out", "--device", "cpu", env=env)
    assert run["rc"] == 2, run["stderr"]
    assert "bomb.nrrd: needs about 22.4 GB of memory" in run["stderr"]
    assert f"of the {MEMORY_LIMIT_ENV}=4G budget" in run["stderr"]
    # refused before torch is imported (oncoseg.cli checks every input's header first)
    assert run["peak_rss_mb"] < 200, run
    assert not (tmp_path / "out").exists()


def test_declared_sizes_of_files_and_dicom_folders(tmp_path, monkeypatch):
    for ending, factor in ((".nrrd", 1.0), (".nii.gz", 2.0), (".mha", 1.0)):
        sitk.WriteImage(make_image(shape_zyx=(6, 9, 11)), str(tmp_path / f"a{ending}"))
        declared = declared_image(tmp_path / f"a{ending}")
        assert declared.size == (11, 9, 6) and declared.bytes_per_voxel == 2
        assert declared.read_factor == factor
    folder = tmp_path / "series"
    folder.mkdir()
    for index in range(3):
        shutil.copy(CT_SMALL, folder / f"{index}.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    declared = declared_image(folder)
    assert declared.size == (128, 128, 3)
    assert declared.bytes_per_voxel == 4  # 16-bit stored, rescaled: GDCM returns 32 bits
    monkeypatch.setattr(oncoseg.memory, "available_memory", lambda: (100_000, "test"))
    with pytest.raises(InputError, match=r"series: needs about 288.0 kB of memory to read its "
                       r"128 x 128 x 3 voxels \(DICOM, 16-bit stored, rescaled\)"):
        read_image(folder)
    check_declared_size(tmp_path / "missing.nrrd")  # nothing to check: the read says why


def test_the_budget_caps_what_the_machine_offers(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, f"{(process_rss() >> 20) + 100}M")
    available, source = available_memory()
    assert 50 << 20 < available <= 100 << 20
    assert source.startswith(f"left of the {MEMORY_LIMIT_ENV}=")
    with pytest.raises(InputError, match=rf"ct: needs about 1.0 GB .* {MEMORY_LIMIT_ENV}"):
        oncoseg.memory.require_memory("ct", 1 << 30, "segment it")
    oncoseg.memory.require_memory("ct", 10 << 20, "segment it")


@pytest.mark.parametrize(("text", "count"), [("6G", 6 << 30), ("512 MB", 512 << 20),
                                             ("2.5g", int(2.5 * (1 << 30))), ("1000", 1000),
                                             ("4GiB", 4 << 30)])
def test_memory_sizes_parse(text, count):
    assert parse_bytes(text) == count


def test_a_bad_budget_is_named(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(InputError, match=f"{MEMORY_LIMIT_ENV}: 'lots' is not a memory size"):
        available_memory()


def test_a_method_refuses_what_it_cannot_process(monkeypatch):
    image = make_image(shape_zyx=(60, 90, 110))  # 594,000 voxels
    monkeypatch.setattr(oncoseg.memory, "available_memory", lambda: (10 << 20, "test"))
    with pytest.raises(InputError, match=r"t2w: needs about 36.3 MB of memory to process its "
                       r"110 x 90 x 60 voxels, but only 10.0 MB is test"):
        check_volume(image, "t2w")
    check_volume(image, "ct", bytes_per_voxel=4.0)  # a tiled method needs less


@pytest.mark.parametrize("direction", [None, OBLIQUE, FLIPS[5], np.eye(3)[[2, 0, 1]]])
def test_slab_resampling_equals_one_resampling(direction, tmp_path):
    from oncoseg.orientation import canonical_grid

    image = make_image(shape_zyx=(40, 50, 60), direction=direction, spacing=(0.8, 0.9, 1.5))
    grid = canonical_grid(image, (2.0, 2.0, 3.0))
    sources = {"memory": (VolumeSource(image), image)}
    for ending in (".mha", ".nii.gz", ".nrrd"):
        sitk.WriteImage(image, str(tmp_path / f"ct{ending}"))
        # NIfTI keeps its geometry in float32: compare with the file's own image
        sources[ending] = (VolumeSource(path=tmp_path / f"ct{ending}"),
                           sitk.ReadImage(str(tmp_path / f"ct{ending}")))
    assert sources[".nrrd"][0].image is not None  # NRRD does not stream: read once
    assert sources[".mha"][0].image is None and sources[".nii.gz"][0].image is None
    for name, (source, read) in sources.items():
        whole = sitk.GetArrayFromImage(sitk.Resample(
            read, grid, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32))
        slabs = resample_onto(source, Geometry.of(grid), "linear", -1024.0, slab_bytes=50_000)
        np.testing.assert_allclose(slabs, whole, atol=1e-3, err_msg=name)
    # nearest neighbour: a grid with no point half-way between two voxels (ties may round
    # either way when the block's origin is computed differently)
    grid = canonical_grid(image, (2.1, 1.9, 3.1))
    nearest = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(
        resample_onto(VolumeSource(image), Geometry.of(grid), "nearest", dtype=np.int16,
                      slab_bytes=50_000), sitk.GetArrayFromImage(nearest))
    labels = sitk.Cast(nearest > 500, sitk.sitkUInt8)
    back = resample_labels_onto(labels, Geometry.of(image))
    assert back.GetPixelID() == sitk.sitkUInt8 and back.GetSize() == image.GetSize()
    expected = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(expected))


def test_label_counts_match_bincount(monkeypatch):
    monkeypatch.setattr("oncoseg.prediction.COUNT_SLAB_VOXELS", 500)
    array = np.random.default_rng(0).integers(0, 4, size=(13, 17, 19)).astype(np.uint8)
    counts = np.bincount(array.ravel(), minlength=6)
    assert label_counts(sitk.GetImageFromArray(array), [1, 3, 5]) == [counts[1], counts[3], 0]


def _small_ct():
    """A CT-like volume: air around a water cylinder with a bone rod, 3 mm voxels."""
    _, y, x = np.mgrid[0:20, 0:40, 0:44]
    array = np.full((20, 40, 44), -1000, np.int16)
    array[(y - 20) ** 2 + (x - 22) ** 2 < 15 ** 2] = 30
    array[(y - 20) ** 2 + (x - 12) ** 2 < 3 ** 2] = 900
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((3.0, 3.0, 3.0))
    return image


def test_a_large_ct_keeps_its_probability_maps_on_the_working_grid(tmp_path, monkeypatch):
    """What a 1024^3 CT gets (there: 20 GB of float32 maps avoided), forced on a small CT."""
    from oncoseg.oar.ct import predict as ct_predict

    monkeypatch.setattr(ct_predict, "FULL_GRID_PROBABILITY_BYTES", 0)
    monkeypatch.setattr("oncoseg.prediction.OVERVIEW_MAX_VOXELS", 4000)
    ct = _small_ct()
    prediction = verbs.predict("oar-ct", {"ct": ct})
    assert prediction.labels.GetSize() == ct.GetSize()
    assert prediction.labels.GetPixelID() == sitk.sitkUInt8
    maps = list(prediction.probabilities.values())
    assert len(maps) == 5 and all(m.GetSpacing() == (3.0, 3.0, 3.0) for m in maps)
    assert prediction.details["probability_grid"] == "working grid"
    assert any("probability maps are on the model's working grid" in m
               for m in prediction.messages)
    shown = overview_prediction(prediction)
    assert np.prod(shown.labels.GetSize()) <= 4000
    assert shown.segment_volumes_ml() == prediction.segment_volumes_ml()
    out = write_prediction(prediction, tmp_path / "out", {"ct": "ct.mha"})
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert result["details"]["probability_grid"] == "working grid"
    written = sitk.ReadImage(str(out / "probabilities" / "Bladder.nii.gz"))
    assert written.GetSize() == maps[0].GetSize()
    assert (out / "overview.png").stat().st_size > 1000


def test_a_small_prediction_is_drawn_as_it_is():
    image = make_image(shape_zyx=(6, 9, 11))
    prediction = Prediction(task="t", model={}, images={"ct": image}, display_role="ct")
    assert overview_prediction(prediction) is prediction


def test_memory_benchmark_runs_tiny():
    """The full run (256^3 to 1024^3, about 20 minutes) is the benchmark; this keeps it
    working: one 48^3 CT over a 96 mm field (a one-window working grid)."""
    result = subprocess.run([sys.executable, str(BENCH), "--sizes", "48", "--field-of-view",
                             "96", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = json.loads(result.stdout.strip().splitlines()[-1])["sizes"]
    assert row["size"] == 48 and row["ratio_oncoseg_over_peer"] > 0
    assert row["peer_read_peak_rss_mb"] > 0 and row["probability_grid"] == "ct"
