"""NIfTI files whose two placements disagree, as tests need them: the qform as the file had it,
an ALIGNED_ANAT sform that mirrors it along the first voxel axis (ITK and 3D Slicer read the
qform, nibabel the sform: the same voxels on the patient's other side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def mirrored_in_x(affine: np.ndarray, size_x: int) -> np.ndarray:
    """``affine`` with its first voxel axis reversed, covering the same voxels' box."""
    mirrored = np.array(affine, float)
    mirrored[:, 0] *= -1
    mirrored[:3, 3] = affine[:3, 3] + affine[:3, 0] * (size_x - 1)
    return mirrored


def with_mirrored_sform(source: Path, target: Path) -> Path:
    """``source`` written to ``target`` with its qform (code SCANNER_ANAT) and a mirroring
    sform (code ALIGNED_ANAT)."""
    import nibabel as nib

    image = nib.load(source)
    qform = image.header.get_qform()
    out = nib.Nifti1Image(np.asanyarray(image.dataobj), None, header=image.header.copy())
    out.set_qform(qform, code=1)
    out.set_sform(mirrored_in_x(qform, image.shape[0]), code=2)
    nib.save(out, target)
    return target
