"""Results do not depend on how an image is stored: every task, every label, in physical space.

The same phantom anatomy is stored as DICOM does (LPS), as dcm2niix and nibabel write NIfTI (RAS,
LAS), with the slices in reverse order (LPI), and acquired on a grid tilted by 20 degrees
(rendered on the tilted grid, as an oblique acquisition would be: no interpolation blurs it).
Each variant's result is compared, label by label, with the LPS-stored prediction. Results on a
permuted grid are compared voxel by voxel; a tilted result is brought onto the upright grid by
resampling its probability maps (linear) and labelling them as the task does, because
resampling a label map with nearest neighbour would itself cost a few per cent of Dice; and
only where both acquisitions saw the body (a tilted box covers other corners). Next to each
tilted figure the test prints how well the two acquisitions' own truths agree, measured the same
way: the tilted grid samples thin structures differently. Those truths are binary; a map
giving each voxel its partial volume, the ideal, agrees better (0.966-0.996 for every label but
the small bowel's 0.888: `Testing/helpers/ideal_agreement.py`, docs/RESULTS.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from network_memo import remembered_networks
from scipy import ndimage
from scipy.spatial.transform import Rotation

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.geometry import physical_bounds, resample_to_reference, same_grid
from oncoseg.orientation import (
    canonical_geometry,
    canonical_grid,
    covered_by,
    onto_grid,
    orientation_of,
    share_outside,
    tilt_degrees,
    to_canonical,
    upright_grid,
)
from oncoseg.phantoms.common import (
    STORAGE_ORIENTATIONS,
    Storage,
    case_rng,
    grid_points,
    to_image,
)

STORAGES = ("RAS", "LAS", "LPI")
TILT = Rotation.from_euler("xyz", (20, 0, 0), degrees=True).as_matrix()
TILTED = Storage("LPS", tuple(TILT.ravel()))
GOAL = 0.95
# Labels whose demo model does not reach the goal on a case tilted by 20 degrees (figures and
# reasons in docs/RESULTS.md, "Storage order and obliquity"): held to a little below what they
# reach, so that a regression still fails; every storage order without tilt must reach GOAL.
BELOW_GOAL_WHEN_TILTED = {
    "Rectal tumour": 0.93,  # reaches 0.950 (0.916-0.956 on seeds 9107-9110)
    "Nodal CTV": 0.91,  # 0.926
    "Large bowel": 0.89,  # 0.908
    "Necrotic and non-enhancing tumour core": 0.92,  # 0.935
    "Enhancing tumour": 0.91,  # 0.925
}


def _volume(seed: int = 0) -> sitk.Image:
    array = np.random.default_rng(seed).random((5, 6, 7)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.5, 3.0))
    image.SetOrigin((10.0, -5.0, 3.0))
    return image


def _turned(image: sitk.Image, matrix: np.ndarray) -> sitk.Image:
    out = sitk.Image(image)
    out.SetDirection(tuple((matrix @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel()))
    return out


# ------------------------------------------------------------------- the shared step itself


def test_all_48_storage_orders_come_back_to_the_same_voxels():
    base = _volume()
    assert len(set(STORAGE_ORIENTATIONS)) == 48
    for code in STORAGE_ORIENTATIONS:
        stored = sitk.DICOMOrient(base, code)
        assert orientation_of(stored) == code
        canonical = to_canonical(stored)
        assert same_grid(canonical, base, tolerance=1e-9), code
        assert np.array_equal(sitk.GetArrayFromImage(canonical), sitk.GetArrayFromImage(base))
        back = onto_grid(canonical, stored)
        assert same_grid(back, stored, tolerance=1e-9)
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(stored))


def test_canonical_geometry_from_the_header_equals_the_reordered_image():
    """The OAR-CT working grid is built from the header alone; it must be the grid the
    voxel reordering gives, for straight and oblique (here 23 degrees) storage alike."""
    turn = Rotation.from_euler("xyz", (20, -10, 8), degrees=True).as_matrix()
    for code in ("LPS", "RAS", "PSL", "SLA", "IRP", "ALI"):
        for image in (sitk.DICOMOrient(_volume(), code),
                      _turned(sitk.DICOMOrient(_volume(), code), turn)):
            size, spacing, origin, direction = canonical_geometry(image)
            reordered = sitk.DICOMOrient(image, "LPS")
            assert size == reordered.GetSize()
            assert np.allclose(spacing, reordered.GetSpacing())
            assert np.allclose(origin, reordered.GetOrigin())
            assert np.allclose(direction.ravel(), reordered.GetDirection())


def test_a_working_grid_is_axis_aligned_for_a_clearly_oblique_image_only():
    slightly = _turned(sitk.DICOMOrient(_volume(), "RAS"),
                       Rotation.from_euler("z", 3, degrees=True).as_matrix())
    grid = canonical_grid(slightly, (1.0, 1.0, 1.0))
    assert tilt_degrees(slightly) == pytest.approx(3.0, abs=0.01)
    assert np.allclose(grid.GetDirection(), to_canonical(slightly).GetDirection())
    clearly = _turned(_volume(), TILT)
    grid = canonical_grid(clearly, (1.0, 1.0, 1.0))
    assert np.allclose(grid.GetDirection(), np.eye(3).ravel())
    low, high = physical_bounds(clearly)
    grid_low, grid_high = physical_bounds(grid)
    assert np.all(grid_low <= low + 1e-6) and np.all(grid_high >= high - 1e-6)
    # resliced for a network that resizes slices: the scan's own matrix and spacing in-plane,
    # centred on the covering box, all of it along z
    upright = upright_grid(clearly)
    own_size, own_spacing = canonical_geometry(clearly)[:2]
    assert upright.GetSize()[:2] == own_size[:2]
    assert np.allclose(upright.GetSpacing(), own_spacing)
    assert np.allclose(upright.GetDirection(), np.eye(3).ravel())
    covering = canonical_grid(clearly, tuple(own_spacing))
    assert upright.GetSize()[2] == covering.GetSize()[2]
    assert np.allclose(np.mean(physical_bounds(upright), axis=0),
                       np.mean(physical_bounds(covering), axis=0), atol=own_spacing.max() / 2)
    assert 0 < share_outside(clearly, upright) < 0.25  # the tilted corners only
    assert share_outside(clearly, covering) == 0


def test_a_resliced_slab_continues_its_edges_into_the_corners_it_never_covered():
    """A dark wedge where the tilted slab ends would be an edge the GI network never saw."""
    values = np.full((20, 32, 32), 100, np.int16)
    values[10, 16, 16] = 0  # the slab's lowest value, far from its edges
    slab = sitk.GetImageFromArray(values)
    slab.SetSpacing((1.5, 1.5, 3.0))
    slab.SetDirection(tuple(TILT.ravel()))
    resliced = to_canonical(slab, reslice_oblique=True)
    never_covered = sitk.GetArrayFromImage(covered_by(slab, resliced)) == 0
    assert never_covered.mean() > 0.1
    assert np.all(sitk.GetArrayFromImage(resliced)[never_covered] == 100)


def test_an_oblique_cts_working_grid_continues_its_edge_then_reads_air():
    """The corners of an oblique CT's axis-aligned working grid that the CT never covered: its
    edge continued for EDGE_CONTINUED_MM (a body cut by air along a tilted plane is an edge the
    OAR network never saw at a scan's end), air beyond; an upright CT's grid has no such
    corner."""
    from oncoseg.oar.ct.preprocessing import (
        AIR_HU,
        EDGE_CONTINUED_MM,
        to_working_grid,
        working_grid,
    )

    values = np.full((30, 40, 40), 40, np.int16)  # soft tissue
    values[:, :, :20] = 700  # bone on the patient's right half
    ct = sitk.GetImageFromArray(values)
    ct.SetSpacing((3.0, 3.0, 3.0))
    ct.SetDirection(tuple(Rotation.from_euler("y", 30, degrees=True).as_matrix().ravel()))
    grid = working_grid(ct, (3.0, 3.0, 3.0))
    hu = to_working_grid(ct, grid)
    outside = sitk.GetArrayFromImage(covered_by(ct, grid)) == 0
    distance = ndimage.distance_transform_edt(outside, sampling=grid.GetSpacing()[::-1])
    assert outside.mean() > 0.3
    near, far = outside & (distance <= EDGE_CONTINUED_MM - 3), distance > EDGE_CONTINUED_MM + 3
    # the edge's own values (linear between tissue and bone where they meet), both sides
    assert np.all((hu[near] >= 40) & (hu[near] <= 700))
    assert np.any(hu[near] == 40) and np.any(hu[near] == 700)
    assert np.all(hu[far] == AIR_HU) and far.any()
    assert not np.isnan(hu).any()
    upright = sitk.GetImageFromArray(values)
    upright.SetSpacing((2.7, 2.7, 3.0))
    assert not (to_working_grid(upright, working_grid(upright, (3.0, 3.0, 3.0))) == AIR_HU).any()


# ------------------------------------------------------------------------ phantom storage


def test_phantom_writer_stores_the_same_anatomy_in_any_orientation(tmp_path):
    for name, options in (("lps", []), ("ras", ["--orientation", "RAS"]),
                          ("mixed", ["--orientation", "random", "--tilt", "20"])):
        assert main(["phantom", "staging", "--output", str(tmp_path / name), "--cases", "3",
                     "--seed", "31", "--progress", "none", *options]) == 0
    stored = [json.loads((tmp_path / "mixed" / f"staging_{i:03d}" / "case.json").read_text())
              ["stored_as"] for i in range(3)]
    assert len({s["orientation"] for s in stored}) > 1
    assert all(0 < s["tilt_degrees"] <= 20 for s in stored)
    for index in range(3):
        folder = f"staging_{index:03d}"
        upright = sitk.ReadImage(str(tmp_path / "lps" / folder / "label.nii.gz"))
        ras = sitk.ReadImage(str(tmp_path / "ras" / folder / "t2w.nii.gz"))
        assert orientation_of(ras) == "RAS"
        assert np.array_equal(
            sitk.GetArrayFromImage(to_canonical(ras)),
            sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "lps" / folder / "t2w.nii.gz"))))
        # tilted and reordered, the tumour is where it was (centroid within a voxel)
        mixed = sitk.ReadImage(str(tmp_path / "mixed" / folder / "label.nii.gz"))
        # no axis leans further than the rotation that tilted the grid
        assert 0 < tilt_degrees(mixed) <= stored[index]["tilt_degrees"] + 0.01
        assert np.linalg.norm(_centroid(mixed) - _centroid(upright)) < max(upright.GetSpacing())


def _centroid(label: sitk.Image) -> np.ndarray:
    points = grid_points(label)[sitk.GetArrayFromImage(label) > 0]
    return points.mean(axis=0)


@pytest.mark.parametrize(("args", "message"), [
    (["phantom", "staging", "--orientation", "LPP"], "--orientation: 'LPP'"),
    (["phantom", "oar-ct", "--orientation", "PSL"], "axial orientation code"),
    (["phantom", "oar-mr", "--orientation", "RAS"], "carry no orientation"),
    (["phantom", "rectal", "--tilt", "120"], "--tilt: 120"),
])
def test_impossible_storage_is_refused(tmp_path, capsys, args, message):
    assert main([*args, "--output", str(tmp_path / "out"), "--cases", "1"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_training_reads_every_storage_as_the_same_arrays(tmp_path):
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.rectal.cases import prepare_case

    verbs.phantom("rectal", tmp_path / "lps", cases=1, seed=12)
    verbs.phantom("rectal", tmp_path / "las", cases=1, seed=12, orientation="LAS")
    roles = ["t2w", "dwi_b0", "dwi_b1000"]
    upright, las = (read_dataset(tmp_path / n, "auto", roles).cases[0] for n in ("lps", "las"))
    a, b = prepare_case(upright, "none"), prepare_case(las, "none")
    # the T2w is interpolated onto the b0 grid: equal up to float rounding of the positions
    assert np.allclose(a.channels, b.channels, atol=1e-4)
    assert a.labels.keys() == b.labels.keys()
    assert all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)


# ------------------------------------------------------------------ every task, every label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _labelled(prediction, grid: sitk.Image, names: list[str], combine: str) -> np.ndarray:
    """Labels from the probability maps resampled onto ``grid`` (1, 2, ... in ``names``
    order): 'threshold' at 0.5 per map (multi-label or one map), 'argmax' with background."""
    maps = np.stack([sitk.GetArrayFromImage(resample_to_reference(
        prediction.probabilities[n], grid, "linear")) for n in names])
    if combine == "threshold":
        return maps >= 0.5
    best = np.argmax(np.concatenate([1.0 - maps.sum(axis=0, keepdims=True), maps]), axis=0)
    return np.stack([best == k for k in range(1, len(names) + 1)])


def _seen_by_both(tilted: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Voxels of the upright grid inside the tilted acquisition's field of view (the two
    acquisitions cover different corners of the body: only the shared part can agree), two
    voxels in from either one's edge: a prediction near the end of its own scan reads less
    around it (the upright pelvic CT's first and last two slices: 197 of the nodal CTV's 691
    differing voxels at 20 degrees, before the upright grid's own edge was left out too)."""
    return sitk.GetArrayFromImage(sitk.BinaryErode(
        covered_by(tilted, grid), [2, 2, 2], boundaryToForeground=False)) > 0


def truth_agreement(upright: dict[str, sitk.Image], tilted: dict[str, sitk.Image]) -> dict:
    """Dice per label of the tilted acquisition's truth (binary masks by name) brought onto the
    upright one's grid as the tilted results are (linear, at 0.5), against the upright truth."""
    agreement = {}
    for name, mask in upright.items():
        seen = _seen_by_both(tilted[name], mask)
        moved = resample_to_reference(sitk.Cast(tilted[name], sitk.sitkFloat32), mask, "linear")
        agreement[name] = _dice((sitk.GetArrayFromImage(mask) > 0) & seen,
                                (sitk.GetArrayFromImage(moved) >= 0.5) & seen)
    return agreement


def _masks(labels: sitk.Image, names: list[str]) -> dict[str, sitk.Image]:
    """A label map (1, 2, ... in ``names`` order) as one binary mask per name."""
    return {name: labels == k for k, name in enumerate(names, 1)}


def _rendered(module, storage: Storage, size, spacing, seed: int) -> dict[str, sitk.Image]:
    """A phantom module's truth masks rendered on ``storage``'s grid (before storing)."""
    grid = storage.grid(size, spacing)
    _, masks = module.render(grid_points(grid), case_rng(seed, 0), width=spacing[0])
    return {name: to_image(mask.astype(np.uint8), grid, sitk.sitkUInt8)
            for name, mask in masks.items()}


def check_storage_independence(run, images: dict, tilted: dict, names: list[str],
                               combine: str, truths: tuple[dict, dict],
                               same_network_input: bool = True) -> dict[str, list[float]]:
    """Dice per label of each storage's result against the LPS-stored one (permuted
    storages on the labels themselves; the tilted one on resampled probabilities). ``truths``:
    the upright and the tilted acquisition's truth masks by label name (binary: a segmenter
    whose map has no edge; printed).

    Network calls go through a memory (``network_memo``): a call whose input bytes the
    network has seen is answered with its earlier output, which a pure function would give
    anyway. With ``same_network_input`` the permuted storages must give the networks exactly
    the LPS-stored arrays (the shared reorientation is an exact permutation), i.e. run no
    network call of their own; a task that resamples onto its working grid (OAR-CT) reads
    the same physical points from another storage order with other rounding."""
    with remembered_networks() as memo:
        upright = run(images)
        first = memo.misses
        grid = upright.labels
        truth = sitk.GetArrayFromImage(grid)
        scores: dict[str, list[float]] = {n: [] for n in names}
        for code in STORAGES:
            result = run({r: sitk.DICOMOrient(i, code) for r, i in images.items()})
            assert orientation_of(result.labels) == code  # back on the grid as given
            on_upright = sitk.GetArrayFromImage(to_canonical(result.labels))
            for k, name in enumerate(names, 1):
                scores[name].append(_dice(truth == k, on_upright == k))
    print(f"network calls: {memo.misses} run, {memo.hits} answered from memory")
    if same_network_input:
        assert first > 0 and memo.misses == first and memo.hits == len(STORAGES) * first
    reference = _labelled(upright, grid, names, combine)
    moved = _labelled(run(tilted), grid, names, combine)
    seen = _seen_by_both(tilted[next(iter(tilted))], grid)
    for k, name in enumerate(names):
        scores[name].append(_dice(reference[k] & seen, moved[k] & seen))
    failing = {n: s for n, s in scores.items()
               if min(s[:-1]) < GOAL or s[-1] < BELOW_GOAL_WHEN_TILTED.get(n, GOAL)}
    print("Dice per label:", {n: [round(v, 3) for v in s] for n, s in scores.items()})
    print("Truths of the two acquisitions agree:",
          {n: round(v, 3) for n, v in truth_agreement(*truths).items()})
    assert not failing, f"Dice per label ({', '.join(STORAGES)}, tilted 20 degrees): {failing}"
    return scores


def _tilted_case(module, tmp_path, seed: int, read) -> tuple[dict, dict, dict]:
    """The same phantom case upright (LPS) and acquired tilted, read by ``read(folder)``."""
    module.generate_case(tmp_path / "upright", seed, 0)
    module.generate_case(tmp_path / "tilted", seed, 0, storage=TILTED)
    info = json.loads((tmp_path / "upright" / "case.json").read_text())
    return read(tmp_path / "upright"), read(tmp_path / "tilted"), info


def test_rectal_result_does_not_depend_on_storage(tmp_path):
    from oncoseg.io.volumes import read_image
    from oncoseg.phantoms import rectal

    def read(folder):
        return {r: read_image(folder / f"{r}.nii.gz") for r in ("t2w", "dwi_b0", "dwi_b1000")}

    images, tilted, _ = _tilted_case(rectal, tmp_path, 9107, read)
    check_storage_independence(
        lambda i: verbs.predict("rectal", i, "demo", {"registration": "rigid"}), images, tilted,
        ["Rectal tumour"], "threshold",
        tuple(_masks(read_image(tmp_path / f / "label.nii.gz"), ["Rectal tumour"])
              for f in ("upright", "tilted")))


def test_oar_ct_result_does_not_depend_on_storage_and_left_stays_left(tmp_path):
    from oncoseg.io.volumes import read_image
    from oncoseg.oar.ct.task import CT_SEGMENTS
    from oncoseg.phantoms import pelvis_ct

    images, tilted, _ = _tilted_case(pelvis_ct, tmp_path, 5107,
                                     lambda folder: {"ct": read_image(folder)})
    names = [s.name for s in CT_SEGMENTS]
    results = {}

    def run(given):
        prediction = verbs.predict("oar-ct", given)
        results.setdefault(orientation_of(given["ct"]), prediction)  # the upright LPS first
        return prediction

    check_storage_independence(run, images, tilted, names, "argmax", tuple(
        _rendered(pelvis_ct, storage, pelvis_ct.SIZE, pelvis_ct.SPACING, 5107)
        for storage in (Storage(), TILTED)), same_network_input=False)
    # a slab tilted by 30 degrees about the front-back axis cuts through the right femoral head:
    # what lies inside the CT is still found (with air right at the slab's edge: Dice 0.05),
    # every label as well as the two acquisitions' own truths agree, or 0.95
    turned = Storage("LPS", tuple(Rotation.from_euler("y", 30, degrees=True).as_matrix().ravel()))
    pelvis_ct.generate_case(tmp_path / "turned", 5107, 0, storage=turned)
    ct = read_image(tmp_path / "turned")
    grid = results["LPS"].labels
    prediction = verbs.predict("oar-ct", {"ct": ct})
    assert any("tilted by 30.0 degrees" in m and "continued for 15 mm" in m
               for m in prediction.messages)
    seen = _seen_by_both(ct, grid)
    upright = _labelled(results["LPS"], grid, names, "argmax")
    moved = _labelled(prediction, grid, names, "argmax")
    agree = truth_agreement(_rendered(pelvis_ct, Storage(), pelvis_ct.SIZE, pelvis_ct.SPACING,
                                      5107),
                            _rendered(pelvis_ct, turned, pelvis_ct.SIZE, pelvis_ct.SPACING,
                                      5107))
    scores = {n: _dice(upright[k] & seen, moved[k] & seen) for k, n in enumerate(names)}
    print("Tilted 30 degrees about the front-back axis:",
          {n: (round(scores[n], 3), round(agree[n], 3)) for n in names})
    assert all(scores[n] >= min(GOAL, agree[n]) - 0.01 for n in names), (scores, agree)
    # laterality: in LPS, +x is the patient's left
    results["turned"] = prediction
    for code in ("LPS", *STORAGES, "turned"):
        labels = results[code].labels
        left = _centroid(sitk.Cast(labels == names.index("Femoral head L") + 1, sitk.sitkUInt8))
        right = _centroid(sitk.Cast(labels == names.index("Femoral head R") + 1, sitk.sitkUInt8))
        assert left[0] > 30 and right[0] < -30, (code, left, right)


def test_oar_mr_result_does_not_depend_on_storage():
    from oncoseg.oar.mr.predict import resliced_note
    from oncoseg.oar.mr.preprocessing import network_view
    from oncoseg.oar.mr.task import GI_SEGMENTS
    from oncoseg.phantoms import gi

    def scan(storage: Storage) -> sitk.Image:
        grid = storage.grid((gi.SIZE, gi.SIZE, gi.SLICES),
                            (gi.PIXEL, gi.PIXEL, gi.SLICE_THICKNESS_MM))
        values, _ = gi.render(grid_points(grid), case_rng(6107, 0), width=gi.PIXEL)
        return to_image(np.clip(values * 20000, 0, 65535).astype(np.uint16), grid,
                        sitk.sitkUInt16)

    names = [s.name for s in GI_SEGMENTS]
    size, spacing = (gi.SIZE, gi.SIZE, gi.SLICES), (gi.PIXEL, gi.PIXEL, gi.SLICE_THICKNESS_MM)
    truths = tuple(dict(zip(names, _rendered(gi, storage, size, spacing, 6107).values(),
                            strict=True)) for storage in (Storage(), TILTED))
    check_storage_independence(lambda i: verbs.predict("oar-mr", i), {"mr": scan(Storage())},
                               {"mr": scan(TILTED)}, names, "threshold", truths)
    # the reader is told where the result was computed, and what it cannot cover
    tilted = scan(TILTED)
    note = resliced_note(tilted, network_view(tilted))
    assert len(note) == 1 and "tilted by 20.0 degrees" in note[0] and "128 x 128" in note[0]
    assert "% of its voxels" in note[0]
    assert resliced_note(scan(Storage()), network_view(scan(Storage()))) == []


def test_brain_result_does_not_depend_on_storage(tmp_path):
    from oncoseg.brain.task import TASK
    from oncoseg.io.volumes import read_image
    from oncoseg.phantoms import brain

    def read(folder):
        suffixes = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}
        return {r: read_image(folder / f"{folder.name}_{s}.nii.gz") for r, s in suffixes.items()}

    images, tilted, _ = _tilted_case(brain, tmp_path, 7107, read)
    names = [s.name for s in TASK.segments]
    # BraTS 2021 names (the phantom's default) store enhancing tumour as 4
    truths = tuple(_masks(sitk.ChangeLabel(read_image(f / f"{f.name}_seg.nii.gz"), {4: 3}), names)
                   for f in (tmp_path / "upright", tmp_path / "tilted"))
    check_storage_independence(lambda i: verbs.predict("brain", i), images, tilted, names,
                               "argmax", truths)


