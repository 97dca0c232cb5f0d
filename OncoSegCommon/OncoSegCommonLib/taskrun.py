"""Running an engine task on volume nodes, in two halves.

``images_from_nodes`` copies the inputs out of the scene (main thread); the task's ``predict``
then runs anywhere, a worker thread included, touching no node; ``add_prediction`` puts the
results into the scene (main thread) all at once or not at all. A run cancelled or failed before
the last half therefore leaves the scene exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.prediction import Prediction
from OncoSegCommonLib.probability import show_probability_map
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.segmentations import (
    MODEL_ATTRIBUTE,
    PROBABILITY_SUFFIX,
    TASK_ATTRIBUTE,
    link_inputs,
    link_probability,
    segmentation_node_from_labels,
)
from OncoSegCommonLib.volumes import image_from_volume_node, volume_node_from_image


@dataclass
class PredictionNodes:
    """The nodes one run added to the scene."""

    segmentation: Any | None = None
    probabilities: dict[str, Any] = field(default_factory=dict)  # segment name -> volume node
    volumes: dict[str, Any] = field(default_factory=dict)  # role -> resampled input volume

    def all(self) -> list[Any]:
        nodes = [self.segmentation] if self.segmentation is not None else []
        return nodes + list(self.probabilities.values()) + list(self.volumes.values())


def images_from_nodes(nodes: Mapping[str, Any]) -> dict[str, sitk.Image]:
    """Copies of the selected volumes, by role; a role without a volume is an input error."""
    images = {}
    for role, node in nodes.items():
        if node is None:
            raise InputError(role, "has no volume selected")
        try:
            images[role] = image_from_volume_node(node)
        except ValueError as error:
            raise InputError(f"{role} ('{node.GetName()}')", str(error)) from None
    return images


def moved_roles(prediction: Prediction) -> list[str]:
    """The roles the run's registration moved onto the reference grid (its
    ``details['registration']``: every role it handled but those already on that grid)."""
    return [role for role, done in prediction.details.get("registration", {}).items()
            if done.get("method") != "same grid"]


def unmoved_inputs(registered_roles: Iterable[str], nodes: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """The input nodes that hold their image where the model read it (``add_prediction``'s
    ``inputs``): a role the task may register lies elsewhere in its own node (a front end
    that adds the registered copy links that instead)."""
    moved = set(registered_roles)
    return {role: node for role, node in nodes.items()
            if node is not None and role not in moved}


def add_prediction(scene: Any, prediction: Prediction, prefix: str, reference_node: Any,
                   volume_roles: Iterable[str] = (), display_role: str | None = None,
                   opacity: float = 0.5, inputs: Mapping[str, Any] | None = None
                   ) -> PredictionNodes:
    """Segmentation, probability overlays and the inputs as the model saw them (the roles
    given, e.g. the registered T2w), as new nodes; nothing is added if any step fails.

    ``inputs``: role -> the volume node holding that image as the model read it (a run's input
    nodes; a role in ``volume_roles`` is linked to its new registered node instead). The
    segmentation records them (:func:`link_inputs`): refine reads every sequence the model
    read, as the benchmark measures it (docs/RESULTS.md, "Click refinement")."""
    before = set(node_ids(scene))
    added = PredictionNodes()
    try:
        for role in volume_roles:
            added.volumes[role] = volume_node_from_image(
                scene, prediction.images[role], f"{prefix} {role} (registered)")
        background = added.volumes.get(display_role or "", reference_node)
        if prediction.labels is not None:
            added.segmentation = segmentation_node_from_labels(
                scene, prediction.labels, prediction.segments, reference_node,
                f"{prefix} segmentation")
            added.segmentation.SetAttribute(MODEL_ATTRIBUTE, json.dumps(prediction.model))
            added.segmentation.SetAttribute(TASK_ATTRIBUTE, prediction.task)
            seen = {**(inputs or {}), **added.volumes}
            link_inputs(added.segmentation, [seen[role] for role in prediction.images
                                             if seen.get(role) is not None])
        for name, image in prediction.probabilities.items():
            added.probabilities[name] = show_probability_map(
                scene, image, f"{prefix} {name}{PROBABILITY_SUFFIX}", background, opacity)
            if added.segmentation is not None:
                link_probability(added.segmentation, name, added.probabilities[name])
    except Exception:
        remove_nodes_added_since(scene, before)
        raise
    return added
