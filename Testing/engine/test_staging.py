"""StagingCNN (paper 002): every Table 2 variant, the aggregations and losses, pre-processing
and its refusals, cross-validation from the command line, and the demo model."""

import itertools
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from sklearn.metrics import roc_auc_score

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.datasets.layouts import read_dataset
from oncoseg.staging.augment import AugmentRanges, augment
from oncoseg.staging.config import AGGREGATIONS, VARIANTS
from oncoseg.staging.losses import batch_hard_triplet, focal_loss
from oncoseg.staging.network import StagingNet, aggregate, layer_kinds
from oncoseg.staging.preprocessing import n4_correct, representative_slices
from oncoseg.staging.training import classification_figures, stratified_folds

# Table 2 of the paper, "# params": 1 input channel, one output logit
TABLE_2 = {"f-R2D": 2796001, "f-R3D": 8291873, "f-R(2+1)D": 8294563, "f-MC2": 2799137,
           "f-MC3": 2872865, "f-MC4": 3130913, "f-MC5": 4163105, "f-rMC2": 8288737,
           "f-rMC3": 8215009, "f-rMC4": 7956961, "f-rMC5": 6924769}
TINY = ["--set", "size=48", "--set", "filters=4", "--set", "max_epochs=1", "--set",
        "batch_size=4", "--set", "tta=2", "--set", "n4=false", "--progress", "none"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_table_2(variant):
    count = StagingNet(variant, "average").paper_parameter_count()
    assert abs(count / TABLE_2[variant] - 1) <= 0.05, (count, TABLE_2[variant])


def test_layer_kinds_follow_the_papers_naming():
    assert layer_kinds("f-rMC5") == ["2d", "2d", "2d", "2d", "3d"]
    assert layer_kinds("f-MC2") == ["3d", "2d", "2d", "2d", "2d"]
    assert layer_kinds("f-R(2+1)D") == ["2+1d"] * 5
    with pytest.raises(ValueError):
        layer_kinds("f-MC6")
    from oncoseg.errors import InputError
    from oncoseg.staging.config import StagingConfig

    with pytest.raises(InputError, match="variant"):
        StagingConfig.from_overrides({"variant": "f-MC6"})
    with pytest.raises(InputError, match="aggregation"):
        StagingConfig(aggregation="sum")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_on_256_x_256_x_n_and_backpropagates(variant):
    torch.manual_seed(0)
    network = StagingNet(variant, "bilinear")
    for depth in (8, 24):
        out = network(torch.randn(1, 1, depth, 256, 256))
        assert out["slice_logits"].shape == (1, depth)
        assert out["volume_logit"].shape == (1,)
        network.zero_grad()
        (out["volume_logit"].sum() + out["slice_logits"].sum()).backward()
        assert network.stem[0].weight.grad is not None if variant != "f-R(2+1)D" \
            else network.stem[0][0].weight.grad is not None


def test_2d_layers_never_mix_slices():
    """f-R2D: changing one slice changes only that slice's score."""
    network = StagingNet("f-R2D", "average", filters=4).eval()
    volume = torch.randn(1, 1, 5, 32, 32)
    changed = volume.clone()
    changed[0, 0, 2] += 1.0
    with torch.no_grad():
        a = network(volume)["slice_logits"]
        b = network(changed)["slice_logits"]
    differs = (a - b).abs()[0] > 1e-6
    assert differs.tolist() == [False, False, True, False, False]


def test_aggregations():
    features = torch.randn(3, 6, 5)
    assert torch.allclose(aggregate(features, "average"), features.mean(2))
    assert torch.allclose(aggregate(features, "max"), features.amax(2))
    weights = torch.exp(features) / torch.exp(features).sum(2, keepdim=True)
    assert torch.allclose(aggregate(features, "attention"), (weights * features).sum(2))
    bilinear = aggregate(features, "bilinear")
    assert bilinear.shape == (3, 36)
    assert torch.allclose(bilinear.norm(dim=1), torch.ones(3), atol=1e-5)
    for how in AGGREGATIONS:
        assert StagingNet("f-R2D", how, filters=4)(torch.randn(2, 1, 3, 32, 32))[
            "volume_logit"].shape == (2,)


def test_average_aggregation_scores_the_volume_as_the_mean_slice():
    network = StagingNet("f-R2D", "average", filters=4).eval()
    with torch.no_grad():
        out = network(torch.randn(1, 1, 4, 32, 32))
    assert out["volume_logit"][0] == pytest.approx(float(out["slice_logits"].mean()), abs=1e-5)


def test_focal_loss():
    logits, targets = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([1, 0, 0])
    assert focal_loss(logits, targets, 0.0) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float())))
    # confident right answers cost less than with cross-entropy
    assert focal_loss(logits, targets, 2.0) < focal_loss(logits, targets, 0.0)


