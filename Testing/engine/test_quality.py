"""Quality control per case (issue 21): each flag raised where it should be, with its reason,
and silent on a plausible case; ranges come from the task declarations."""

import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg import quality
from oncoseg.datasets.base import Case, Dataset
from oncoseg.prediction import Prediction
from oncoseg.tasks import Plausible, get_task


def image(array, spacing=(1.0, 1.0, 1.0), direction=None):
    out = sitk.GetImageFromArray(np.asarray(array))
    out.SetSpacing(spacing)
    if direction is not None:
        out.SetDirection(direction)
    return out


def ct_phantom(shape=(20, 64, 64)):
    """Air around a water cylinder with a bone rod: a CT in Hounsfield units."""
    _, y, x = np.indices(shape)
    c, r = shape[1] / 2, 0.4 * shape[1]
    hu = np.full(shape, -1000, np.int16)
    body = (y - c) ** 2 + (x - c) ** 2 < r ** 2
    hu[body] = 40
    hu[(y - c) ** 2 + (x - c + 12) ** 2 < 16] = 700
    return hu, body


def checks(flags):
    return sorted((f.check, f.subject) for f in flags)


def test_a_ct_in_hounsfield_units_raises_no_input_flag():
    hu, _ = ct_phantom()
    assert quality.check_inputs(get_task("oar-ct"), {"ct": image(hu)}, {}) == []


def test_an_mr_given_as_ct_and_a_ct_without_its_rescale_are_flagged():
    hu, _ = ct_phantom()
    mr = np.clip(hu + 1000, 0, None).astype(np.uint16)  # raw stored values, no intercept
    [flag] = quality.check_inputs(get_task("oar-ct"), {"ct": image(mr)}, {})
    assert flag.check == "modality" and "no negative values" in flag.reason
    [flag] = quality.check_inputs(get_task("oar-mr"), {"mr": image(hu)}, {})
    assert flag.check == "modality" and "looks like a CT" in flag.reason


def test_a_ct_in_another_scale_is_flagged_and_scanner_padding_is_not():
    """Air at -7300 (a CT multiplied by 7.3) is no Hounsfield unit; the padding value scanners
    put outside the reconstructed circle (-3024, a fifth of the square) and air clipped at
    -1024 are."""
    hu, _ = ct_phantom()
    noisy = hu + np.random.default_rng(0).normal(0, 15, hu.shape)
    [flag] = quality.check_inputs(get_task("oar-ct"), {"ct": image(noisy * 7.3)}, {})
    assert flag.check == "modality" and "air lies near -7300" in flag.reason
    _, y, x = np.indices(hu.shape)
    outside = (y - 31.5) ** 2 + (x - 31.5) ** 2 > 32 ** 2
    for scan in (np.where(outside, -3024, noisy), np.maximum(noisy, -1024)):
        assert quality.check_inputs(get_task("oar-ct"), {"ct": image(scan)}, {}) == []


def test_noise_given_as_a_scan_is_flagged_and_real_scans_are_not():
    """Neighbouring voxels of a scan correlate; of noise they do not. pydicom's real CT and
    MR pass."""
    import os

    import pydicom

    noise = np.random.default_rng(0).integers(-1000, 1500, (20, 64, 64)).astype(np.int16)
    for task, role in (("oar-ct", "ct"), ("oar-mr", "mr")):
        values = noise if role == "ct" else noise + 1000
        [flag] = quality.check_inputs(get_task(task), {role: image(values)}, {})
        assert flag.check == "modality" and "looks like noise" in flag.reason
    folder = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    for name, task, role in (("CT_small.dcm", "oar-ct", "ct"), ("MR_small.dcm", "oar-mr", "mr")):
        scan = sitk.ReadImage(os.path.join(folder, name))
        flags = quality.check_inputs(get_task(task), {role: scan}, {})
        assert not any("noise" in f.reason for f in flags), flags


def test_oblique_acquisitions_are_flagged_and_flips_or_permutations_are_not():
    hu, _ = ct_phantom()
    permuted = (0.0, -1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0)
    assert quality.check_inputs(get_task("oar-ct"), {"ct": image(hu, direction=permuted)},
                                {}) == []
    angle = np.radians(12.0)
    tilted = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle), 0.0, np.sin(angle),
              np.cos(angle))
    [flag] = quality.check_inputs(get_task("oar-ct"), {"ct": image(hu, direction=tilted)}, {})
    assert flag.check == "oblique" and "12.0 degrees" in flag.reason


def test_missing_imaging_roles_and_unused_files_are_flagged_masks_are_not():
    brain = get_task("brain")
    flags = quality.check_inputs(brain, {}, {"missing": ["flair"], "unused": ["notes"]})
    assert checks(flags) == [("missing", "flair"), ("unused", "notes")]
    assert quality.check_inputs(get_task("staging"), {}, {"missing": ["roi"]}) == []


