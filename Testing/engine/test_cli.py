import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import tinynet
from imaging import OBLIQUE, make_image
from pickles import WritesMarker

from oncoseg.cli import main
from oncoseg.io import read_seg_nrrd
from oncoseg.modelfile import save_model
from oncoseg.tasks import unregister_task


def oncoseg(*args):
    """The installed command, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "oncoseg", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def threshold_task():
    task = tinynet.register()
    yield task
    unregister_task(task.name)


def test_version_and_tasks():
    result = oncoseg("--version")
    assert result.returncode == 0 and result.stdout.startswith("oncoseg ")
    result = oncoseg("tasks", "--json")
    assert result.returncode == 0
    assert isinstance(json.loads(result.stdout), list)


def test_tasks_lists_roles_and_outputs(threshold_task, capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "test-threshold" in out and "input  image" in out and "Bright region" in out
    assert main(["tasks", "--json"]) == 0
    described = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    task = described["test-threshold"]
    assert [r["role"] for r in task["inputs"]] == ["image", "extra"]
    assert task["segments"][0]["terminology"].split("~")[2] == "SCT^85756007^Tissue"


def test_info_describes_image_and_model(tmp_path):
    sitk.WriteImage(make_image(direction=OBLIQUE), str(tmp_path / "ct.nrrd"))
    result = oncoseg("info", tmp_path / "ct.nrrd")
    assert result.returncode == 0, result.stderr
    assert "orientation: oblique" in result.stdout and "11 x 9 x 6 voxels" in result.stdout
    model = save_model(tmp_path / "m.safetensors", tinynet.tiny_conv().state_dict(),
                       tinynet.tiny_metadata())
    result = oncoseg("info", model, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["parameters"] == sum(p.numel() for p in tinynet.tiny_conv().parameters())
    assert info["demo"] is True


def test_info_refuses_what_methods_would_refuse(tmp_path):
    sitk.WriteImage(sitk.Image([6, 6, 5, 3], sitk.sitkFloat32), str(tmp_path / "4d.nrrd"))
    (tmp_path / "weights.pt").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    cases = {
        "4d.nrrd": "is a 4D image",
        "missing.nrrd": "no such file",
        "weights.pt": "is a Python pickle",
        "junk.safetensors": "not a safetensors model file",
    }
    for name, message in cases.items():
        result = oncoseg("info", tmp_path / name)
        assert result.returncode == 2, (name, result.stderr)
        assert name in result.stderr and message in result.stderr, result.stderr


def test_predict_writes_the_promised_files(tmp_path, threshold_task, capsys):
    image = make_image(direction=OBLIQUE, shape_zyx=(8, 20, 24), dtype=np.float32)
    sitk.WriteImage(image, str(tmp_path / "in.nrrd"))
    out = tmp_path / "out"
    code = main(["predict", "test-threshold", "--input", f"image={tmp_path / 'in.nrrd'}",
                 "--output", str(out), "--device", "cpu", "--progress", "none",
                 "--set", "offset_sd=0.5"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "labels.nii.gz", "overview.png", "probabilities", "probabilities/Bright_region.nii.gz",
        "result.json", "segmentation.seg.nrrd"]
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    voxels = int(sitk.GetArrayViewFromImage(labels).sum())
    expected_ml = voxels * np.prod(image.GetSpacing()) / 1000
    assert result["segments"][0]["volume_ml"] == pytest.approx(expected_ml, abs=1e-3)
    assert result["inputs"] == {"image": str(tmp_path / "in.nrrd")}
    segmentation = read_seg_nrrd(out / "segmentation.seg.nrrd")
    np.testing.assert_array_equal(segmentation.mask("Bright region"),
                                  sitk.GetArrayViewFromImage(labels) == 1)
    # a second run does not replace the first unless asked
    assert main(["predict", "test-threshold", "--input", f"image={tmp_path / 'in.nrrd'}",
                 "--output", str(out), "--device", "cpu", "--progress", "none"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--input", "extra=x.nrrd"], "--input image: is required"),
    (["--input", "image=x.nrrd", "--input", "t1=y.nrrd"], "--input t1: is not an input"),
    (["--input", "image"], "must be ROLE=PATH"),
    (["--input", "image=/no/such.nrrd"], "/no/such.nrrd: no such file"),
    (["--input", "image=x.nrrd", "--set", "bogus=1"], "--set bogus: is not a configuration"),
    (["--input", "image=x.nrrd", "--device", "tpu"], "--device: 'tpu' is not one of"),
])
def test_predict_bad_input_exit_code_2(tmp_path, threshold_task, capsys, args, message,
                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    sitk.WriteImage(make_image(), str(tmp_path / "x.nrrd"))
    code = main(["predict", "test-threshold", *args, "--output", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_task_and_usage_errors():
    result = oncoseg("predict", "no-such-task", "--input", "a=b", "--output", "o")
    assert result.returncode == 2 and "task 'no-such-task': is unknown" in result.stderr
    assert oncoseg("predict").returncode == 2
    assert oncoseg("frobnicate").returncode == 2


def test_info_refuses_pickles_without_running_them(tmp_path):
    import torch

    WritesMarker.path = str(tmp_path / "code-ran")
    (tmp_path / "renamed.safetensors").write_bytes(pickle.dumps(WritesMarker()))
    torch.save({"state": WritesMarker()}, tmp_path / "checkpoint.pt")
    for name in ("renamed.safetensors", "checkpoint.pt"):
        result = oncoseg("info", tmp_path / name)
        assert result.returncode == 2, result.stderr
        assert "It was not opened" in result.stderr
    assert not (tmp_path / "code-ran").exists()
    # the files really would run code if unpickled
    pickle.loads((tmp_path / "renamed.safetensors").read_bytes())
    assert (tmp_path / "code-ran").exists()


def test_the_console_exit_leaves_a_complete_output_and_no_temporary_file(tmp_path):
    """``python -m oncoseg`` ends through console_main's os._exit (no interpreter teardown):
    the output folder is complete and readable, every line printed arrived (progress as JSON
    lines on a pipe, then the closing message), the atomic folder's temporary sibling and
    everything under TMPDIR are gone, and the exit functions still ran."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "data" / "phantoms"
    marker = tmp_path / "atexit-ran"
    code = ("import atexit, pathlib, runpy, sys\n"
            f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
            "sys.argv[0] = 'oncoseg'\n"
            "runpy.run_module('oncoseg', run_name='__main__')\n")
    result = subprocess.run(
        [sys.executable, "-c", code, "phantom", "rectal", "--cases", "2", "--seed", "3",
         "--output", str(out), "--progress", "json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert all(json.loads(line) for line in lines[:-1])
    assert lines[-1].startswith("2 rectal phantom case(s) written"), lines[-1]
    cases = sorted(p.name for p in out.iterdir())
    assert cases == ["rectal_000", "rectal_001"]
    for case in cases:
        for role in ("t2w", "dwi_b0", "dwi_b1000", "label"):
            assert sitk.ReadImage(str(out / case / f"{role}.nii.gz")).GetSize()[2] > 1
        json.loads((out / case / "case.json").read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["phantoms"], "a .part folder left"
    assert list(scratch.iterdir()) == []
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("verb", [
    ["predict", "oar-ct", "--input", "ct={image}"],
    ["export", "{image}", "--format", "nrrd"],
    ["train", "oar-ct", "--dataset", "{folder}"],
    ["phantom", "oar-ct", "--cases", "1"]])
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, verb):
    """It ended in exit 1 ('unexpected error: FileExistsError') after reading the inputs."""
    sitk.WriteImage(make_image(), str(tmp_path / "ct.nii.gz"))
    (tmp_path / "a_file").write_text("")
    args = [a.format(image=tmp_path / "ct.nii.gz", folder=tmp_path) for a in verb]
    assert main([*args, "--output", str(tmp_path / "a_file" / "out")]) == 2
    assert f"a_file/out: cannot be created: {tmp_path / 'a_file'} is a file, not a folder" \
        in capsys.readouterr().err


def test_an_output_that_holds_an_input_is_refused_even_with_overwrite(tmp_path, capsys):
    """`--overwrite` replaces the output folder whole: with the input inside it, `predict`
    deleted the CT it had just read (until 2026-12-06)."""
    case = tmp_path / "case"
    case.mkdir()
    sitk.WriteImage(make_image(), str(case / "ct.nii.gz"))
    before = (case / "ct.nii.gz").read_bytes()
    for args in (["predict", "oar-ct", "--input", f"ct={case / 'ct.nii.gz'}"],
                 ["train", "oar-ct", "--dataset", str(case)],
                 ["export", str(case / "ct.nii.gz"), "--format", "nrrd"]):
        output = case / "ct.nii.gz" if args[0] == "export" else case
        overwrite = ["--overwrite"] if args[0] != "train" else ["--resume"]
        assert main([*args, "--output", str(output), *overwrite]) == 2
        error = capsys.readouterr().err
        assert "writing the results there would delete it" in error, error
        assert (case / "ct.nii.gz").read_bytes() == before
    # an output inside the input's folder is fine: nothing of the input is replaced
    assert main(["predict", "oar-ct", "--input", f"ct={case / 'ct.nii.gz'}", "--output",
                 str(case / "results"), "--progress", "none"]) in (0, 2)
    assert "would delete it" not in capsys.readouterr().err
