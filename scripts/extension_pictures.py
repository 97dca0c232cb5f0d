"""Remake the extension's pictures from OncoSeg itself.

    python scripts/extension_pictures.py [--only thumbnails|icon|screenshots]

- ``OncoSegCommon/Resources/Icons/<task>.png``: Sample Data's thumbnail of each phantom sample
  (:data:`OncoSegCommonLib.sample_data.SAMPLES`), drawn from the very case the sample loads
  (same task, same seed): four views as Slicer's own sample thumbnails have (288 x 261 pixels,
  Slicer Modules/Scripted/SampleData/Resources/Icons at v5.10.0), the reference segmentation
  drawn in its segments' colours where the case has one.
- ``Resources/Icons/OncoSeg.png``: the extension's 128 x 128 icon (the size the Extensions
  Index recommends), four of the demo models' results on phantom cases they never saw
  (rectal tumour, pelvic organs on CT, GI tract on MR, brain tumour).
- ``Resources/Screenshots/<task>.png``: each task's demo model on such a case, the
  ``overview.png`` that ``oncoseg demo`` and ``oncoseg predict`` write.

Runs in the test environment (``pip install -e '.[test]'``: the sample data module needs
slicer-core); a few minutes on a CPU. Phantoms and demo models are deterministic, so the
pictures only change when the phantoms, the models or the drawing change.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's engine, wherever the script is started from

from oncoseg.frontends import add_module_folders  # noqa: E402

add_module_folders()

from oncoseg.datasets import read_dataset  # noqa: E402
from oncoseg.demo import DEMO_CASE_SEED  # noqa: E402
from oncoseg.io.volumes import read_image  # noqa: E402
from oncoseg.orientation import to_canonical  # noqa: E402
from oncoseg.overview import save_overview  # noqa: E402
from oncoseg.tasks import SegmentSpec, get_task  # noqa: E402
from oncoseg.verbs import phantom, predict  # noqa: E402
from OncoSegCommonLib.sample_data import SAMPLES, sample_case  # noqa: E402

THUMBNAILS = ROOT / "OncoSegCommon" / "Resources" / "Icons"
ICON = ROOT / "Resources" / "Icons" / "OncoSeg.png"
SCREENSHOTS = ROOT / "Resources" / "Screenshots"
THUMBNAIL_SIZE = (288, 261)
ICON_SIZE = 128
ICON_TASKS = ("rectal", "oar-ct", "oar-mr", "brain")  # the segmentation results it shows


# ---------------------------------------------------------------------------- drawing


def windowed(array: np.ndarray) -> np.ndarray:
    """Grey levels 0..255 between the volume's 1st and 99.5th percentiles."""
    low, high = np.percentile(array, [1, 99.5])
    scaled = (array.astype(np.float32) - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def overlaid(grey: np.ndarray, labels: np.ndarray | None,
             segments: Sequence[SegmentSpec], alpha: float = 0.45) -> np.ndarray:
    """RGB of a grey slice, each segment filled half-transparent with its edge opaque."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if labels is not None:
        for segment in segments:
            mask = labels == segment.label
            if not mask.any():
                continue
            colour = np.array(segment.color, np.float32) * 255
            inner = mask.copy()
            inner[1:-1, 1:-1] &= (mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2]
                                  & mask[1:-1, 2:])
            edge = mask & ~inner
            rgb[inner] = (1 - alpha) * rgb[inner] + alpha * colour
            rgb[edge] = colour
    return rgb.astype(np.uint8)


def slice_picture(rgb: np.ndarray, row_mm: float, column_mm: float) -> Image.Image:
    """A slice's RGB array as a picture with square millimetres (rows stretched to the
    columns' spacing)."""
    picture = Image.fromarray(rgb)
    height = max(1, round(rgb.shape[0] * row_mm / column_mm))
    return picture.resize((rgb.shape[1], height), Image.Resampling.BILINEAR)


def fitted(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``picture`` scaled to fit ``size``, centred on black."""
    scale = min(size[0] / picture.width, size[1] / picture.height)
    shown = picture.resize((max(1, round(picture.width * scale)),
                            max(1, round(picture.height * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size)
    canvas.paste(shown, ((size[0] - shown.width) // 2, (size[1] - shown.height) // 2))
    return canvas


def centre_of(labels: np.ndarray | None, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (z, y, x) voxel the views cut through: the labelled voxels' centre, else the
    middle of the volume."""
    if labels is None or not labels.any():
        return tuple(n // 2 for n in shape)  # type: ignore[return-value]
    return tuple(round(float(c)) for c in np.argwhere(labels > 0).mean(axis=0))  # type: ignore


def three_views(image: sitk.Image, labels: np.ndarray | None,
                segments: Sequence[SegmentSpec]) -> dict[str, Image.Image]:
    """Axial, sagittal and coronal pictures of a canonical (LPS) volume through the
    segmentation's centre, as Slicer shows them: axial radiological (patient's right on the
    left, anterior up), sagittal anterior on the left, superior up in both others."""
    array = windowed(sitk.GetArrayFromImage(image))  # (z, y, x): I->S, A->P, R->L
    sx, sy, sz = image.GetSpacing()
    z, y, x = centre_of(labels, array.shape)

    def cut(index):
        grey = array[index]
        return overlaid(grey, None if labels is None else labels[index], segments)

    axial = cut((z, slice(None), slice(None)))
    coronal = cut((slice(None), y, slice(None)))[::-1]  # superior up
    sagittal = cut((slice(None), slice(None), x))[::-1]
    return {"axial": slice_picture(axial, sy, sx),
            "coronal": slice_picture(coronal, sz, sx),
            "sagittal": slice_picture(sagittal, sz, sy)}


def four_up(pictures: Sequence[Image.Image], size: tuple[int, int], gap: int = 2) -> Image.Image:
    """Four pictures in a 2 x 2 grid on black, as Slicer's four-up thumbnails."""
    width, height = (size[0] - gap) // 2, (size[1] - gap) // 2
    canvas = Image.new("RGB", size)
    for i, picture in enumerate(pictures):
        canvas.paste(fitted(picture, (width, height)),
                     ((i % 2) * (width + gap), (i // 2) * (height + gap)))
    return canvas


# ---------------------------------------------------------------------------- the pictures


def sample_thumbnail(task: str, cache: Path) -> Image.Image:
    """Sample Data's thumbnail of ``task``'s sample: the case ``sample_case`` writes (what a
    click on the sample loads), its first role in three views with the reference segmentation,
    and a second role's axial view (a single-role case: a lower axial slice) next to them."""
    spec = get_task(task)
    case = sample_case(task, cache)
    roles = list(case.images)
    image = case.read(roles[0])  # canonical
    labels = case.label_on(image, roles[0]) if case.labels and spec.segments else None
    views = three_views(image, labels, spec.segments)
    if len(roles) > 1:
        second = three_views(case.read(roles[1]), None, ())["axial"]
    else:
        depth = image.GetSize()[2]
        z = max(0, centre_of(labels, image.GetSize()[::-1])[0] - depth // 4)
        lower = windowed(sitk.GetArrayFromImage(image))[z]
        second = slice_picture(overlaid(lower, None, ()), image.GetSpacing()[1],
                               image.GetSpacing()[0])
    return four_up([views["axial"], second, views["sagittal"], views["coronal"]],
                   THUMBNAIL_SIZE)


def demo_prediction(task: str, folder: Path):
    """The task's demo model on a phantom case it did not see (the demo's seed)."""
    phantom(task, folder / task, cases=1, seed=DEMO_CASE_SEED)
    case = read_dataset(folder / task).cases[0]  # (a GI-tract phantom: one case per day)
    return predict(task, {role: read_image(path) for role, path in case.images.items()}, "demo")


def icon_tile(prediction, size: int) -> Image.Image:
    """The result's axial slice through its largest segmented area, cropped around the
    segmentation (with a margin) and drawn in the segments' colours."""
    image = to_canonical(prediction.images[prediction.display_role])
    labels = sitk.GetArrayFromImage(to_canonical(prediction.labels))
    array = windowed(sitk.GetArrayFromImage(image))
    k = int(np.argmax((labels > 0).reshape(labels.shape[0], -1).sum(axis=1)))
    rgb = overlaid(array[k], labels[k], prediction.segments, alpha=0.6)
    sx, sy, _ = image.GetSpacing()
    rows, columns = np.nonzero(labels[k])
    margin_mm = 25.0
    top, bottom = rows.min() - margin_mm / sy, rows.max() + margin_mm / sy
    left, right = columns.min() - margin_mm / sx, columns.max() + margin_mm / sx
    # a square in millimetres, centred on the segmentation
    half_mm = max((bottom - top) * sy, (right - left) * sx) / 2
    cy, cx = (top + bottom) / 2, (left + right) / 2
    # a square in millimetres centred on the segmentation; PIL pads beyond the slice with black
    crop = Image.fromarray(rgb).crop((round(cx - half_mm / sx), round(cy - half_mm / sy),
                                      round(cx + half_mm / sx), round(cy + half_mm / sy)))
    return fitted(slice_picture(np.asarray(crop), sy, sx), (size, size))


def extension_icon(predictions: dict[str, object]) -> Image.Image:
    """128 x 128, four results in rounded tiles on a transparent background."""
    gap = 4
    tile = (ICON_SIZE - gap) // 2
    icon = Image.new("RGBA", (ICON_SIZE, ICON_SIZE), (0, 0, 0, 0))
    mask = Image.new("L", (tile, tile))
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, tile - 1, tile - 1), radius=8, fill=255)
    for i, task in enumerate(ICON_TASKS):
        picture = icon_tile(predictions[task], tile).convert("RGBA")
        icon.paste(picture, ((i % 2) * (tile + gap), (i // 2) * (tile + gap)), mask)
    return icon


def save_png(picture: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT)} ({picture.width} x {picture.height})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("thumbnails", "icon", "screenshots"))
    only = parser.parse_args(argv).only
    with tempfile.TemporaryDirectory(prefix="oncoseg-pictures-") as scratch:
        scratch = Path(scratch)
        if only in (None, "thumbnails"):
            for task in SAMPLES:
                save_png(sample_thumbnail(task, scratch / "samples"), THUMBNAILS / f"{task}.png")
        if only in (None, "icon", "screenshots"):
            tasks = ICON_TASKS if only == "icon" else tuple(SAMPLES)
            predictions = {task: demo_prediction(task, scratch / "demo") for task in tasks}
            if only in (None, "icon"):
                save_png(extension_icon(predictions), ICON)
            if only in (None, "screenshots"):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                for task, prediction in predictions.items():
                    save_overview(prediction, SCREENSHOTS / f"{task}.png")
                    print(f"wrote {(SCREENSHOTS / f'{task}.png').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
