"""BrainTumor2D3D (paper 004) end to end on phantoms: networks, loss, inputs with sequences
missing or on other grids, the staged training (the paper's six-member ensemble, subnetwork
pretraining on cases with a sequence missing), prediction and evaluation from the CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from oncoseg import verbs
from oncoseg.brain.config import SEQUENCES, BrainConfig
from oncoseg.brain.losses import batch_weighted_cross_entropy
from oncoseg.brain.network import Brain2D, Brain3D, brain_3d, brain_ensemble
from oncoseg.brain.preprocessing import back_to_grid, from_slices, prepare_volume, to_slices
from oncoseg.cli import main
from oncoseg.datasets import read_dataset
from oncoseg.errors import InputError

DEMO_BARS = (0.80, 0.70, 0.60)  # whole tumour, tumour core, enhancing tumour
TINY = ["--set", "width_2d=2", "--set", "width_3d=2", "--set", "levels_2d=2",
        "--set", "patch=48", "--set", "iterations_2d=2", "--set", "iterations_3d=2",
        "--set", "iterations_pretrain=2", "--set", "iterations_per_epoch=2",
        "--set", "batches_per_iteration_2d=2", "--set", "batch_size_2d=2",
        "--set", "batches_per_iteration_3d=2"]
# the paper's ensemble (Table 3): 2D-3D models A, B, C with 2D model 1's features, then 2D model 2's
SIX = ["first:unet", "final:unet", "streams:unet", "first:shallow", "final:shallow",
       "streams:shallow"]


@pytest.mark.parametrize("kind", ["unet", "shallow"])
def test_2d_model_has_k_plus_1_subnetworks_and_ignores_an_absent_sequence(kind):
    torch.manual_seed(0)
    net = Brain2D(width=4, subnetwork_kind=kind, levels=2).eval()
    x = torch.randn(2, 4, 24, 32)
    scores, auxiliary = net(x, auxiliary=True)
    assert scores.shape == (2, 4, 24, 32) and len(auxiliary) == 5
    present = torch.tensor([True, True, True, False])
    other = x.clone()
    other[:, 3] = 100.0  # whatever the absent FLAIR holds
    assert torch.allclose(net(x, present), net(other, present))
    net.train()
    target = torch.randint(0, 4, (2, 24, 32))
    scores, auxiliary = net(x, auxiliary=True)
    loss = sum(batch_weighted_cross_entropy(s, target, (0.7, 0.1, 0.1, 0.1))
               for s in (scores, *auxiliary))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("import_at", ["first", "final", "streams", "none"])
def test_2d3d_model_variants_take_odd_patch_sizes_and_backpropagate(import_at):
    torch.manual_seed(0)
    net = Brain3D(width=2, levels=2, import_at=import_at)
    image = torch.randn(1, 4, 19, 22, 17)
    features = torch.randn(1, 12, 19, 22, 17, requires_grad=True)
    out = net(image, features)
    assert out.shape == (1, 4, 19, 22, 17)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert (features.grad is not None and features.grad.abs().sum() > 0) == \
        (import_at != "none")
    first_conv = net.body.down[0][0][0]
    assert first_conv.in_channels == (16 if import_at in ("first", "streams") else 4)
    # model C: a second stream sees the image alone; both meet before the final convolutions
    assert hasattr(net, "image_stream") == (import_at == "streams")
    if import_at == "streams":
        assert net.image_stream.down[0][0][0].in_channels == 4
        assert net.final[0][0].in_channels == 2 * 2
        assert any(p.grad.abs().sum() > 0 for p in net.image_stream.parameters())
    if import_at != "none":
        with pytest.raises(ValueError, match="features"):
            net(image)


def norm_layers(net: torch.nn.Module) -> set[type]:
    kinds = (torch.nn.InstanceNorm3d, torch.nn.BatchNorm3d)
    return {type(m) for m in net.modules() if isinstance(m, kinds)}


def test_3d_normalisation_is_the_papers_none_by_default_and_old_files_keep_instance_norm():
    # section 2.1: "We didn't observe the need of using batch normalization" (3D networks)
    assert BrainConfig().norm_3d == "none"
    plain = Brain3D(width=2, levels=1)
    assert norm_layers(plain) == set() and plain.body.down[0][0][0].bias is not None
    assert norm_layers(Brain3D(width=2, levels=1, norm="batch")) == {torch.nn.BatchNorm3d}
    # a file that does not record 'norm' (the demo's until 2026-12-05): instance norm
    assert norm_layers(brain_3d(width=2, levels=1)) == {torch.nn.InstanceNorm3d}
    old = brain_ensemble(width_2d=2, levels_2d=1, members=[
        {"width": 2, "levels": 1, "import_at": "first"}])
    assert norm_layers(old) == {torch.nn.InstanceNorm3d}
    assert "nets2d.axial.head.weight" in old.state_dict() and old.member_name(0) == "first"
    new = brain_ensemble(width_2d=2, levels_2d=1, subnetwork_kinds=["unet", "shallow"],
                         members=[{"width": 2, "levels": 1, "import_at": "streams",
                                   "norm": "none", "features_from": "shallow"}])
    assert norm_layers(new.nets3d) == set() and new.member_name(0) == "streams:shallow"
    assert "nets2d.shallow.sagittal.head.weight" in new.state_dict()
    with pytest.raises(InputError, match="norm_3d"):
        BrainConfig.from_overrides({"norm_3d": "group"})


def test_batch_weights_give_each_class_its_target_share():
    scores = torch.randn(1, 4, 5, 6)
    target = torch.zeros(1, 5, 6, dtype=torch.long)
    target[0, 0, :3] = 1
    target[0, 1, :2] = 2
    target[0, 4, 5] = 3
    nll = F.cross_entropy(scores, target, reduction="none")[0]
    shares = (0.4, 0.2, 0.2, 0.2)
    expected = sum(shares[c] * nll[target[0] == c].mean() for c in range(4))
    assert float(batch_weighted_cross_entropy(scores, target, shares)) == \
        pytest.approx(float(expected), rel=1e-5)
    background_only = torch.zeros_like(target)  # absent classes pass on their share
    assert float(batch_weighted_cross_entropy(scores, background_only, shares)) == \
        pytest.approx(float(F.cross_entropy(scores, background_only)), rel=1e-5)


def brain_images(size=(20, 24, 16), spacing=(2.0, 2.0, 2.0), seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for index, name in enumerate(SEQUENCES):
        array = np.zeros(size[::-1], np.float32)
        array[2:-2, 3:-3, 3:-3] = rng.uniform(50, 150, (size[2] - 4, size[1] - 6, size[0] - 6))
        array *= index + 1
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        images[name] = image
    return images


def test_inputs_are_median_normalised_on_the_t1c_grid_and_missing_ones_reported():
    images = brain_images()
    volume = prepare_volume(images)
    assert volume.reference_role == "t1c" and volume.present.all()
    for k in range(4):
        nonzero = volume.array[k][volume.array[k] != 0]
        assert np.median(nonzero) == pytest.approx(1.0, rel=1e-5)
    images["flair"] = None
    volume = prepare_volume(images, drop=["t1c"])
    assert volume.used == ["t1", "t2"] and volume.reference_role == "t1"
    assert not volume.array[3].any() and not volume.array[1].any()
    assert "flair" in volume.messages[-1] and "t1c" in volume.messages[-1]
    with pytest.raises(InputError, match="at least one"):
        prepare_volume({name: None for name in SEQUENCES})


def test_other_grids_are_resampled_and_elsewhere_refused_by_name():
    images = brain_images()
    coarse = sitk.Resample(images["t2"], [10, 12, 8], sitk.Transform(), sitk.sitkLinear,
                           images["t2"].GetOrigin(), (4.0, 4.0, 4.0))
    images["t2"] = coarse
    volume = prepare_volume(images)
    assert volume.array.shape[1:] == (16, 24, 20)
    assert "t2 was resampled onto the t1c grid" in volume.messages
    far = sitk.Image(images["flair"])
    far.SetOrigin((900.0, 0.0, 0.0))
    images["flair"] = far
    with pytest.raises(InputError, match="flair"):
        prepare_volume(images)


def test_a_model_spacing_is_read_on_a_working_grid_and_mapped_back_to_the_reference():
    """The networks read the sequences at the model's spacing (a 1 mm scan at the demo's
    2 mm); what they give comes back onto the reference grid, where the body is judged."""
    images = brain_images(spacing=(1.0, 1.0, 1.0))
    native = prepare_volume(images)
    volume = prepare_volume(images, spacing_mm=(2.0, 2.0, 2.0))
    assert volume.resampled and not native.resampled
    assert volume.array.shape == (4, 8, 12, 10) and volume.work.GetSpacing() == (2, 2, 2)
    assert volume.body.shape == native.array.shape[1:]
    np.testing.assert_array_equal(volume.body, native.body)
    assert any("read the sequences at 2 x 2 x 2 mm" in m and "stored at 1 x 1 x 1 mm" in m
               for m in volume.messages)
    # a smooth map survives the round trip; the median division happened before resampling
    back = volume.onto_oriented(volume.array)
    assert back.shape == native.array.shape
    inner = (slice(None), slice(4, -4), slice(5, -5), slice(5, -5))
    assert np.abs(back[inner].mean() - native.array[inner].mean()) < 0.05
    # the model's own spacing: nothing resampled
    same = prepare_volume(images, spacing_mm=(1.0, 1.0, 1.0005))
    assert not same.resampled and np.array_equal(same.array, native.array)


def test_training_reads_every_case_at_the_median_spacing_labels_as_the_members_choose():
    from oncoseg.brain.training import PreparedBrain, at_spacing, training_spacing
    from oncoseg.spacing import MEDIAN, NATIVE

    def case(spacing):
        volume = prepare_volume(brain_images(spacing=spacing))
        labels = np.zeros(volume.array.shape[1:], np.uint8)
        labels[2:12, 4:16, 4:14] = 2
        labels[4:8, 8:12, 8:12] = 3  # whole 2 mm voxels: the volumes stay exact
        return PreparedBrain("c", volume.array, labels, volume.oriented)

    cases = [case((1.0, 1.0, 1.0)), case((2.0, 2.0, 2.0)), case((2.0, 2.0, 3.0))]
    assert training_spacing(BrainConfig(spacing_mm=MEDIAN), cases) == (2.0, 2.0, 2.0)
    assert training_spacing(BrainConfig(spacing_mm=NATIVE), cases) == NATIVE
    assert at_spacing(cases[1], (2.0, 2.0, 2.0)) is cases[1]
    assert at_spacing(cases[0], NATIVE) is cases[0]
    moved = at_spacing(cases[0], (2.0, 2.0, 2.0))
    assert moved.image.shape == (4, 8, 12, 10) and moved.labels.shape == (8, 12, 10)
    assert moved.grid.GetSpacing() == (2.0, 2.0, 2.0)
    assert set(np.unique(moved.labels)) == {0, 2, 3}
    assert [np.count_nonzero(moved.labels == c) * 8 for c in (2, 3)] == \
        [np.count_nonzero(cases[0].labels == c) for c in (2, 3)]


def test_orientation_round_trip_on_a_flipped_permuted_grid():
    images = brain_images()
    direction = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], float)
    for image in images.values():
        image.SetDirection(direction.ravel())
    volume = prepare_volume(images)
    labels = (volume.array[1] > 1.0).astype(np.uint8)
    back = back_to_grid(labels, volume)
    assert back.GetSize() == images["t1c"].GetSize()
    assert back.GetDirection() == images["t1c"].GetDirection()
    original = sitk.GetArrayFromImage(images["t1c"])
    median = np.median(original[original != 0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), original / median > 1.0)
    for orientation in ("axial", "coronal", "sagittal"):
        np.testing.assert_array_equal(from_slices(to_slices(volume.array, orientation),
                                                  orientation), volume.array)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The default ensemble (six members over two 2D models), tiny widths and budgets."""
    root = tmp_path_factory.mktemp("brain")
    assert main(["phantom", "brain", "--output", str(root / "data"), "--cases", "3",
                 "--progress", "none"]) == 0
    assert main(["train", "brain", "--dataset", str(root / "data"), "--output",
                 str(root / "model"), "--progress", "none", *TINY]) == 0
    return root


