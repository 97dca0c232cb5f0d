"""`predict rectal --input dwi=SERIES_OR_4D`: the same segmentation as separate b0 / b1000
inputs, a note saying which b-values were picked, and clear refusals."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk
from cli_runs import assert_predict_refused
from dwi_series import directional, write_4d_nifti, write_dwi_series

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.io.diffusion import read_diffusion
from oncoseg.io.volumes import read_image
from oncoseg.modelfile import ModelMetadata
from oncoseg.rectal.task import model_high_b

ROLES = ("t2w", "dwi_b0", "dwi_b1000")
FAST = {"registration": "none"}  # as the rectal pipeline tests: what is compared is the input


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    [folder] = verbs.phantom("rectal", tmp_path_factory.mktemp("rectal") / "data", cases=1,
                             seed=9100)
    return folder


@pytest.fixture(scope="module")
def separate(case):
    """The prediction from the three separate inputs (the reference)."""
    return verbs.predict("rectal", {r: read_image(case / f"{r}.nii.gz") for r in ROLES}, "demo",
                         FAST)


def dice(a: sitk.Image, b: sitk.Image) -> float:
    """Dice of two label maps compared in physical space (b resampled onto a's grid)."""
    b = sitk.Resample(b, a, sitk.Transform(), sitk.sitkNearestNeighbor, 0, a.GetPixelID())
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2 * float((x & y).sum()) / float(x.sum() + y.sum())


@pytest.mark.parametrize("form", ["siemens-series", "ge-series-3-directions", "nifti-bval"])
def test_one_dwi_input_segments_as_the_separate_inputs(case, separate, tmp_path, form):
    b0, b1000 = read_image(case / "dwi_b0.nii.gz"), read_image(case / "dwi_b1000.nii.gz")
    if form == "siemens-series":  # every slice twice: b0 and b1000 in one series
        write_dwi_series([(0.0, None, b0), (1000.0, None, b1000)], tmp_path / "dwi", "siemens")
        path = tmp_path / "dwi"
    elif form == "ge-series-3-directions":
        write_dwi_series([(0.0, None, b0)] + [(1000.0, d, im) for d, im in
                                              directional(b1000, 1000)], tmp_path / "dwi", "ge")
        path = tmp_path / "dwi"
    else:
        path = write_4d_nifti([(0.0, None, b0), (1000.0, None, b1000)], tmp_path / "dwi.nii.gz")
    images = {"t2w": read_image(case / "t2w.nii.gz"), "dwi": read_diffusion(path)}
    combined = verbs.predict("rectal", images, "demo", FAST)
    assert dice(separate.labels, combined.labels) >= 0.99
    assert separate.labels.GetSize() == combined.labels.GetSize()
    note = next(m for m in combined.messages if m.startswith("dwi: "))
    assert "b0 = 0, high b = 1000" in note and "the model's b-value" in note, note
    assert combined.details["dwi"]["high_b"] == 1000 and combined.details["dwi"]["b0"] == 0
    assert separate.details["dwi"] is None


def test_cli_dwi_series_writes_the_note_and_the_same_segmentation(case, separate, tmp_path,
                                                                  capsys):
    b0, b1000 = read_image(case / "dwi_b0.nii.gz"), read_image(case / "dwi_b1000.nii.gz")
    write_dwi_series([(0.0, None, b0), (50.0, None, b0), (1000.0, None, b1000)],
                     tmp_path / "dwi", "philips")
    out = tmp_path / "out"
    assert main(["predict", "rectal", "--input", f"t2w={case / 't2w.nii.gz'}", "--input",
                 f"dwi={tmp_path / 'dwi'}", "--output", str(out), "--progress", "none",
                 "--set", "registration=none"]) == 0
    err = capsys.readouterr().err
    assert "note: dwi: 3 b-values (0, 50, 1000 s/mm^2); b0 = 0, high b = 1000" in err, err
    result = json.loads((out / "result.json").read_text())
    assert any(m.startswith("dwi: 3 b-values") for m in result["messages"])
    assert result["details"]["dwi"]["b_values"] == [0, 50, 1000]
    assert result["inputs"]["dwi"] == str(tmp_path / "dwi")
    assert dice(separate.labels, read_image(out / "labels.nii.gz")) >= 0.99


def test_cli_refuses_both_forms_neither_and_a_series_without_high_b(case, tmp_path, capsys):
    b0 = read_image(case / "dwi_b0.nii.gz")
    low = write_4d_nifti([(0.0, None, b0), (500.0, None, b0)], tmp_path / "low.nii.gz")
    runs = {
        "dwi: and dwi_b0 are two forms of the same images": {
            "dwi": low, "dwi_b0": case / "dwi_b0.nii.gz"},
        "--input dwi_b0: is required by task 'rectal' (give it as --input dwi_b0=PATH, or "
        "every b-value at once as --input dwi=SERIES_OR_4D)": {},
        "has no high-b image: b-values found: 0, 500 s/mm^2": {"dwi": low},
    }
    for message, extra in runs.items():
        assert_predict_refused("rectal", {"t2w": case / "t2w.nii.gz", **extra}, message,
                               tmp_path / "out", capsys)


def test_other_tasks_do_not_take_dwi(tmp_path, capsys):
    assert main(["predict", "staging", "--input", f"dwi={tmp_path}", "--output",
                 str(tmp_path / "out"), "--progress", "none"]) == 2
    assert "--input dwi: is not an input of task 'staging'" in capsys.readouterr().err


def test_the_models_high_b_value_from_its_metadata():
    def metadata(preprocessing, demo):
        return ModelMetadata("rectal", "rectal-patch-cnn", {}, list(ROLES), preprocessing,
                             {"segments": []}, demo=demo)

    assert model_high_b(metadata({"high_b_value": 800}, False)) == 800.0
    assert model_high_b(metadata({}, True)) == 1000.0  # phantoms' dwi_b1000 is b = 1000
    assert model_high_b(metadata({}, False)) is None
    with pytest.raises(InputError, match="dwi: and dwi_b1000 are two forms"):
        verbs.predict("rectal", {"t2w": None, "dwi": None, "dwi_b1000": None}, "demo")