def brute_force_triplet(features, labels, margin):
    """Every anchor's hardest triplet, found by enumerating all (positive, negative) pairs."""
    x = torch.nn.functional.normalize(features, dim=1)
    losses = []
    for a in range(len(labels)):
        best = None
        for p, n in itertools.product(range(len(labels)), repeat=2):
            if p == a or labels[p] != labels[a] or labels[n] == labels[a]:
                continue
            value = float(((x[a] - x[p]) ** 2).sum() - ((x[a] - x[n]) ** 2).sum() + margin)
            best = value if best is None else max(best, value)
        if best is not None:
            losses.append(max(best, 0.0))
    return float(np.mean(losses))


def test_batch_hard_triplet_matches_brute_force():
    rng = torch.Generator().manual_seed(1)
    for _ in range(5):
        features = torch.randn(7, 4, generator=rng)
        labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
        assert float(batch_hard_triplet(features, labels, 0.2)) == pytest.approx(
            brute_force_triplet(features, labels, 0.2), abs=1e-5)
    assert float(batch_hard_triplet(torch.randn(3, 4), torch.tensor([1, 1, 1]))) == 0.0


def test_classification_figures_match_sklearn():
    rng = np.random.default_rng(3)
    stages = rng.integers(0, 2, 30)
    p = np.clip(stages * 0.3 + rng.random(30) * 0.7, 0, 1)
    figures = classification_figures(stages, p, 0.5)
    assert figures["auc"] == pytest.approx(roc_auc_score(stages, p))
    called = p >= 0.5
    assert figures["recall_t3"] == pytest.approx(called[stages == 1].mean())
    assert figures["recall_t2"] == pytest.approx((~called[stages == 0]).mean())


def test_augmentation_moves_every_slice_alike():
    volume = torch.randn(1, 40, 40).expand(4, -1, -1).clone()
    moved = augment(volume, AugmentRanges(), torch.Generator().manual_seed(0))
    assert moved.shape == volume.shape
    assert torch.allclose(moved[0], moved[3], atol=1e-5)
    assert not torch.allclose(moved, volume)
    still = AugmentRanges(shift=0, scale=0, rotate_deg=0, elastic_px=0, flip=0, brightness=0,
                          contrast=0, blur_probability=0)
    assert torch.allclose(augment(volume, still, torch.Generator()), volume, atol=1e-4)


def test_n4_flattens_a_bias_field():
    _, y, x = np.mgrid[0:8, 0:64, 0:64]
    body = ((y - 32) ** 2 + (x - 32) ** 2) < 26 ** 2
    field = np.exp(0.5 * (x - 32) / 32)
    image = sitk.GetImageFromArray((body * 100.0 * field + 1).astype(np.float32))
    corrected = sitk.GetArrayFromImage(n4_correct(image))
    inside = body & (np.abs(y - 32) < 10)
    cv = lambda a: a[inside].std() / a[inside].mean()  # noqa: E731
    assert cv(corrected) < 0.5 * cv(body * 100.0 * field + 1)


def test_representative_slices_are_the_largest_sections():
    label = np.zeros((6, 4, 4), bool)
    label[1, :1] = label[2, :3] = label[3, :4] = label[4, :2] = True
    assert representative_slices(label) == [2, 3, 4]


def test_folds_hold_each_patient_once_and_both_stages(tmp_path):
    verbs.phantom("staging", tmp_path / "data", cases=9, seed=2)
    cases = read_dataset(tmp_path / "data").cases
    folds = stratified_folds(cases, 3, seed=0)
    assert sorted(c.id for fold in folds for c in fold) == sorted(c.id for c in cases)
    assert all({c.info["stage"] for c in fold} == {"T2", "T3"} for fold in folds)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("staging") / "data"
    verbs.phantom("staging", root, cases=6, seed=21)
    return root


