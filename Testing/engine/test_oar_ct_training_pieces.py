"""OAR CT: the partial-label loss of paper 003 and the 3D network's shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oncoseg.oar.ct.network import OarUNet3D
from oncoseg.oar.losses import partial_label_nll

BLADDER = 3


def reference_nll(logits, target, annotated):
    """Straightforward, voxel by voxel: sum the probabilities the case cannot tell apart."""
    p = torch.softmax(logits.double(), 1)
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        missing = [c for c in range(1, logits.shape[1]) if not annotated[b, c]]
        for index in np.ndindex(*target.shape[1:]):
            label = int(target[(b, *index)])
            probs = p[(b, slice(None), *index)]
            value = probs[0] + sum(probs[c] for c in missing) if label == 0 else probs[label]
            total -= float(torch.log(value))
            count += 1
    return total / count


def test_matches_a_voxel_by_voxel_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 3, 4, 5)
    target = torch.randint(0, 6, (2, 3, 4, 5))
    annotated = torch.tensor([[True] * 6, [True, True, True, False, True, False]])
    target[1][target[1] == 3] = 0  # an unannotated organ never appears in its case's labels
    target[1][target[1] == 5] = 0
    assert float(partial_label_nll(logits, target, annotated)) == pytest.approx(
        reference_nll(logits, target, annotated), rel=1e-5)


def test_all_annotated_is_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 4, 4, 4)
    target = torch.randint(0, 6, (2, 4, 4, 4))
    annotated = torch.ones(2, 6, dtype=torch.bool)
    assert float(partial_label_nll(logits, target, annotated)) == pytest.approx(
        float(F.cross_entropy(logits, target)), rel=1e-6)


def test_a_voxel_nobody_annotated_adds_nothing_and_learns_nothing():
    """nnU-Net's ignore label (a data set's dataset.json declares it; OncoSeg reads it as
    IGNORE_LABEL): whatever the network says there costs nothing and moves no weight, and the
    voxel still counts in the mean, so micro-batches still add up to the batch."""
    from oncoseg.datasets.base import IGNORE_LABEL

    torch.manual_seed(3)
    logits = torch.randn(2, 6, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 6, (2, 3, 4, 5))
    ignored = torch.rand(2, 3, 4, 5) < 0.4
    target[ignored] = IGNORE_LABEL
    annotated = torch.tensor([[True] * 6, [True, True, True, False, True, True]])
    target[1][target[1] == BLADDER] = 0
    loss = partial_label_nll(logits, target, annotated)
    loss.backward()
    assert torch.count_nonzero(logits.grad.movedim(1, -1)[ignored]) == 0
    assert torch.count_nonzero(logits.grad.movedim(1, -1)[~ignored]) > 0
    known = target.masked_fill(ignored, 0)  # what is left: the known voxels' loss ...
    expected = sum(reference_nll(logits[b:b + 1].detach()[..., ~ignored[b]][..., None, None],
                                 known[b:b + 1][:, ~ignored[b]][..., None, None],
                                 annotated[b:b + 1]) * int((~ignored[b]).sum())
                   for b in range(2)) / target.numel()  # ... over every voxel
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_bladder_predictions_cost_nothing_where_the_bladder_was_not_contoured():
    torch.manual_seed(2)
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, :2] = 1  # a femoral head, annotated; the rest background
    without_bladder = torch.tensor([[True, True, True, False, True, True]])
    with_bladder = torch.ones(1, 6, dtype=torch.bool)
    logits = torch.randn(1, 6, 4, 4, 4)
    says_bladder = logits.clone()
    says_bladder[:, BLADDER] += 8.0  # the network calls the background voxels bladder
    background = target == 0
    says_bladder[:, BLADDER][~background] = logits[:, BLADDER][~background]
    base = float(partial_label_nll(logits, target, without_bladder))
    moved = float(partial_label_nll(says_bladder, target, without_bladder))
    # moving probability mass from background to bladder leaves the merged term unchanged
    # (up to the other organs' share, which shrinks): the loss does not rise
    assert moved <= base + 1e-6
    # where the bladder was contoured, the same predictions are punished
    assert float(partial_label_nll(says_bladder, target, with_bladder)) > base + 1.0
    # and the gradient towards "bladder" on background voxels is zero or pushes towards it
    says_bladder.requires_grad_(True)
    partial_label_nll(says_bladder, target, without_bladder).backward()
    assert float(says_bladder.grad[:, BLADDER][background.expand_as(
        says_bladder.grad[:, BLADDER])].max()) <= 0.0


@pytest.mark.parametrize(("size", "pools"), [((16, 32, 32), ((2, 2, 2),) * 3),
                                              ((8, 32, 32), ((1, 2, 2), (2, 2, 2), (2, 2, 2)))])
def test_network_output_shape_and_divisor(size, pools):
    network = OarUNet3D(filters=(4, 8, 16, 32), pools=pools)
    out = network(torch.zeros(1, 1, *size))
    assert out.shape == (1, 6, *size)
    assert all(s % d == 0 for s, d in zip(size, network.divisor, strict=True))


def test_clean_up_keeps_both_sides_of_the_nodal_ctv_and_names_what_it_removes():
    """Paper 003 keeps each label's largest piece; the nodal CTV's two sides, apart inside a
    scan, lost one of them to it (the right here: the same size, the first in scan order)."""
    from oncoseg.errors import InputError
    from oncoseg.oar.ct.config import OarCtConfig
    from oncoseg.oar.ct.predict import clean_organs

    labels = np.zeros((5, 10, 20), np.uint8)
    labels[1:3, 2:5, 1:4] = 5  # nodal CTV, right side
    labels[1:3, 2:5, 15:18] = 5  # nodal CTV, left side
    labels[0, 9, 9] = 5  # a stray CTV voxel
    labels[1:4, 5:9, 7:12] = 3  # bladder
    labels[2, 7, 9] = 0  # a hole in it
    labels[2, 9, 0] = 3  # a stray bladder voxel
    labels[0:2, 0:2, 18:20] = 3  # a bladder piece of 8 voxels
    default = OarCtConfig()
    cleaned, notes = clean_organs(labels, default.largest_component_organs, 0.125,
                                  default.smallest_piece_ml)  # 5 mm voxels: 0.125 mL
    assert (cleaned == 5).sum() == 36 and cleaned[0, 9, 9] == 0  # both sides, no stray voxel
    assert (cleaned == 3).sum() == 60  # the bladder's largest piece, its hole filled
    assert notes == ["Bladder: 1 separate piece of 1.0 mL removed beside its largest (7.4 mL; "
                     "paper 003 keeps one piece per organ, `largest_component_organs`): check "
                     "that none of it was the organ"]
    papers, _ = clean_organs(labels, ["Bladder", "Nodal CTV"], 0.125)
    assert (papers == 5).sum() == 18 and (papers[..., :10] == 5).any()  # one side dropped
    every_piece, _ = clean_organs(labels, [], 0.125)  # no organ kept whole, no piece too small
    assert (every_piece == 5).sum() == 37 and (every_piece == 3).sum() == 69
    with pytest.raises(InputError, match="'Spleen' is not an organ"):
        clean_organs(labels, ["Spleen"], 0.125)
    for wrong in ("-1", "nan"):
        with pytest.raises(InputError, match="--set smallest_piece_ml"):
            OarCtConfig.from_overrides({"smallest_piece_ml": wrong}, "prediction")


# ---------------------------------------------------------------------------- paper 003's training


def tiny_batch(size=5, seed=3):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(size, 1, 8, 16, 16, generator=generator)
    labels = torch.randint(0, 6, (size, 8, 16, 16), generator=generator)
    annotated = torch.ones(size, 6, dtype=torch.bool)
    annotated[1, BLADDER] = False  # a case without a bladder contour
    labels[1][labels[1] == BLADDER] = 0
    return image, labels, annotated


def gradients(step, network, batch):
    network.zero_grad(set_to_none=True)
    loss, count = step(network, batch, "cpu")
    loss.backward()
    return float(loss.detach()), count, [p.grad.clone() for p in network.parameters()]


@pytest.mark.parametrize("micro", [1, 2, 3])
def test_gradient_accumulation_gives_the_gradient_of_the_whole_batch(micro):
    """Micro-batches of 1, 2 or 3 patches (5 = 2 + 2 + 1 unequal shares) give the loss and
    the gradient of one pass over all 5, to float tolerance: the batch of 50 is the paper's
    whatever the memory."""
    from oncoseg.oar.ct.training import accumulating_step

    torch.manual_seed(0)
    network = OarUNet3D(filters=(2, 4, 4, 4))
    batch = tiny_batch()
    whole_loss, whole_count, whole = gradients(accumulating_step(0), network, batch)
    loss, count, accumulated = gradients(accumulating_step(micro), network, batch)
    assert count == whole_count == 5
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    for a, b in zip(accumulated, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # and not by accident: half the batch alone has another gradient
    _, _, half = gradients(accumulating_step(0), network, tuple(t[:2] for t in batch))
    assert max(float((a - b).abs().max()) for a, b in zip(half, whole, strict=True)) > 1e-4
    # validation (no gradient) gives the batch's mean loss too
    with torch.no_grad():
        value, _ = accumulating_step(micro)(network, batch, "cpu")
    assert float(value) == pytest.approx(whole_loss, rel=1e-6)


def test_micro_batch_is_the_setting_or_one_patch_on_a_cpu():
    from oncoseg.errors import InputError
    from oncoseg.oar.ct.config import OarCtConfig
    from oncoseg.oar.ct.training import choose_micro_batch

    assert OarCtConfig().batch_size == 50 and OarCtConfig().micro_batch == 0
    assert choose_micro_batch(OarCtConfig(micro_batch=8), 25, "cpu")[0] == 8
    assert choose_micro_batch(OarCtConfig(micro_batch=40), 25, "cpu")[0] == 25  # per process
    micro, why = choose_micro_batch(OarCtConfig(), 50, "cpu")
    assert micro == 1 and "automatic" in why
    with pytest.raises(InputError, match="micro_batch: is 60: it must not exceed batch_size"):
        OarCtConfig.from_overrides({"micro_batch": 60})


def prepared(case_id, patient, shape=(6, 10, 12), seed=0):
    import SimpleITK as sitk

    from oncoseg.oar.ct.training import CLASSES, PreparedCT

    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[2:4, 3:6, 3:6] = BLADDER
    grid = sitk.Image(shape[::-1], sitk.sitkUInt8)
    grid.SetSpacing((1.0, 1.0, 2.5))
    return PreparedCT(case_id, rng.integers(-1000, 1000, shape).astype(np.int16), labels,
                      np.ones(CLASSES, bool), grid, patient)


def test_the_validation_set_rotates_so_that_every_scan_trains():
    """Paper 003: "This cycle was performed fifty times, varying the validation set to allow
    for all 226 images to be used for direct parameter estimation"."""
    from oncoseg.oar.ct.config import OarCtConfig
    from oncoseg.oar.ct.training import cycle_cases, validation_folds

    # 11 patients, one with two scans; the split held out p0 and p1
    cases = [prepared(f"c{i}", f"p{i}") for i in range(11)] + [prepared("c3b", "p3")]
    validation = [c for c in cases if c.patient in ("p0", "p1")]
    training = [c for c in cases if c not in validation]
    config = OarCtConfig()
    folds = validation_folds(training, validation, config.validation_fraction, config.seed)
    assert len(folds) == 5 and folds[0] == ["p0", "p1"]  # the first cycle keeps the split
    assert sorted(p for fold in folds for p in fold) == sorted({c.patient for c in cases})
    trained, held_out = set(), []
    for cycle in range(config.cycles):  # 50 cycles
        train_part, val_part = cycle_cases(cases, folds, cycle, config.rotate_validation)
        assert {c.patient for c in train_part}.isdisjoint({c.patient for c in val_part})
        assert len(train_part) + len(val_part) == len(cases)
        trained |= {c.case_id for c in train_part}
        held_out.append({c.case_id for c in val_part})
    assert trained == {c.case_id for c in cases}
    assert held_out[0] == {"c0", "c1"} and held_out[5] == held_out[0]
    # a patient's scans leave together
    assert all(("c3" in h) == ("c3b" in h) for h in held_out) and any("c3" in h for h in held_out)
    # without rotation the split's validation patients never train
    fixed = {c.case_id for cycle in range(config.cycles)
             for c in cycle_cases(cases, folds, cycle, False)[0]}
    assert fixed == {c.case_id for c in training}
    # two patients: the two cycles swap them
    two = [prepared("a", "a"), prepared("b", "b")]
    assert validation_folds(two[:1], two[1:], 0.2, 0) == [["b"], ["a"]]