def test_stages_write_both_2d_models_the_six_members_and_the_ensemble(trained):
    model = trained / "model"
    stages = [f"2d-{o}-{k}" for o in ("axial", "coronal", "sagittal") for k in ("unet", "shallow")]
    stages += [f"3d-{member.replace(':', '-')}" for member in SIX]
    for stage in stages:
        assert (model / stage / "model.safetensors").is_file()
        assert (model / stage / "history.csv").is_file()
    assert not list(model.glob("*pretrain*"))  # every case has every sequence
    from oncoseg.modelfile import read_header

    header = read_header(model / "model.safetensors")
    assert header.metadata.architecture == "brain-ensemble"
    args = header.metadata.architecture_args
    assert args["subnetwork_kinds"] == ["unet", "shallow"]
    assert [f"{m['import_at']}:{m['features_from']}" for m in args["members"]] == SIX
    assert {m["norm"] for m in args["members"]} == {"none"}
    # the phantoms' 2 mm, the training cases' median, fixed for every run of the model
    assert header.metadata.preprocessing["spacing_mm"] == [2.0, 2.0, 2.0]
    assert read_header(model / "2d-axial-unet" / "model.safetensors").metadata \
        .preprocessing["spacing_mm"] == [2.0, 2.0, 2.0]
    features = list((model / "prepared").glob("*.features-*.npy"))
    assert len(features) == 2 * 3 and np.load(features[0]).dtype == np.float16