def test_cross_validation_from_the_command_line(small_set, tmp_path):
    out = tmp_path / "cv"
    assert main(["train", "staging", "--dataset", str(small_set), "--output", str(out),
                 "--folds", "3", *TINY]) == 0
    rows = (out / "folds.csv").read_text().splitlines()
    assert rows[0] == "fold,cases,auc,accuracy,recall_t2,recall_t3,ece" and len(rows) == 4
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds"] == 3 and set(summary["auc"]) == {"mean", "sd"}
    assert set(summary["ece"]) == {"mean", "sd"}
    assert all((out / f"fold_{k}" / "model.safetensors").is_file() for k in (1, 2, 3))


def test_folds_on_a_task_without_cross_validation(tmp_path, capsys):
    assert main(["train", "oar-mr", "--dataset", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--folds", "3"]) == 2
    assert "no cross-validation" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model(small_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("staging_model") / "run"
    assert main(["train", "staging", "--dataset", str(small_set), "--output", str(out),
                 *TINY]) == 0
    return out / "model.safetensors"


def test_predict_gives_p_t3_slice_scores_and_says_how_it_cropped(small_set, tiny_model,
                                                                 tmp_path, capsys):
    t2w = small_set / "staging_000" / "t2w.nii.gz"
    out = tmp_path / "auto"
    # no ROI: refused, saying how to give one (a square at a pelvic scan's centre misses
    # rectum and tumour), unless the centred square is asked for
    assert main(["predict", "staging", "--input", f"t2w={t2w}", "--model", str(tiny_model),
                 "--output", str(out)]) == 2
    assert "roi: none was given" in capsys.readouterr().err and not out.exists()
    assert main(["predict", "staging", "--input", f"t2w={t2w}", "--model", str(tiny_model),
                 "--output", str(out), "--set", "without_roi=centre"]) == 0
    result = json.loads((out / "result.json").read_text())
    details = result["details"]
    assert details["stage"] in ("T2", "T3") and 0 <= details["p_t3"] <= 1
    assert len(details["slice_p_t3"]) == sitk.ReadImage(str(t2w)).GetSize()[2]
    assert details["roi"]["source"] == "automatic"
    assert any("no ROI given" in m for m in result["messages"])
    roi = read_dataset(small_set).cases[0].info["roi_lps_mm"]
    out = tmp_path / "box"
    assert main(["predict", "staging", "--input", f"t2w={t2w}", "--model", str(tiny_model),
                 "--roi=" + ",".join(str(v) for v in roi), "--output", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["details"]["roi"]["source"] == "box"


@pytest.mark.parametrize("case", ["2d", "two_slices", "roi_outside"])
def test_bad_inputs_exit_2_and_write_nothing(case, small_set, tiny_model, tmp_path, capsys):
    t2w = sitk.ReadImage(str(small_set / "staging_000" / "t2w.nii.gz"))
    args = []
    if case == "2d":
        image, expected = t2w[:, :, 5], "2D"
    elif case == "two_slices":
        image, expected = t2w[:, :, 4:6], "2 slices"
    else:
        image, expected = t2w, "outside the t2w image"
        args = ["--roi", "500,500,500,600,600,600"]
    sitk.WriteImage(image, str(tmp_path / "in.nii.gz"))
    code = main(["predict", "staging", "--input", f"t2w={tmp_path / 'in.nii.gz'}", "--model",
                 str(tiny_model), "--output", str(tmp_path / "out"), *args])
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_roi_on_a_task_without_one(tmp_path, capsys):
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((5, 16, 16)).astype(np.float32))
    sitk.WriteImage(image, str(tmp_path / "mr.nii.gz"))
    assert main(["predict", "oar-mr", "--input", f"mr={tmp_path / 'mr.nii.gz'}", "--roi",
                 "0,0,0,1,1,1", "--output", str(tmp_path / "o")]) == 2
    assert "--roi" in capsys.readouterr().err


def test_demo_model_on_unseen_phantoms(tmp_path):
    """A regression bar for the shipped demo model: AUC 1.0 and accuracy 1.0 on these 8 cases,
    AUC 0.99 on the 40 of docs/RESULTS.md (issue 7's goal: >= 0.95). Its P(T3) is calibrated
    (issue 20): it spans the range its accuracy justifies, not 0.49-0.52, and the evaluation
    reports the calibration error with a reliability diagram."""
    verbs.phantom("staging", tmp_path / "data", cases=8, seed=4343, orientation="random")
    summary = verbs.evaluate("staging", tmp_path / "data", tmp_path / "eval", "demo")
    assert summary["classification"]["auc"] >= 0.9, summary["classification"]
    assert summary["classification"]["accuracy"] >= 0.75, summary["classification"]
    assert summary["threshold"] == 0.5
    calibration = summary["calibration"]
    assert calibration["calibrated"] and summary["model_calibration"]["method"] == "platt"
    low, high = calibration["p_t3_range"]
    assert low < 0.2 and high > 0.8, calibration["p_t3_range"]
    assert calibration["ece"] < calibration["ece_uncalibrated"], calibration
    assert "10 equal-width bins" in calibration["binning"]
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 0


def test_an_roi_of_any_size_is_read_at_the_models_crop_scale(small_set):
    """A reader's box round rectum and tumour is 60 mm one day and 100 mm the next; the
    network reads a square of the model's crop_mm centred on it, whatever its size (a mask
    likewise), and the result says so. 'box' is the paper's reading: the ROI as drawn."""
    from oncoseg.staging.config import StagingConfig
    from oncoseg.staging.preprocessing import crop_box, crop_note

    case = read_dataset(small_set).cases[0]
    t2w = case.read("t2w")
    drawn = np.array(case.info["roi_lps_mm"], float)  # the phantom's 80 mm square
    assert drawn[3:5] - drawn[:2] == pytest.approx([80.0, 80.0])
    config = StagingConfig(crop_mm=80.0, n4=False)
    exact, _ = crop_box(t2w, config, drawn)
    assert exact == crop_box(t2w, StagingConfig(crop_mm="box", n4=False), drawn)[0]
    assert crop_note(t2w, config, drawn, None) is None
    for grow in (-10.0, 10.0, 20.0):
        box = drawn + np.array([-grow, -grow, 0, grow, grow, 0])
        assert crop_box(t2w, config, box) == (exact, "box"), grow
        assert "the network read a 80 x 80 mm square centred on the ROI" in \
            crop_note(t2w, config, box, None)
        as_drawn, _ = crop_box(t2w, StagingConfig(crop_mm="box", n4=False), box)
        assert as_drawn != exact
    mask = sitk.Image(t2w.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(t2w)
    x0, x1, y0, y1 = exact
    mask[x0 + 15:x1 - 15, y0 + 15:y1 - 15, 2:5] = 1  # a tight mask round the same centre
    box, source = crop_box(t2w, config, roi_mask=mask)
    assert source == "mask" and all(abs(a - b) <= 1 for a, b in zip(box, exact, strict=True))


def test_training_crops_at_the_median_roi_side_and_records_it(small_set, tiny_model):
    from dataclasses import replace

    from oncoseg.modelfile import read_header
    from oncoseg.staging.config import StagingConfig
    from oncoseg.staging.training import training_crop_mm

    cases = read_dataset(small_set).cases
    config = StagingConfig()
    assert training_crop_mm(config, cases) == 80.0  # the phantoms' ROI boxes
    for case, side in zip(cases[:3], (60.0, 70.0, 100.0), strict=True):
        case.info["roi_lps_mm"] = [0.0, 0.0, 0.0, side, side / 2, 30.0]
    assert training_crop_mm(config, cases) == 80.0  # 60, 70, 80, 80, 80, 100
    assert training_crop_mm(config, cases[:3]) == 70.0
    for case in cases:
        case.info.pop("roi_lps_mm")
    assert training_crop_mm(replace(config, auto_roi_mm=90.0), cases) == 90.0
    assert training_crop_mm(StagingConfig(crop_mm="box"), cases) == "box"
    assert read_header(tiny_model).metadata.preprocessing["crop_mm"] == 80.0


def test_the_demo_stages_a_t2_tumour_whatever_size_the_reader_draws_its_roi(tmp_path):
    """One of the 40 unseen phantoms of docs/RESULTS.md (seed 1000, a T2 tumour): read as
    drawn (until 2026-12-07), its ROI shrunk by 10 mm on every side gave P(T3) 1.00, and
    grown by 10 mm 0.48; the demo, trained on 80 mm boxes, now reads an 80 mm square
    centred on any box."""
    from oncoseg.method import Hints

    verbs.phantom("staging", tmp_path / "data", cases=1, seed=1000)
    case = read_dataset(tmp_path / "data").cases[0]
    assert case.info["stage"] == "T2"
    t2w, drawn = case.read("t2w"), np.array(case.info["roi_lps_mm"], float)
    for grow in (0.0, -10.0, 10.0):
        box = drawn + np.array([-grow, -grow, 0, grow, grow, 0])
        result = verbs.predict("staging", {"t2w": t2w}, "demo",
                               hints=Hints(roi_lps_mm=box.tolist()))
        assert result.details["stage"] == "T2" and result.details["p_t3"] < 0.1, grow


def test_oncoseg_info_prints_the_tables_count(tmp_path, capsys):
    """A model file's parts: extractor + slice classifier is Table 2's count."""
    from oncoseg.modelfile import ModelMetadata, save_model

    network = StagingNet("f-R2D", "bilinear")
    meta = ModelMetadata(task="staging", architecture="staging-resnet18",
                         architecture_args={"variant": "f-R2D", "aggregation": "bilinear"},
                         inputs=["t2w"], preprocessing={}, outputs={"classes": ["T2", "T3"]})
    path = save_model(tmp_path / "m.safetensors", network.state_dict(), meta)
    assert main(["info", str(path), "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)["parameters_by_part"]
    assert sum(v for k, v in parts.items() if k != "volume_fc") == TABLE_2["f-R2D"]
    assert parts["volume_fc"] == 256 * 256 + 1


def test_voxels_too_coarse_for_the_automatic_roi_are_refused_in_words(tmp_path, capsys):
    """20 x 20 x 5 voxels of 190 mm: the 80 mm automatic ROI covers none of them (before:
    exit 1, torch's 'Input and output sizes should be greater than 0')."""
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1000, (5, 20, 20))
                                   .astype(np.float32))
    image.SetSpacing((190.0, 190.0, 190.0))  # 3.8 m across: within what a scan can span
    sitk.WriteImage(image, str(tmp_path / "coarse.nrrd"))
    assert main(["predict", "staging", "--input", f"t2w={tmp_path / 'coarse.nrrd'}",
                 "--output", str(tmp_path / "out"), "--device", "cpu",
                 "--set", "without_roi=centre"]) == 2
    assert "t2w: its voxels (190 x 190 mm in-plane) are too coarse for the automatic ROI" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_slices_too_small_for_bias_correction_are_refused_and_small_ones_staged(tmp_path,
                                                                                capsys):
    """300 x 4 voxel slices crashed N4 (exit 1, ITK's 'Refusing to change spacing from [1, 1,
    1] to [296, 0, 117]'); 18 x 20 ones are staged, N4 shrinking them less."""
    rng = np.random.default_rng(0)
    for name, shape in (("strip", (40, 4, 300)), ("small", (10, 20, 18))):
        image = sitk.GetImageFromArray(rng.uniform(0, 1000, shape).astype(np.float32))
        sitk.WriteImage(image, str(tmp_path / f"{name}.nrrd"))
    run = ["predict", "staging", "--device", "cpu", "--set", "without_roi=centre", "--input"]
    assert main([*run, f"t2w={tmp_path / 'strip.nrrd'}", "--output", str(tmp_path / "a")]) == 2
    assert "t2w: has slices of 300 x 4 voxels; staging needs at least 16 x 16" in \
        capsys.readouterr().err
    assert main([*run, f"t2w={tmp_path / 'small.nrrd'}", "--output", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "result.json").is_file()


def test_an_empty_roi_mask_is_named_empty_and_one_outside_as_outside(tmp_path):
    from oncoseg.errors import InputError
    from oncoseg.staging.config import StagingConfig
    from oncoseg.staging.preprocessing import crop_box

    image = sitk.GetImageFromArray(np.zeros((6, 32, 32), np.float32))
    empty = sitk.GetImageFromArray(np.zeros((6, 32, 32), np.uint8))
    with pytest.raises(InputError, match="roi: mask is empty"):
        crop_box(image, StagingConfig(), roi_mask=empty)
    outside = sitk.GetImageFromArray(np.ones((6, 32, 32), np.uint8))
    outside.SetOrigin((500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="roi: does not overlap t2w in physical space"):
        crop_box(image, StagingConfig(), roi_mask=outside)
