"""Glioma phantom in BraTS layout (BrainTumor2D3D, paper 004).

A skull-stripped head with white matter, grey matter and ventricles, and a tumour made of a
necrotic / non-enhancing core, an enhancing rim and surrounding oedema, each with the contrast
it has in T1, T1c, T2 and FLAIR (e.g. the rim is bright only in T1c, oedema is bright in T2 and
FLAIR, ventricles are bright in T2 but dark in FLAIR). Written with the 2017-2021 file names
(labels 1, 2, 4) or the 2023+ ones (labels 1, 2, 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oncoseg.phantoms import common
from oncoseg.phantoms.common import ellipsoid_distance, lumpy, soft

# T1, T1c, T2, FLAIR
TISSUES = {
    "csf": (0.15, 0.16, 1.00, 0.10),
    "grey matter": (0.45, 0.47, 0.66, 0.56),
    "white matter": (0.70, 0.72, 0.45, 0.46),
    "oedema": (0.50, 0.52, 0.86, 0.88),
    "necrosis": (0.24, 0.27, 0.92, 0.62),
    "enhancing": (0.50, 0.96, 0.70, 0.72),
}
# OncoSeg's labels: 1 necrotic / non-enhancing core, 2 oedema, 3 enhancing
NAMINGS = {
    "brats2021": {"folder": "BraTS2021_{n:05d}", "sequences": {"t1": "t1", "t1c": "t1ce",
                                                              "t2": "t2", "flair": "flair"},
                  "separator": "_", "enhancing_label": 4},
    "brats2023": {"folder": "BraTS-GLI-{n:05d}-000", "sequences": {"t1": "t1n", "t1c": "t1c",
                                                                  "t2": "t2w", "flair": "t2f"},
                  "separator": "-", "enhancing_label": 3},
}


@dataclass(frozen=True)
class BrainGeometry:
    size: tuple[int, int, int] = (80, 96, 64)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)


def render(points: np.ndarray, rng: np.random.Generator, width: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensities (..., 4), labels (1 core, 2 oedema, 3 enhancing) and the brain mask."""
    wobble = np.random.default_rng(rng.integers(2**32))
    brain = soft(ellipsoid_distance(points, (0, 0, 0), (66, 82, 58))
                 + lumpy(points, wobble, 1.5, 30.0), width)
    white = soft(ellipsoid_distance(points, (0, 0, 2), (52, 66, 44))
                 + lumpy(points, wobble, 4.0, 14.0), width)
    ventricles = sum(soft(ellipsoid_distance(points, (side * 7, -4, 8), (5, 22, 10)), width)
                     for side in (-1, 1))
    side = rng.choice([-1, 1])
    centre = (side * rng.uniform(18, 32), rng.uniform(-30, 30), rng.uniform(-12, 18))
    core_r = rng.uniform(6, 11)
    rim = rng.uniform(3.0, 5.0)
    shape = np.random.default_rng(rng.integers(2**32))
    tumour_d = ellipsoid_distance(points, centre, (core_r + rim,) * 3) + lumpy(points, shape,
                                                                               1.5, 12.0)
    oedema_d = ellipsoid_distance(points, centre, (core_r + rim + rng.uniform(8, 18),) * 3) \
        + lumpy(points, shape, 4.0, 16.0)
    layers = [("grey matter", brain), ("white matter", white * brain),
              ("csf", np.minimum(ventricles, 1.0) * brain),
              ("oedema", soft(oedema_d, width) * brain),
              ("enhancing", soft(tumour_d, width) * brain),
              ("necrosis", soft(tumour_d + rim, width) * brain)]
    values = common.blend(layers, TISSUES, points.shape[:-1])
    labels = np.zeros(points.shape[:-1], np.uint8)
    labels[(soft(oedema_d, width) > 0.5) & (brain > 0.5)] = 2
    labels[(soft(tumour_d, width) > 0.5) & (brain > 0.5)] = 3
    labels[(soft(tumour_d + rim, width) > 0.5) & (brain > 0.5)] = 1
    return values, labels, brain


def case_folder_name(index: int, naming: str) -> str:
    return NAMINGS[naming]["folder"].format(n=index)


def generate_case(folder: Path, seed: int, case: int, naming: str = "brats2021",
                  geometry: BrainGeometry | None = None,
                  storage: common.Storage = common.UPRIGHT_LPS) -> dict:
    g = geometry or BrainGeometry()
    convention = NAMINGS[naming]
    rng = common.case_rng(seed, case)
    grid = storage.grid(g.size, g.spacing)
    points = common.grid_points(grid)
    values, labels, brain = render(points, rng, width=min(g.spacing))
    name = folder.name
    folder.mkdir(parents=True, exist_ok=True)
    sep = convention["separator"]
    for index, suffix in enumerate(convention["sequences"].values()):
        signal = common.scan(values[..., index], points, rng, bias=0.2, noise=0.025)
        signal *= brain > 0.05  # skull-stripped: zero outside the brain
        storage.write_signal(folder / f"{name}{sep}{suffix}.nii.gz", signal, grid)
    on_disk = labels.copy()
    on_disk[labels == 3] = convention["enhancing_label"]
    storage.write_labels(folder / f"{name}{sep}seg.nii.gz", on_disk, grid)
    info = {"task": "brain", "case": name, "seed": seed, "index": case, "synthetic": True,
            "naming": naming, "stored_as": storage.describe(),
            "voxels": {str(k): int((labels == k).sum()) for k in (1, 2, 3)}}
    return common.write_case_info(folder, info)
