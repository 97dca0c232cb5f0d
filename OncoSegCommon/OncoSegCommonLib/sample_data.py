"""Phantom cases as Slicer sample data: one entry per task under the category OncoSeg.

Nothing is downloaded: the first click writes the task's phantom case (deterministic, a few
seconds) into Slicer's cache folder, later clicks load it from there. The images become volume
nodes named ``<case> <role>`` (the module panels' selectors recognise the roles), and a case's
label file, where the task has segments, a reference segmentation on the task's reference grid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from oncoseg.datasets import Case, read_dataset
from oncoseg.io.volumes import list_dicom_series
from oncoseg.tasks import get_task
from oncoseg.verbs import phantom
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.export import SERIES_FOLDER_ATTRIBUTE
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.segmentations import segmentation_node_from_labels
from OncoSegCommonLib.volumes import volume_node_from_image

CATEGORY = "OncoSeg"
SAMPLE_SEED = 7
SAMPLES = {
    "rectal": "Rectal MR (T2w, DWI)",
    "oar-ct": "Pelvic CT (OARs)",
    "oar-mr": "Abdominal MR (GI tract)",
    "staging": "Rectal T2w (staging)",
    "brain": "Brain MR (BraTS)",
}


def sample_case(task: str, cache: Path) -> Case:
    """The task's phantom case, written into ``cache`` on first use."""
    folder = cache / f"{task}-phantom"
    if not folder.exists():
        phantom(task, folder, cases=1, seed=SAMPLE_SEED)
    return read_dataset(folder).cases[0]


def load_sample(context: MRMLContext, task: str, cache: Path) -> list[Any]:
    """Add the sample's nodes (volumes, then the reference segmentation); all or none."""
    spec = get_task(task)
    case = sample_case(task, cache)
    before = set(node_ids(context.scene))
    try:
        nodes, images = [], {}
        for role, path in case.images.items():
            images[role] = case.read(role)
            node = volume_node_from_image(context.scene, images[role], f"{case.id} {role}")
            if path.is_dir() and list_dicom_series(path):  # exports can reference it
                node.SetAttribute(SERIES_FOLDER_ATTRIBUTE, str(path))
            nodes.append(node)
        reference_role = spec.reference_role if spec.reference_role in images else \
            next(iter(images))
        if case.labels and spec.segments:
            reference = images[reference_role]
            labels = sitk.GetImageFromArray(case.label_on(reference, reference_role,
                                                          segments=spec.segments))
            labels.CopyInformation(reference)
            volume = nodes[list(images).index(reference_role)]
            nodes.append(segmentation_node_from_labels(
                context.scene, labels, spec.segments, volume, f"{case.id} reference"))
    except Exception:
        remove_nodes_added_since(context.scene, before)
        raise
    return nodes


def register_sample_data(register: Callable[..., None], load: Callable[[str], Any],
                         icons: Path) -> None:
    """``register`` is ``SampleDataLogic.registerCustomSampleDataSource``; ``load(task)``
    loads a sample into the application's scene."""
    for task, title in SAMPLES.items():
        icon = icons / f"{task}.png"
        register(category=CATEGORY, sampleName=title, uris=f"oncoseg-phantom:{task}",
                 fileNames=f"{task}-phantom", nodeNames=None,
                 customDownloader=lambda source, task=task: load(task),
                 thumbnailFileName=str(icon) if icon.exists() else None)