def test_spacing_and_field_of_view_outside_the_training_range_are_flagged(tmp_path):
    hu, _ = ct_phantom()
    paths = []
    for i, spacing in enumerate([(0.8, 0.8, 3.0), (1.0, 1.0, 2.5)]):
        paths.append(tmp_path / f"c{i}.nii.gz")
        sitk.WriteImage(image(hu, spacing), str(paths[-1]))
    dataset = Dataset(tmp_path, "folders", [Case(f"c{i}", {"ct": p}) for i, p in
                                            enumerate(paths)])
    geometry = dataset.provenance("ct", train=["c0", "c1"])["geometry"]
    assert geometry["spacing_mm"] == {"min": [0.8, 0.8, 2.5], "max": [1.0, 1.0, 3.0]}
    task = get_task("oar-ct")
    # the same geometry in another storage order is no flag (sorted per axis)
    assert quality.check_inputs(task, {"ct": image(hu.transpose(2, 1, 0), (3.0, 0.9, 0.9))},
                                {}, geometry) == []
    flags = quality.check_inputs(task, {"ct": image(hu, (0.9, 0.9, 10.0))}, {}, geometry)
    assert checks(flags) == [("extent", "ct"), ("spacing", "ct")]
    assert "outside what the model was trained on" in flags[0].reason


def labels_prediction(task_name, labels, reference, probabilities=None, **details):
    task = get_task(task_name)
    return Prediction(task=task.name, model={}, images={task.reference_role: reference},
                      display_role=task.reference_role, segments=task.segments,
                      labels=image(labels.astype(np.uint8), reference.GetSpacing()),
                      probabilities=probabilities or {}, details=details)


def test_output_flags_each_with_its_reason():
    hu, _ = ct_phantom((40, 64, 64))
    reference = image(hu, (2.0, 2.0, 2.0))  # 8 mm^3 per voxel
    labels = np.zeros(hu.shape, np.uint8)
    labels[10:20, 28:36, 12:20] = 1  # femoral head L: 640 voxels = 5.1 mL (too small)
    labels[10:20, 28:36, 40:48] = 2  # femoral head R: 5.1 mL, also in two pieces
    labels[30:34, 28:36, 40:48] = 2
    labels[0:6, 30:34, 30:34] = 3  # bladder touching the first slice
    labels[10:30, 2:6, 28:36] = 5  # nodal CTV partly in the air around the body
    probability = np.full(hu.shape, 0.9, np.float32)
    probability[labels == 3] = 0.3
    prediction = labels_prediction("oar-ct", labels, reference,
                                   {"Bladder": image(probability, (2.0, 2.0, 2.0))})
    flags = quality.check_prediction(get_task("oar-ct"), prediction)
    assert checks(flags) == [
        ("border", "Bladder"), ("components", "Femoral head R"), ("low_probability", "Bladder"),
        ("outside_body", "Nodal CTV"), ("volume", "Bladder"), ("volume", "Bowel bag"),
        ("volume", "Femoral head L"), ("volume", "Femoral head R"), ("volume", "Nodal CTV")]
    reasons = {(f.check, f.subject): f.reason for f in flags}
    assert reasons[("volume", "Bowel bag")] == "Bowel bag is empty; expected at least 50 mL"
    assert "in 2 pieces" in reasons[("components", "Femoral head R")]
    assert "first k slice" in reasons[("border", "Bladder")]
    assert "0.30" in reasons[("low_probability", "Bladder")]


def test_a_plausible_segmentation_raises_no_output_flag():
    task = get_task("oar-ct")
    hu, _ = ct_phantom((80, 96, 96))
    reference = image(hu, (3.0, 3.0, 3.0))  # 27 mm^3 per voxel
    labels = np.zeros(hu.shape, np.uint8)
    labels[10:20, 40:50, 20:30] = 1  # 27 mL
    labels[10:20, 40:50, 60:70] = 2
    labels[25:40, 40:52, 40:52] = 3  # 58 mL
    labels[40:70, 30:60, 30:60] = 4  # 729 mL
    labels[45:60, 62:70, 40:50] = 5  # 32 mL
    assert quality.check_prediction(task, labels_prediction("oar-ct", labels, reference)) == []


@pytest.mark.parametrize(("p_t3", "flagged"), [(0.45, True), (0.58, True), (0.65, False),
                                               (0.05, False)])
def test_a_stage_close_to_its_threshold_is_flagged(p_t3, flagged):
    task = get_task("staging")
    t2w = image(np.ones((4, 8, 8), np.float32))
    prediction = Prediction(task="staging", model={}, images={"t2w": t2w}, display_role="t2w",
                            class_probabilities={"T2": 1 - p_t3, "T3": p_t3},
                            details={"threshold": 0.5})
    flags = quality.check_prediction(task, prediction)
    assert bool(flags) == flagged
    if flagged:
        assert flags[0].check == "near_threshold" and "P(T3)" in flags[0].reason


