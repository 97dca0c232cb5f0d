"""OAR MR (GI tract, paper 001) end to end on the Kaggle layout: the layout read as the phantom
generator writes it, training with exclusions and a tuned threshold, the two-stage gate,
prediction on a scans folder, and the Kaggle score against a plain implementation."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_runs import phantom_fixture, trained_fixture
from scipy.spatial.distance import directed_hausdorff

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.datasets.layouts import read_dataset
from oncoseg.io.volumes import read_image
from oncoseg.modelfile import read_header
from oncoseg.oar.mr.evaluation import evaluate_mr_cases
from oncoseg.oar.mr.preprocessing import ORGANS, neighbours, random_crop, smooth_labels
from oncoseg.oar.mr.training import _step

TINY = ["--set", "size=64", "--set", "width=4", "--set", "max_epochs=1", "--set",
        "batch_size=16", "--progress", "none"]
kaggle = phantom_fixture("oar-mr", 3, seed=31, folder="uw-madison")
tiny_model = trained_fixture("oar-mr", "kaggle", *TINY)  # the run folder


def plain_rle_masks(root):
    """train.csv decoded without OncoSeg: {(scan, organ): {slice number: mask}}."""
    masks = {}
    for row in csv.DictReader((root / "train.csv").open()):
        case, day, _, number = row["id"].split("_")
        scan = f"{case}_{day}"
        scans = root / "train" / case / scan / "scans"
        name = next(scans.glob(f"slice_{number}_*.png")).name
        width, height = int(name.split("_")[2]), int(name.split("_")[3])
        flat = np.zeros(width * height, bool)
        values = [int(v) for v in row["segmentation"].split()]
        for start, length in zip(values[0::2], values[1::2], strict=True):
            flat[start - 1:start - 1 + length] = True
        masks.setdefault((scan, row["class"]), {})[int(number)] = flat.reshape(height, width)
    return masks


def plain_kaggle_score(predicted, truth):
    """The competition's recipe: Dice over every (slice, organ) row, 1 when both are empty;
    3D Hausdorff per (scan, organ) on voxel indices over the volume diagonal."""
    dices, hausdorffs = [], []
    for key, reference in truth.items():
        prediction = predicted[key]
        for p, r in zip(prediction, reference, strict=True):
            total = p.sum() + r.sum()
            dices.append(1.0 if total == 0 else 2.0 * (p & r).sum() / total)
        if not prediction.any() and not reference.any():
            hausdorffs.append(1.0)
        elif not prediction.any() or not reference.any():
            hausdorffs.append(0.0)
        else:
            a, b = np.argwhere(prediction), np.argwhere(reference)
            distance = max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])
            hausdorffs.append(1 - min(distance / np.sqrt(np.sum(np.square(reference.shape))),
                                      1))
    return 0.4 * np.mean(dices) + 0.6 * np.mean(hausdorffs)


def test_the_layout_reads_as_the_generator_wrote_it(kaggle):
    data = read_dataset(kaggle)
    assert data.layout == "kaggle-gi"
    plain = plain_rle_masks(kaggle)
    from oncoseg.oar.mr.training import case_masks

    for case in data.cases:
        image = case.read("mr")
        assert image.GetSpacing() == pytest.approx((1.5, 1.5, 3.0))
        masks = case_masks(case, image)
        for index, organ in enumerate(ORGANS):
            for number, mask in plain.get((case.id, organ), {}).items():
                assert np.array_equal(masks[index, number - 1], mask)
        assert masks.any()
    # the patient is the split unit: both days of a patient share it
    assert {c.patient for c in data.cases} == {"case1", "case2", "case3"}


def test_the_kaggle_score_matches_a_plain_implementation(kaggle, tmp_path):
    """Predictions that are right, shifted, missing or spurious, scored both ways."""
    data = read_dataset(kaggle)
    plain = plain_rle_masks(kaggle)
    truth, predicted = {}, {}
    rng = np.random.default_rng(0)
    order = iter(data.cases)  # evaluation visits the cases in the data set's order

    def fake_segmenter(image):
        depth, height, width = sitk.GetArrayViewFromImage(image).shape
        case = next(order)
        masks = np.zeros((3, depth, height, width), bool)
        for index, organ in enumerate(ORGANS):
            reference = np.zeros((depth, height, width), bool)
            for number, mask in plain.get((case.id, organ), {}).items():
                reference[number - 1] = mask
            kind = rng.integers(4)
            guess = {0: reference, 1: np.roll(reference, (1, 3), axis=(0, 2)),
                     2: np.zeros_like(reference),
                     3: reference | (rng.random(reference.shape) > 0.9995)}[int(kind)]
            masks[index] = guess
            truth[(case.id, organ)], predicted[(case.id, organ)] = reference, guess
        return masks

    summary = evaluate_mr_cases(data, fake_segmenter, tmp_path / "eval")
    assert len(truth) == 3 * len(data.cases)
    assert summary["kaggle"]["score"] == pytest.approx(plain_kaggle_score(predicted, truth),
                                                       abs=1e-9)
    rows = list(csv.DictReader((tmp_path / "eval" / "cases.csv").open()))
    assert {"dice_stomach", "hausdorff_score_large_bowel", "nonempty_dice_small_bowel"} <= \
        set(rows[0])


def test_training_stores_the_threshold_it_chose(tiny_model):
    meta = read_header(tiny_model / "model.safetensors").metadata
    assert meta.task == "oar-mr" and meta.architecture == "fcn-resnet50"
    # one slice in, as the blog feeds it (context=0 by default)
    assert meta.architecture_args == {"in_channels": 1, "classes": 3, "width": 4,
                                      "gate": False}
    assert meta.preprocessing["context"] == 0
    search = meta.provenance["threshold_search"]
    assert meta.outputs["threshold"] == search["chosen"]
    assert search["dice"][f"{search['chosen']:.2f}"] == max(search["dice"].values())
    assert meta.preprocessing["size"] == 64


def test_a_flagged_scan_excludes_its_whole_patient(kaggle, tmp_path):
    day = read_dataset(kaggle).cases[0].id  # a scan of case1
    out = tmp_path / "run"
    assert main(["train", "oar-mr", "--dataset", str(kaggle), "--output", str(out), *TINY,
                 "--set", f"exclude={day}"]) == 0
    dataset = read_header(out / "model.safetensors").metadata.provenance["dataset"]
    assert dataset["excluded_patients"] == ["case1"]
    assert not any(i.startswith("case1_") for i in dataset["train"] + dataset["validation"])


def test_an_unknown_exclusion_is_refused(kaggle, tmp_path, capsys):
    assert main(["train", "oar-mr", "--dataset", str(kaggle), "--output", str(tmp_path / "r"),
                 *TINY, "--set", "exclude=case99"]) == 2
    assert "case99" in capsys.readouterr().err
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_two_stage_model_gates_organs_per_slice(kaggle, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "oar-mr", "--dataset", str(kaggle), "--output", str(out), *TINY,
                 "--set", "two_stage=true"]) == 0
    assert read_header(out / "model.safetensors").metadata.architecture_args["gate"] is True
    pred = tmp_path / "pred"
    scans = read_dataset(kaggle).cases[0].images["mr"]
    assert main(["predict", "oar-mr", "--input", f"mr={scans}", "--model",
                 str(out / "model.safetensors"), "--output", str(pred),
                 "--progress", "none"]) == 0
    assert json.loads((pred / "result.json").read_text())["details"]["two_stage"] is True


def test_the_gate_trains_on_every_slice_and_segmentation_on_slices_with_organs():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.zeros(2, 3, 4, 4))
            self.gate = torch.nn.Parameter(torch.zeros(2, 3))

        def forward(self, x):
            return self.logits, self.gate

    model = Fixed()
    masks = torch.zeros(2, 3, 4, 4)
    masks[1, 0, 1, 1] = 1  # only the second slice holds an organ
    present = masks.flatten(2).amax(2) > 0
    loss, n = _step(model, (torch.zeros(2, 3, 4, 4), masks, present), "cpu")
    loss.backward()
    assert n == 2
    assert torch.all(model.logits.grad[0] == 0) and torch.any(model.logits.grad[1] != 0)
    assert torch.all(model.gate.grad != 0)


def test_slice_stacks_label_smoothing_and_crops():
    assert neighbours(4, 1, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert neighbours(5, 1, 2)[2].tolist() == [0, 2, 4]
    torch.manual_seed(0)
    mask = torch.zeros(1, 200, 200)
    mask[0, 1::3, 1::3] = 1  # isolated pixels: each has 8 neighbours of its own
    grown = smooth_labels(mask, 0.4)
    assert torch.all(grown >= mask)
    added = float((grown - mask).sum() / mask.sum())
    assert added == pytest.approx(8 * 0.4, abs=0.1)
    image, masks = random_crop(torch.rand(3, 64, 64), (torch.rand(3, 64, 64) > 0.5).float(), 10)
    assert image.shape == (3, 64, 64) and masks.shape == (3, 64, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_a_coronal_volume_or_a_2d_image_is_refused(tiny_model, tmp_path, capsys):
    volume = sitk.GetImageFromArray(np.random.default_rng(0).random((20, 32, 32))
                                    .astype(np.float32))
    volume.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))  # coronal slices,
    volume.SetSpacing((1.5, 1.5, 4.0))  # thick ones: it cannot be read as axial slices
    sitk.WriteImage(volume, str(tmp_path / "coronal.nii.gz"))
    flat = sitk.GetImageFromArray(np.random.default_rng(0).random((32, 32)).astype(np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    for name, expected in (("coronal.nii.gz", "not an axial series"), ("flat.nii.gz", "2D")):
        code = main(["predict", "oar-mr", "--input", f"mr={tmp_path / name}", "--model",
                     str(tiny_model / "model.safetensors"), "--output",
                     str(tmp_path / f"out-{name}"), "--progress", "none"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert expected in err
    assert not list(tmp_path.glob("out-*"))


def test_the_model_fixes_its_slice_stacks(kaggle, tiny_model, tmp_path, capsys):
    scans = read_dataset(kaggle).cases[0].images["mr"]
    code = main(["predict", "oar-mr", "--input", f"mr={scans}", "--model",
                 str(tiny_model / "model.safetensors"), "--output", str(tmp_path / "o"),
                 "--set", "size=266", "--progress", "none"])
    assert code == 2
    assert "fixed by the model" in capsys.readouterr().err


def test_the_demo_model_keeps_its_25d_stack():
    """The default input is one slice (the blog's); the demo model was trained on 3-slice
    stacks (context=1), which its file fixes, so it predicts exactly as before."""
    from oncoseg.method import load_task_model, model_settings
    from oncoseg.oar.mr.config import OarMrConfig

    assert OarMrConfig().context == 0 and OarMrConfig().channels == 1
    model = load_task_model("oar-mr")
    assert model.metadata.preprocessing["context"] == 1
    assert model.metadata.architecture_args["in_channels"] == 3
    settings = model_settings("oar-mr", model.metadata)
    assert settings.context == 1 and settings.channels == 3


def test_demo_model_on_unseen_phantoms(tmp_path):
    """The full figures are in docs/RESULTS.md; here two patients and lower bars."""
    verbs.phantom("oar-mr", tmp_path / "data", cases=2, seed=4343)
    summary = verbs.evaluate("oar-mr", tmp_path / "data", tmp_path / "eval", "demo")
    assert summary["kaggle"]["score"] >= 0.80
    for organ in ORGANS:
        assert summary["kaggle"]["nonempty_slice_dice"][organ] >= 0.6, organ


def test_predict_with_the_demo_model_on_a_scans_folder(tmp_path):
    verbs.phantom("oar-mr", tmp_path / "data", cases=1, seed=4344)
    scans = read_dataset(tmp_path / "data").cases[0].images["mr"]
    out = tmp_path / "pred"
    assert main(["predict", "oar-mr", "--input", f"mr={scans}", "--output", str(out),
                 "--progress", "none"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert [s["name"] for s in result["segments"]] == ["Stomach", "Small bowel", "Large bowel"]
    assert any("demo model" in m for m in result["messages"])
    labels = read_image(out / "labels.nii.gz")
    assert labels.GetSize() == read_image(scans).GetSize()
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) == {0, 1, 2, 3}
    assert (out / "overview.png").is_file()


def test_a_tilted_scans_labels_are_its_maps_thresholded_on_its_own_grid():
    """A resliced scan's labels come from the maps on the scan's grid, as the upright ones do
    on theirs: the label map and the maps written beside it agree voxel for voxel."""
    from scipy.spatial.transform import Rotation

    from oncoseg.oar.mr.predict import label_map
    from oncoseg.oar.mr.task import GI_SEGMENTS
    from oncoseg.phantoms import gi
    from oncoseg.phantoms.common import Storage, case_rng, grid_points, to_image

    tilt = Rotation.from_euler("xyz", (20, 0, 0), degrees=True).as_matrix()
    grid = Storage("LPS", tuple(tilt.ravel())).grid(
        (gi.SIZE, gi.SIZE, gi.SLICES), (gi.PIXEL, gi.PIXEL, gi.SLICE_THICKNESS_MM))
    values, _ = gi.render(grid_points(grid), case_rng(6107, 0), width=gi.PIXEL)
    scan = to_image(np.clip(values * 20000, 0, 65535).astype(np.uint16), grid,
                    sitk.sitkUInt16)
    prediction = verbs.predict("oar-mr", {"mr": scan})
    np.testing.assert_allclose(prediction.labels.GetDirection(), scan.GetDirection())
    maps = np.stack([sitk.GetArrayFromImage(prediction.probabilities[s.name])
                     for s in GI_SEGMENTS])
    labels = sitk.GetArrayFromImage(prediction.labels)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(
        labels, label_map(maps >= prediction.details["threshold"], maps))