def test_a_restart_cycle_centres_a_tenth_of_its_patches_on_false_positives():
    from oncoseg.oar.ct.config import OarCtConfig
    from oncoseg.oar.ct.training import PatchSampler

    cases = [prepared("c0", "p0", seed=0), prepared("c1", "p1", seed=1)]
    negatives = np.array([[1, 1, 1], [5, 9, 11]])  # case 1's false positives
    config = OarCtConfig(foreground_fraction=0.5, patch_size=(4, 6, 6))
    sampler = PatchSampler(cases, config, seed=7, length=4000, hard_negatives={1: negatives})
    draws = [sampler.draw(np.random.default_rng([7, i])) for i in range(4000)]
    kinds = [kind for _, _, kind in draws]
    share = kinds.count("false positive") / len(draws)
    assert share == pytest.approx(config.hard_negative_fraction, abs=0.015)
    for index, centre, kind in draws:
        if kind == "false positive":
            assert index == 1 and any((centre == n).all() for n in negatives)
    # the first cycle (no false positives yet) draws what a run without cycles drew
    plain = PatchSampler(cases, config, seed=7, length=10)
    empty = PatchSampler(cases, config, seed=7, length=10, hard_negatives={0: np.zeros((0, 3))})
    assert "false positive" not in [empty.draw(np.random.default_rng([7, i]))[2]
                                    for i in range(200)]
    for item in range(10):
        a, b = plain[item], empty[item]
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_network_reads_the_ct_at_its_own_resolution_by_default():
    import SimpleITK as sitk

    from oncoseg.oar.ct.config import NATIVE, OarCtConfig
    from oncoseg.oar.ct.preprocessing import to_working_grid, working_grid

    config = OarCtConfig()
    assert config.spacing_mm == NATIVE and config.grid_spacing is None
    ct = sitk.GetImageFromArray(np.random.default_rng(0).integers(
        -1000, 1000, (7, 9, 11)).astype(np.int16))
    ct.SetSpacing((0.977, 0.977, 2.5))  # paper 003: 0.977 mm pixels, 2.5 or 3 mm slices
    grid = working_grid(ct, config.grid_spacing)
    assert grid.GetSize() == ct.GetSize() and grid.GetSpacing() == ct.GetSpacing()
    assert np.array_equal(to_working_grid(ct, grid), sitk.GetArrayFromImage(ct))
    # a working grid only as a setting; a model file's null is the CT's own resolution
    assert OarCtConfig.from_overrides({"spacing_mm": [2, 2, 3]}).grid_spacing == (2.0, 2.0, 3.0)
    assert OarCtConfig.from_overrides({"spacing_mm": "2,2,3"}).spacing_mm == (2.0, 2.0, 3.0)
    assert OarCtConfig.from_overrides({"spacing_mm": None}).grid_spacing is None
    assert OarCtConfig.from_overrides({"spacing_mm": "native"}).grid_spacing is None