def test_a_registration_that_worsens_alignment_is_flagged():
    task = get_task("rectal")
    rng = np.random.default_rng(0)
    smooth = sitk.SmoothingRecursiveGaussian(image(rng.normal(size=(16, 48, 48))
                                                   .astype(np.float32)), 2.0)
    shifted = sitk.GetArrayFromImage(smooth)
    moved = image(np.roll(shifted, 6, axis=2))
    prediction = Prediction(task="rectal", model={}, images={"dwi_b0": smooth, "t2w": moved},
                            display_role="dwi_b0")
    [flag] = quality.check_prediction(task, prediction, {"t2w": smooth})
    assert flag.check == "registration" and "worse" in flag.reason
    prediction.images["t2w"] = smooth
    assert quality.check_prediction(task, prediction, {"t2w": moved}) == []


def test_plausible_ranges_live_in_the_task_declarations():
    for task_name in ("rectal", "oar-ct", "oar-mr", "brain"):
        for segment in get_task(task_name).segments:
            assert segment.plausible != Plausible(), (task_name, segment.name)
            low, high = segment.plausible.volume_ml
            assert 0 <= low < high
    assert get_task("staging").uncertain_margin > 0


def test_the_training_geometry_of_a_dicom_cohort_comes_from_its_slice_headers(tmp_path):
    from oncoseg import verbs
    from oncoseg.datasets import read_dataset

    verbs.phantom("oar-ct", tmp_path / "ct", cases=1, seed=2)
    dataset = read_dataset(tmp_path / "ct", "rtstruct", roles=["ct"])
    image = dataset.cases[0].read_stored("ct")
    geometry = dataset.provenance("ct")["geometry"]
    assert geometry["spacing_mm"]["min"] == pytest.approx(sorted(image.GetSpacing()), abs=1e-3)
    extent = sorted(np.asarray(image.GetSpacing()) * image.GetSize())
    assert geometry["extent_mm"]["max"] == pytest.approx(extent, abs=1e-2)


@pytest.mark.parametrize("task_name", ["rectal", "oar-ct", "oar-mr", "staging", "brain"])
def test_every_demo_model_records_the_geometry_it_was_trained_on(task_name):
    """scripts/record_training_geometry.py drew each demo's phantoms again (docs/DEMO_MODELS.md
    seeds) and wrote their ranges; a cohort's spacing and extent checks compare with them."""
    from oncoseg.method import demo_model_file
    from oncoseg.modelfile import read_header

    metadata = read_header(demo_model_file(task_name)).metadata
    geometry = metadata.provenance["dataset"]["geometry"]
    for key in ("spacing_mm", "extent_mm"):
        low, high = geometry[key]["min"], geometry[key]["max"]
        assert len(low) == 3 and all(0 < a <= b for a, b in zip(low, high, strict=True))


def test_a_label_map_given_as_a_scan_is_flagged_for_either_modality():
    _, body = ct_phantom()
    labels = body.astype(np.uint8) * 3  # 0 and 3
    for task, role in (("oar-ct", "ct"), ("oar-mr", "mr"), ("staging", "t2w")):
        [flag] = quality.check_inputs(get_task(task), {role: image(labels)}, {})
        modality = get_task(task).role(role).modality
        assert flag.reason == f"{role} holds only 2 distinct values (0, 3): a label map or a " \
            f"mask, not {'an' if modality == 'MR' else 'a'} {modality} scan"
    assert quality.check_inputs(get_task("staging"), {"roi": image(labels)}, {}) == []  # a mask


def test_predict_says_what_the_quality_check_says_of_its_inputs(tmp_path):
    """A single case gets the cohort's modality flags as its first notes (a label map given
    as the T2w of a staging run: before, staged without a word)."""
    from oncoseg import verbs

    rng = np.random.default_rng(0)
    t2w = image(np.where(rng.random((12, 64, 64)) > 0.5, 1, 0).astype(np.uint8))
    prediction = verbs.predict("staging", {"t2w": t2w}, "demo", {"without_roi": "centre"})
    assert prediction.messages[0] == "t2w holds only 2 distinct values (0, 1): a label map or " \
        "a mask, not an MR scan"


def test_a_skull_stripped_mr_whose_first_slices_are_zero_is_no_label_map():
    """BraTS volumes begin with tens of empty slices below the brain: the distinct values are
    counted over the whole volume, not its first slices."""
    rng = np.random.default_rng(0)
    mr = np.zeros((155, 96, 96), np.float32)
    mr[60:140, 20:76, 20:76] = rng.uniform(100, 900, (80, 56, 56))
    assert quality.check_inputs(get_task("brain"), {"flair": image(mr)}, {}) == []
