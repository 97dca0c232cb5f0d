"""What BrainTumor2D3D must do on a scene, written once for pytest on slicer-core and for
BrainTumor2D3DTest in the application. Each takes an MRML context and a scratch folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BrainTumor2D3DLib.logic import ROLES, BrainParameters, BrainTumorLogic, guess_inputs
from oncoseg.datasets.layouts import read_dataset
from oncoseg.errors import InputError
from oncoseg.metrics import brats_regions, dice
from oncoseg.verbs import phantom
from OncoSegCommonLib.checks import cancelling_mid_run_changes_nothing, refused_without_change
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.segmentations import input_nodes
from OncoSegCommonLib.volumes import volume_node_from_image

PHANTOM_SEED = 4343  # not a seed the demo ensemble trained on


def load_phantom(context: MRMLContext, folder: Path, naming: str = "brats2023"):
    """The four sequences as volume nodes named as BraTS names the files, and the case."""
    phantom("brain", folder, cases=1, seed=PHANTOM_SEED, layout=naming)
    case = read_dataset(folder).cases[0]
    nodes = {role: volume_node_from_image(context.scene, case.read(role),
                                          Path(case.images[role]).name.split(".")[0])
             for role in ROLES}
    return nodes, case


def selectors_fill_from_brats_names(context: MRMLContext, folder: Path) -> None:
    for naming in ("brats2021", "brats2023"):
        context.scene.Clear(0)
        nodes, _ = load_phantom(context, folder / naming, naming)
        assert guess_inputs(context.scene) == nodes, naming


def whole_tumour_matches_the_phantom(context: MRMLContext, folder: Path) -> None:
    nodes, case = load_phantom(context, folder)
    result = BrainTumorLogic(context).run(nodes, BrainParameters(members=True).request())
    segmentation = result.nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    assert len(result.nodes.probabilities) == 3 and len(result.member_nodes) == 2
    assert set(result.member_nodes) <= set(result.all_nodes())
    truth = case.label_on(case.read("t1c"), "t1c") > 0  # any BraTS label is tumour
    predicted = brats_regions(sitk.GetArrayViewFromImage(result.prediction.labels))[
        "whole tumour"]
    assert dice(predicted, truth) > 0.7, dice(predicted, truth)
    rows = {r["region"]: r["volume_ml"] for r in result.rows()}
    assert rows["whole tumour"] >= rows["tumour core"] >= rows["enhancing tumour"] > 0
    # a refine click reads the four sequences the ensemble read, not Segment Editor's one
    assert input_nodes(result.nodes.segmentation) == [nodes[role] for role in ROLES]


def a_missing_flair_still_segments(context: MRMLContext, folder: Path) -> None:
    nodes, _ = load_phantom(context, folder)
    nodes["flair"] = None
    result = BrainTumorLogic(context).run(nodes, BrainParameters(probabilities=False).request())
    assert result.prediction.details["sequences_used"] == ["t1", "t1c", "t2"]
    assert "t1, t1c, t2" in result.summary()
    assert not result.nodes.probabilities and not result.member_nodes  # as asked
    assert input_nodes(result.nodes.segmentation) == [nodes[r] for r in ("t1", "t1c", "t2")]
    assert np.any(sitk.GetArrayViewFromImage(result.prediction.labels))


def no_sequence_is_refused_and_changes_nothing(context: MRMLContext, folder: Path) -> None:
    refused_without_change(context, lambda: BrainTumorLogic(context).run(dict.fromkeys(ROLES)),
                           InputError, "at least one")


def cancelling_leaves_the_scene_unchanged(context: MRMLContext, folder: Path) -> None:
    nodes, _ = load_phantom(context, folder)
    cancelling_mid_run_changes_nothing(
        context, lambda progress, cancel: BrainTumorLogic(context).run(
            nodes, progress=progress, cancel=cancel), stage="2D-3D models")


ALL = (selectors_fill_from_brats_names, whole_tumour_matches_the_phantom,
       a_missing_flair_still_segments, no_sequence_is_refused_and_changes_nothing,
       cancelling_leaves_the_scene_unchanged)