def test_staging_probability_does_not_depend_on_storage(tmp_path):
    from oncoseg.io.volumes import read_image
    from oncoseg.phantoms import staging

    upright, tilted, info = _tilted_case(staging, tmp_path, 3107,
                                         lambda folder: read_image(folder / "t2w.nii.gz"))
    roi = info["roi_lps_mm"]
    hints = verbs.Hints(roi_lps_mm=roi)
    reference = verbs.predict("staging", {"t2w": upright}, hints=hints)
    for image in [*(sitk.DICOMOrient(upright, c) for c in STORAGES), tilted]:
        result = verbs.predict("staging", {"t2w": image}, hints=hints)
        assert result.details["stage"] == reference.details["stage"]
        assert result.details["p_t3"] == pytest.approx(reference.details["p_t3"], abs=2e-3)
        # slice scores point at the same places whatever the storage order
        first = np.asarray(result.details["slice_centres_lps_mm"][0])
        assert np.allclose(first, reference.details["slice_centres_lps_mm"][0], atol=1.0) \
            or image is tilted


@pytest.mark.parametrize(("seed", "case", "axis"), [(3108, 0, "z"), (3107, 1, "x")])
def test_staging_reads_a_turned_t2w_at_the_models_crop_scale(tmp_path, seed, case, axis):
    """The network reads the model's 80 mm square on the T2w's own slices, turned or not. The
    ROI's corners projected onto a T2w turned by 30 degrees in-plane made the crop 1.37 times
    wider and the network read the rectum shrunk: five T2 phantoms of six became T3 (P(T3)
    0.84-0.999; this one 0.95). A T3 phantom stays T3 under a 30-degree tilt about the
    left-right axis too (0.96 before, 0.81 now: docs/RESULTS.md)."""
    from oncoseg.io.volumes import read_image
    from oncoseg.phantoms import staging

    turned = Storage("LPS", tuple(Rotation.from_euler(axis, 30, degrees=True).as_matrix().ravel()))
    results = []
    for name, storage in (("upright", Storage()), ("turned", turned)):
        info = staging.generate_case(tmp_path / name, seed, case, storage=storage)
        t2w = read_image(tmp_path / name / "t2w.nii.gz")
        results.append(verbs.predict("staging", {"t2w": t2w},
                                     hints=verbs.Hints(roi_lps_mm=info["roi_lps_mm"])))
    upright, turned_result = results
    print("P(T3) upright, turned by 30 degrees:", [r.details["p_t3"] for r in results])
    assert upright.details["stage"] == info["stage"] == turned_result.details["stage"]
    assert turned_result.details["p_t3"] == pytest.approx(upright.details["p_t3"], abs=0.2)