def test_2d3d_stage_needs_the_2d_models(trained, tmp_path, capsys):
    assert main(["train", "brain", "--dataset", str(trained / "data"), "--output",
                 str(tmp_path / "m"), "--stage", "2d3d", "--progress", "none", *TINY]) == 2
    assert "train the 2D stages first" in capsys.readouterr().err
    assert main(["train", "staging", "--dataset", str(trained / "data"), "--output",
                 str(tmp_path / "s"), "--stage", "2d3d"]) == 2


def test_predict_without_flair_says_so_and_evaluate_reports_brats_regions(trained, tmp_path):
    case = read_dataset(trained / "data").cases[0]
    args = ["predict", "brain", "--model", str(trained / "model" / "model.safetensors"),
            "--output", str(tmp_path / "out"), "--progress", "none"]
    for role in ("t1", "t1c", "t2"):
        args += ["--input", f"{role}={case.images[role]}"]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any("flair missing" in m for m in result["messages"])
    assert result["details"]["members"] == SIX  # voted over by the paper's thresholds
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert labels.GetSize() == sitk.ReadImage(str(case.images["t1c"])).GetSize()
    one = tmp_path / "one"  # evaluation of one case is enough here
    one.mkdir()
    (one / case.images["t1"].parent.name).symlink_to(case.images["t1"].parent)
    assert main(["evaluate", "brain", "--dataset", str(one), "--model",
                 str(trained / "model" / "model.safetensors"), "--output",
                 str(tmp_path / "eval"), "--progress", "none",
                 "--set", "drop_sequences=flair"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["sequences_dropped"] == ["flair"]
    assert {"dice_wt", "dice_tc", "dice_et"} <= set(summary["metrics"])


def test_tuple_settings_take_comma_separated_values_and_are_checked():
    config = BrainConfig.from_overrides({"members": "first,none",
                                         "class_targets_3d": "0.7,0.1,0.1,0.1"})
    assert config.members == ("first", "none")
    assert config.member_specs == [("first", "unet"), ("none", "unet"), ("first", "shallow"),
                                   ("none", "shallow")]
    assert [f"{i}:{k}" for i, k in BrainConfig().member_specs] == SIX
    demo_like = BrainConfig.from_overrides({"members": "first,final", "subnetworks": "unet"})
    assert demo_like.member_specs == [("first", "unet"), ("final", "unet")]
    assert demo_like.kinds_2d == ["unet"]
    assert BrainConfig.from_overrides({"members": "streams:shallow"}).kinds_2d == ["shallow"]
    assert config.class_targets_3d == (0.7, 0.1, 0.1, 0.1)
    for members in ("first,sideways", "first:resnet"):
        with pytest.raises(InputError, match="members"):
            BrainConfig.from_overrides({"members": members})
    with pytest.raises(InputError, match="subnetworks"):
        BrainConfig.from_overrides({"subnetworks": "unet,deep"})
    with pytest.raises(InputError, match="class_targets_3d"):
        BrainConfig.from_overrides({"class_targets_3d": "0.5,0.1"})
    with pytest.raises(InputError, match="drop_sequences"):
        BrainConfig.from_overrides({"drop_sequences": "flair,pd"})


# The shipped demo model's mean Dice on test seed 4343, computed when the demo was retrained at
# the task's widths without 3D normalisation (2026-12-05, issue 25). The CPU runs the networks
# as network_inference's copy (probabilities equal to 1e-5, not bit for bit), which can flip a
# few voxels at the vote's thresholds: the means agree to 1e-3, so matching them says it
# predicts as it did.
DEMO_BEFORE = {"full": (0.9573557306047945, 0.9002667153179504, 0.836336110423993),
               "no_flair": (0.9245602093483705, 0.9168538717081649, 0.8527004539236955)}


def test_demo_ensemble_on_unseen_phantoms(tmp_path):
    """Lower bars than the 10-case figures of docs/RESULTS.md, on two phantoms the demo
    ensemble never saw, with all four sequences and without FLAIR; and exactly what the demo
    model gave when it was trained (its file fixes its two members, its 2D model kind and its
    3D networks without normalisation, as the paper's)."""
    from oncoseg.method import prepare

    ensemble = prepare("brain", "demo").network
    assert [ensemble.member_name(i) for i in range(2)] == ["first", "final"]
    assert norm_layers(ensemble.nets3d) == set()
    verbs.phantom("brain", tmp_path / "data", cases=2, seed=4343, orientation="random")
    full = verbs.evaluate("brain", tmp_path / "data", tmp_path / "full")["metrics"]
    assert full["dice_wt"]["mean"] >= DEMO_BARS[0], full
    assert full["dice_tc"]["mean"] >= DEMO_BARS[1], full
    assert full["dice_et"]["mean"] >= DEMO_BARS[2], full
    no_flair = verbs.evaluate("brain", tmp_path / "data", tmp_path / "no-flair",
                              overrides={"drop_sequences": "flair"})["metrics"]
    assert no_flair["dice_wt"]["mean"] >= full["dice_wt"]["mean"] - 0.15, no_flair
    for name, metrics in (("full", full), ("no_flair", no_flair)):
        means = tuple(metrics[f"dice_{region}"]["mean"] for region in ("wt", "tc", "et"))
        assert means == pytest.approx(DEMO_BEFORE[name], abs=1e-3), name


def test_a_brain_stored_at_another_spacing_gives_the_same_tumour(tmp_path):
    """The same phantom stored at 1 mm (BraTS's spacing) instead of the 2 mm the demo trained
    on: the networks read it at 2 mm and the results come back onto the 1 mm grid. Read as
    stored (until 2026-12-07) this phantom's tumour core and enhancing tumour lost 0.10 and
    0.12 Dice (0.811 / 0.755 against 0.914 / 0.879 at 2 mm: docs/RESULTS.md, "A brain stored
    at another spacing")."""
    from oncoseg.geometry import grid_with_spacing, resample_to_reference
    from oncoseg.metrics import brats_regions, dice

    verbs.phantom("brain", tmp_path / "data", cases=2, seed=7300)
    case = read_dataset(tmp_path / "data").cases[1]
    images = {role: case.read(role) for role in case.images}
    reference = images["t1c"]
    truth = case.label_on(reference, "t1c")
    for stored, label in case.info.get("label_map", {}).items():
        truth[truth == int(stored)] = int(label)
    truths = brats_regions(truth)

    def scores(given):
        result = verbs.predict("brain", given, "demo")
        on_phantom = sitk.Resample(result.labels, reference, sitk.Transform(),
                                   sitk.sitkNearestNeighbor, 0)
        found = brats_regions(sitk.GetArrayFromImage(on_phantom))
        return result, {region: dice(found[region], truths[region]) for region in truths}

    _, at_2mm = scores(images)
    fine = {role: resample_to_reference(image, grid_with_spacing(image, (1.0, 1.0, 1.0)),
                                        "linear") for role, image in images.items()}
    result, at_1mm = scores(fine)
    assert result.labels.GetSize() == fine["t1c"].GetSize()
    assert result.details["spacing_mm"] == [2.0, 2.0, 2.0]
    assert any("read the sequences at 2 x 2 x 2 mm" in m for m in result.messages)
    for region, value in at_2mm.items():
        assert at_1mm[region] >= value - 0.03, (region, at_1mm, at_2mm)


def test_a_case_without_flair_is_read_and_only_pretrains_the_subnetworks(tmp_path, monkeypatch):
    """Section 3.2 / Table 2: a sequence's subnetwork pretrains on the cases that have it; the
    whole 2D model (starting from those weights) and the 2D-3D members train on the cases
    that have all four."""
    from oncoseg.brain import training
    from oncoseg.modelfile import load_network

    data = tmp_path / "data"
    assert main(["phantom", "brain", "--output", str(data), "--cases", "3",
                 "--progress", "none"]) == 0
    train_cases, _ = training.split_cases(read_dataset(data), BrainConfig())
    dropped = train_cases[0].id
    train_cases[0].images["flair"].unlink()
    case = {c.id: c for c in read_dataset(data).cases}[dropped]
    assert sorted(case.images) == ["t1", "t1c", "t2"] and case.info["missing"] == ["flair"]

    seen = []  # (sequence or None, case ids) of every slice set built

    class Recorded(training.SliceSet):
        def __init__(self, cases, *args, **kwargs):
            super().__init__(cases, *args, **kwargs)
            seen.append((self.sequence, {c.id for c in cases}))

    monkeypatch.setattr(training, "SliceSet", Recorded)
    model = tmp_path / "model"
    assert main(["train", "brain", "--dataset", str(data), "--output", str(model),
                 "--progress", "none", *TINY, "--set", "members=first",
                 "--set", "subnetworks=unet"]) == 0
    split = json.loads((model / "split.json").read_text())
    assert split["incomplete"] == [dropped] and split["pretrained_subnetworks"] is True
    flair, t1 = SEQUENCES.index("flair"), SEQUENCES.index("t1")
    trained_on: dict = {}  # by sequence: the cases of its pretraining and validation sets
    for sequence, ids in seen:
        trained_on.setdefault(sequence, set()).update(ids)
    assert dropped in trained_on[t1] and dropped not in trained_on[flair]
    assert dropped not in trained_on[None]  # the whole 2D models: complete cases only
    for orientation in ("axial", "coronal", "sagittal"):
        for sequence in SEQUENCES:
            assert (model / f"2d-{orientation}-unet-pretrain-{sequence}" /
                    "model.safetensors").is_file()
    # the 2D model starts from the pretrained subnetwork and auxiliary layer
    pretrained, _ = load_network(model / "2d-axial-unet-pretrain-t2" / "model.safetensors",
                                 "brain")
    args = {"sequences": 4, "width": 2, "subnetwork_kind": "unet", "levels": 2}
    started = training.model_2d(args, {SEQUENCES.index("t2"): model / "2d-axial-unet-pretrain-t2"
                                       / "model.safetensors"})
    for mine, theirs in ((started.subnetworks[2], pretrained.subnetwork),
                         (started.auxiliary[2], pretrained.auxiliary)):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert (model / "model.safetensors").is_file()


def test_a_brats_case_without_any_sequence_is_refused(tmp_path):
    data = tmp_path / "data"
    assert main(["phantom", "brain", "--output", str(data), "--cases", "1",
                 "--progress", "none"]) == 0
    case = read_dataset(data).cases[0]
    for path in list(case.images.values())[:-1]:
        path.unlink()
    last = list(case.images)[-1]
    assert list(read_dataset(data).cases[0].images) == [last]
    case.images[last].unlink()
    with pytest.raises(InputError, match="none of the sequence files"):
        read_dataset(data, "brats")
