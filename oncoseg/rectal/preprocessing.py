"""From three MR sequences as acquired to the standardised channels the network reads.

The DWI b0 grid is the reference (paper 000): it shows anatomy like the T2w and is aligned with
the high-b image of the same acquisition. The T2w is registered onto it with elastix (the
paper's B-spline preset); the high-b image is used as it is when it shares the b0 grid, and
registered like the T2w when it does not. Each sequence is then standardised to mean 0 and
standard deviation 1 over its own acquired voxels (its extreme 0.1 % on either side clipped
first: :mod:`oncoseg.intensity`), so that voxels outside a sequence's field of view read 0, the
same value the patch extraction pads with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import check_overlap, resample_to_reference, same_grid
from oncoseg.intensity import ZScore
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.validation import check_axial, check_volume

ROLES = ("t2w", "dwi_b0", "dwi_b1000")
REFERENCE = "dwi_b0"
# Each sequence must cover at least this fraction of the reference box: with less, most of the
# tumour's neighbourhood would be missing from one channel.
MIN_COVERAGE = 0.5


@dataclass
class PreparedCase:
    """The sequences on the reference grid, raw (for display) and as network channels."""

    images: dict[str, sitk.Image]  # role -> float32 image on the reference grid
    channels: np.ndarray  # (3, z, y, x) float32, standardised, in ROLES order
    registration: dict[str, Any] = field(default_factory=dict)  # per moving role: what was done
    messages: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def reference(self) -> sitk.Image:
        return self.images[REFERENCE]


def check_inputs(images: Mapping[str, sitk.Image]) -> None:
    """Every error a user can fix, before any work is done."""
    for role in ROLES:
        if role not in images:
            raise InputError(role, "is missing: the rectal task needs t2w, dwi_b0 and dwi_b1000")
    extra = sorted(set(images) - set(ROLES))
    if extra:
        raise InputError(extra[0], "is not an input of the rectal task (its inputs: "
                         f"{', '.join(ROLES)})")
    for role in ROLES:
        check_volume(images[role], role)
    check_axial(images[REFERENCE], REFERENCE, "the rectal model reads axial slices: give the "
                "axial DWI acquisition")
    for role in ("t2w", "dwi_b1000"):
        covered = check_overlap(images[role], images[REFERENCE], role, REFERENCE)
        if covered < MIN_COVERAGE:
            raise InputError(role, f"covers only {100 * covered:.0f} % of the {REFERENCE} "
                             "field of view; the sequences must show the same region (same "
                             "patient, same study)")


# Diffusion weighting only takes signal away: in tissue, the high-b image of an acquisition
# reads exp(-b ADC) of its b0, about 0.05-0.75 at b = 1000 s/mm2 (ADC 0.3-3e-3 mm2/s, fluid the
# lowest, restricted tumour the highest). Above this, the two are likely the other way round.
MAX_HIGH_B_RATIO = 1.0


def diffusion_order_note(b0: np.ndarray, high_b: np.ndarray) -> str | None:
    """A note when the high-b image is brighter than the b0 over the b0's brighter half (the
    body, not the air): the two given the other way round, which the network reads as no
    tumour (an empty result on a phantom whose own gives 17 mL). A note, not a refusal: b0
    and high-b images from separate series may each have been scaled on their own."""
    tissue = b0 > max(float(np.median(b0)), 0.0)
    if not tissue.any():
        return None
    ratio = float(np.median(high_b[tissue] / b0[tissue]))
    if ratio <= MAX_HIGH_B_RATIO:
        return None
    return (f"dwi_b1000 reads {ratio:.1f} times dwi_b0 over the b0's brighter half, but "
            "diffusion weighting only lowers signal (about 0.05-0.75 of the b0 in tissue at b = "
            "1000 s/mm2): check that the two were not given the other way round")


def _to_reference(role: str, image: sitk.Image, reference: sitk.Image, method: str,
                  mean: float, progress: ProgressCallback | None, cancel: CancelToken | None,
                  child_python: str | None = None) -> tuple[sitk.Image, dict[str, Any]]:
    """``image`` on the reference grid; outside its field of view it reads ``mean``, its own."""
    if same_grid(image, reference, tolerance=1e-4):
        return sitk.Cast(image, sitk.sitkFloat32), {"method": "same grid"}
    if method == "none":
        resampled = resample_to_reference(image, reference, "linear", default_value=mean,
                                          names=(role, REFERENCE))
        return resampled, {"method": "resampled (registration off)"}
    from oncoseg.registration import register

    result = register(reference, image, preset=method, names=(REFERENCE, role),
                      overrides={"DefaultPixelValue": mean}, progress=progress, cancel=cancel,
                      child_python=child_python)
    return sitk.Cast(result.warped, sitk.sitkFloat32), {
        "method": f"elastix preset '{method}'", "seconds": round(result.seconds, 2),
        "final_metric": result.final_metric}


def prepare(images: Mapping[str, sitk.Image], registration: str = "rectal",
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, child_python: str | None = None
            ) -> PreparedCase:
    """Check, bring onto the b0 grid (registering as configured) and standardise;
    ``child_python``: register in a child process of that interpreter (see
    :func:`oncoseg.registration.register`)."""
    check_inputs(images)
    # each sequence's own scale, before registering (an input without an image is refused
    # before any time is spent on it)
    scales = {role: ZScore.of(sitk.GetArrayViewFromImage(images[role]), role) for role in ROLES}
    reference = sitk.Cast(images[REFERENCE], sitk.sitkFloat32)
    on_grid: dict[str, sitk.Image] = {REFERENCE: reference}
    done: dict[str, Any] = {}
    for role in ("t2w", "dwi_b1000"):
        check_cancelled(cancel)
        report(progress, "Preparing", ROLES.index(role), len(ROLES),
               message=f"{role} onto the {REFERENCE} grid")
        on_grid[role], done[role] = _to_reference(role, images[role], reference, registration,
                                                  scales[role].mean, progress, cancel,
                                                  child_python)
    channels = np.empty((len(ROLES), *sitk.GetArrayViewFromImage(reference).shape), np.float32)
    for index, role in enumerate(ROLES):
        channels[index] = scales[role].apply(sitk.GetArrayViewFromImage(on_grid[role]))
    report(progress, "Preparing", len(ROLES), len(ROLES))
    note = diffusion_order_note(sitk.GetArrayViewFromImage(reference),
                                sitk.GetArrayViewFromImage(on_grid["dwi_b1000"]))
    return PreparedCase({r: on_grid[r] for r in ROLES}, channels, done,
                        [note] if note else [])