def test_the_memory_check_counts_the_networks_grid_at_its_spacing(monkeypatch):
    """A native model's grid is the CT's own; a working grid's size follows the CT's extent."""
    import SimpleITK as sitk

    from oncoseg.oar.ct import preprocessing

    asked = []
    monkeypatch.setattr(preprocessing, "require_memory",
                        lambda name, needed, purpose: asked.append((needed, purpose)))
    ct = sitk.GetImageFromArray(np.random.default_rng(0).integers(
        -1000, 1000, (4, 8, 8)).astype(np.int16))  # 1 mm voxels
    preprocessing.check_ct(ct)  # native
    preprocessing.check_ct(ct, spacing_mm=(2.0, 2.0, 2.0))  # 4 x 4 x 2 = 32 of 256 voxels
    preprocessing.check_ct(ct, spacing_mm=(0.5, 0.5, 0.5))  # 16 x 16 x 8: 8 times the CT
    ct_bytes, grid = 256 * preprocessing.CT_BYTES_PER_VOXEL, preprocessing.GRID_BYTES_PER_VOXEL
    assert asked == [(int(ct_bytes + 256 * grid), "segment it on its own grid (8 x 8 x 4 voxels)"),
                     (int(ct_bytes + 32 * grid), "segment it on the model's 2 x 2 x 2 mm working "
                      "grid (4 x 4 x 2 voxels)"),
                     (int(ct_bytes + 2048 * grid), "segment it on the model's 0.5 x 0.5 x 0.5 mm "
                      "working grid (16 x 16 x 8 voxels)")]


def test_a_ct_of_huge_voxels_is_refused_before_its_working_grid_is_made(tmp_path, monkeypatch,
                                                                        capsys):
    """10 x 10 x 10 voxels of 390 mm: a 3.9 m box, 1.7 billion voxels of the demo's 3 mm
    working grid (before: 19.7 GB of RSS and exit 1 'cannot allocate memory' after 55 s)."""
    import SimpleITK as sitk

    from oncoseg.cli import main

    ct = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 300, (10, 10, 10))
                                .astype(np.int16))
    ct.SetSpacing((390.0, 390.0, 390.0))
    sitk.WriteImage(ct, str(tmp_path / "huge.nrrd"))
    monkeypatch.setenv("ONCOSEG_MEMORY_LIMIT", "8GB")
    assert main(["predict", "oar-ct", "--input", f"ct={tmp_path / 'huge.nrrd'}", "--output",
                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "ct: needs about" in err and "3 x 3 x 3 mm working grid (1300 x 1300 x 1300" in err
    assert not (tmp_path / "out").exists()
