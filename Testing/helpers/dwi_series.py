"""Diffusion-weighted acquisitions written the way scanners and converters store them, made
from the rectal phantom's b0 and b1000 images: one DICOM series holding every b-value (in the
standard tag or a vendor's private one), a 4D NIfTI with its .bval / .bvec, a DWMRI NRRD.

Images at other b-values follow the mono-exponential model S_b = S0 exp(-b ADC) with each
voxel's ADC = ln(S0 / S1000) / 1000; directional images at one b-value are the trace image
times exp(-b d_k) with sum_k d_k = 0, so that their geometric mean is the trace image again
(what a scanner's TRACEW image is).
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
VENDORS = ("standard", "siemens", "siemens-csa", "ge", "philips")
MANUFACTURERS = {"standard": "OncoSeg", "siemens": "SIEMENS", "siemens-csa": "SIEMENS",
                 "ge": "GE MEDICAL SYSTEMS", "philips": "Philips Medical Systems"}
# Three orthogonal gradient directions, as a 3-scan trace acquisition uses.
ORTHOGONAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

Volume = tuple[float, "tuple[float, float, float] | None", sitk.Image]  # (b, direction, image)


def adc_image(b0: sitk.Image, b1000: sitk.Image) -> np.ndarray:
    """Each voxel's apparent diffusion coefficient (mm^2/s) from b0 and b1000."""
    s0 = np.maximum(sitk.GetArrayFromImage(b0).astype(np.float64), 1e-6)
    s1 = np.maximum(sitk.GetArrayFromImage(b1000).astype(np.float64), 1e-6)
    return np.clip(np.log(s0 / s1) / 1000.0, 0.0, 5e-3)


def at_b_value(b0: sitk.Image, b1000: sitk.Image, b_value: float) -> sitk.Image:
    """The image at ``b_value`` by the mono-exponential model (b0 and b1000 come back as
    given, up to rounding)."""
    s0 = sitk.GetArrayFromImage(b0).astype(np.float64)
    image = sitk.GetImageFromArray((s0 * np.exp(-b_value * adc_image(b0, b1000)))
                                   .astype(np.float32))
    image.CopyInformation(b0)
    return image


def directional(trace: sitk.Image, b_value: float, spread: float = 3e-4
                ) -> list[tuple[tuple[float, float, float], sitk.Image]]:
    """Three orthogonal-direction images whose geometric mean is ``trace`` (anisotropy
    ``spread`` mm^2/s)."""
    offsets = (spread, -0.4 * spread, -0.6 * spread)  # sum 0
    array = sitk.GetArrayFromImage(trace).astype(np.float64)
    out = []
    for k, direction in enumerate(ORTHOGONAL):
        image = sitk.GetImageFromArray((array * np.exp(-b_value * offsets[k]))
                                       .astype(np.float32))
        image.CopyInformation(trace)
        out.append((direction, image))
    return out


def csa_header(tags: dict[str, Sequence[str]]) -> bytes:
    """A Siemens CSA2 ('SV10') header holding ``tags`` (name -> values as text)."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, values in tags.items():
        out.append(struct.pack("<64si4s3i", name.encode(), len(values), b"DS\0\0", 3,
                               len(values), 77))
        for value in values:
            data = value.encode() + b"\0"
            out.append(struct.pack("<4i", len(data), len(data), 77, len(data)))
            out.append(data + b"\0" * (-len(data) % 4))
    return b"".join(out)


def _vendor_tags(ds: pydicom.Dataset, vendor: str, b_value: float,
                 direction: tuple[float, float, float] | None, creators: bool) -> None:
    def block(group: int, creator: str):
        if creators:
            return ds.private_block(group, creator, create=True)
        return None

    def put(group: int, creator: str, offset: int, vr: str, value) -> None:
        owner = block(group, creator)
        if owner is not None:
            owner.add_new(offset, vr, value)
        else:  # the private creator stripped (some anonymisers), the element kept in place
            ds.add_new((group, 0x1000 | offset), vr, value)

    directional_text = "DIRECTIONAL" if direction is not None else "NONE"
    if vendor == "standard":
        ds.add_new((0x0018, 0x9087), "FD", float(b_value))
        ds.add_new((0x0018, 0x9075), "CS", directional_text)
        if direction is not None:
            ds.add_new((0x0018, 0x9089), "FD", list(direction))
    elif vendor == "siemens":
        put(0x0019, "SIEMENS MR HEADER", 0x0C, "IS", str(int(b_value)))
        put(0x0019, "SIEMENS MR HEADER", 0x0D, "CS", directional_text)
        if direction is not None:
            put(0x0019, "SIEMENS MR HEADER", 0x0E, "FD", list(direction))
    elif vendor == "siemens-csa":  # only the CSA image header says the b-value
        tags = {"B_value": [str(int(b_value))]}
        if direction is not None:
            tags["DiffusionGradientDirection"] = [f"{v:.8f}" for v in direction]
        put(0x0029, "SIEMENS CSA HEADER", 0x10, "OB", csa_header(tags))
    elif vendor == "ge":  # GE adds 10^9 to the b-value on some software versions
        put(0x0043, "GEMS_PARM_01", 0x39, "IS", [str(int(b_value) + 1_000_000_000), "8", "0",
                                                 "0"])
        if direction is not None:
            for axis, offset in enumerate((0xBB, 0xBC, 0xBD)):
                put(0x0019, "GEMS_ACQU_01", offset, "DS", f"{direction[axis]:.6f}")
    elif vendor == "philips":
        put(0x2001, "Philips Imaging DD 001", 0x03, "FL", float(b_value))
        put(0x2001, "Philips Imaging DD 001", 0x04, "CS", "P" if direction else "I"
            if b_value > 0 else "")
        vector = direction or (0.0, 0.0, 0.0)
        for axis, offset in enumerate((0xB0, 0xB1, 0xB2)):
            put(0x2005, "Philips MR Imaging DD 001", offset, "FL", float(vector[axis]))
    else:
        raise ValueError(f"unknown vendor {vendor!r} (vendors: {', '.join(VENDORS)})")


def write_dwi_series(volumes: Sequence[Volume], folder: str | Path, vendor: str = "standard",
                     creators: bool = True, description: str = "ep2d_diff_tra") -> list[Path]:
    """Every volume in ONE series, one file per slice and volume (so every slice position
    holds one image per b-value and direction), b-values in ``vendor``'s tag. Pixels are
    unsigned 16-bit with one rescale slope for the series."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    largest = max(float(sitk.GetArrayViewFromImage(v[2]).max()) for v in volumes)
    slope = max(largest, 1e-6) / 60000.0
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    now = _dt.datetime(2026, 1, 2, 10, 0, 0)
    paths = []
    instance = 0
    for volume_index, (b_value, direction, image) in enumerate(volumes):
        pixels = np.rint(sitk.GetArrayFromImage(image).astype(np.float64) / slope)
        pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
        matrix = np.asarray(image.GetDirection(), float).reshape(3, 3)
        spacing = image.GetSpacing()
        for k in range(pixels.shape[0]):
            instance += 1
            ds = _new_instance(MR_IMAGE_STORAGE)
            ds.PatientName, ds.PatientID = "Phantom^DWI", "DWI001"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.FrameOfReferenceUID = frame
            ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
            ds.Modality, ds.Manufacturer = "MR", MANUFACTURERS[vendor]
            ds.SeriesDescription, ds.SeriesNumber = description, 7
            ds.InstanceNumber, ds.AcquisitionNumber = instance, volume_index + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
            ds.ImagePositionPatient = [f"{v:.4f}" for v in
                                       image.TransformIndexToPhysicalPoint((0, 0, k))]
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*matrix[:, 0], *matrix[:, 1])]
            ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
            ds.SliceThickness = f"{spacing[2]:.4f}"
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleIntercept, ds.RescaleSlope = "0", f"{slope:.10g}"
            _vendor_tags(ds, vendor, b_value, direction, creators)
            ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
            path = folder / f"IM_{instance:05d}.dcm"
            _save(ds, path)
            paths.append(path)
    return paths


def write_siemens_mosaic(image: sitk.Image, path: str | Path, b_value: float,
                         instance: int = 1, series_uid: str | None = None) -> Path:
    """One volume as a Siemens mosaic file: slice k is tile k of an m x m grid, the IPP is
    that of the whole tiled image, the CSA header gives the slice normal (the convention
    nibabel's MosaicWrapper and dcm2niix read)."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    count, rows, columns = array.shape
    tiles = int(np.ceil(np.sqrt(count)))
    mosaic = np.zeros((rows * tiles, columns * tiles), np.uint16)
    for k in range(count):
        r, c = divmod(k, tiles)
        mosaic[r * rows:(r + 1) * rows, c * columns:(c + 1) * columns] = np.clip(
            np.rint(array[k]), 0, 65535)
    matrix = np.asarray(image.GetDirection(), float).reshape(3, 3)
    row, column, normal = matrix[:, 0], matrix[:, 1], matrix[:, 2]
    spacing = image.GetSpacing()
    first = np.asarray(image.GetOrigin())
    ipp = first - column * spacing[1] * (rows * tiles - rows) / 2 \
        - row * spacing[0] * (columns * tiles - columns) / 2
    ds = _new_instance(MR_IMAGE_STORAGE)
    ds.PatientName, ds.PatientID, ds.Modality = "Phantom^Mosaic", "MOS001", "MR"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Manufacturer, ds.InstanceNumber = "SIEMENS", instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "MOSAIC"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *column)]
    ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    ds.SliceThickness = ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = mosaic.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0A, "US", count)
    siemens.add_new(0x0C, "IS", str(int(b_value)))
    csa = csa_header({"SliceNormalVector": [f"{v:.8f}" for v in normal],
                      "NumberOfImagesInMosaic": [str(count)], "B_value": [str(int(b_value))]})
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", csa)
    ds.PixelData = mosaic.tobytes()
    _save(ds, Path(path))
    return Path(path)


def _new_instance(sop_class: str) -> FileDataset:
    """An empty DICOM instance of ``sop_class`` with a new SOP instance UID (explicit VR
    little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def _save(ds: FileDataset, path: Path) -> None:
    """Written as a DICOM file on pydicom 2.4 (Slicer 5.8/5.10) and 3.x alike."""
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path))


def write_4d_nifti(volumes: Sequence[Volume], path: str | Path) -> Path:
    """A 4D NIfTI with ``.bval`` and ``.bvec`` beside it, named as dcm2niix names them."""
    path = Path(path)
    sitk.WriteImage(sitk.JoinSeries([sitk.Cast(v[2], sitk.sitkFloat32) for v in volumes]),
                    str(path))
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    path.with_name(stem + ".bval").write_text(" ".join(f"{v[0]:g}" for v in volumes) + "\n")
    directions = [v[1] or (0.0, 0.0, 0.0) for v in volumes]
    path.with_name(stem + ".bvec").write_text("\n".join(
        " ".join(f"{d[axis]:g}" for d in directions) for axis in range(3)) + "\n")
    return path


def write_dwmri_nrrd(volumes: Sequence[Volume], path: str | Path) -> Path:
    """A DWMRI NRRD as Slicer writes it: the largest b-value in DWMRI_b-value, each gradient
    scaled so that b_i = b * |g_i|^2 (the NA-MIC convention)."""
    import nrrd

    largest = max(v[0] for v in volumes)
    data = np.stack([sitk.GetArrayFromImage(v[2]).astype(np.float32).transpose(2, 1, 0)
                     for v in volumes], axis=-1)
    first = volumes[0][2]
    matrix = np.asarray(first.GetDirection(), float).reshape(3, 3) * first.GetSpacing()
    header = {
        "space": "left-posterior-superior", "kinds": ["space", "space", "space", "list"],
        "space directions": np.vstack([matrix.T, np.full((1, 3), np.nan)]),
        "space origin": np.asarray(first.GetOrigin()),
        "measurement frame": np.eye(3), "modality": "DWMRI",
        "DWMRI_b-value": f"{largest:g}",
    }
    for index, (b_value, direction, _image) in enumerate(volumes):
        scale = np.sqrt(b_value / largest) if largest else 0.0
        vector = np.asarray(direction or (1.0, 0.0, 0.0), float) * scale
        header[f"DWMRI_gradient_{index:04d}"] = " ".join(f"{v:.8f}" for v in vector)
    nrrd.write(str(path), data, header)
    return Path(path)


def write_enhanced_dwi(volumes: Sequence[Volume], path: str | Path,
                       slopes: Sequence[float] | None = None) -> Path:
    """Every volume as frames of ONE enhanced MR image (as Philips and Siemens XA write DWI):
    per frame its plane position and MR Diffusion functional group (DiffusionBValue,
    directionality, gradient direction); pixel measures and orientation shared. ``slopes``:
    one RescaleSlope per volume, in each frame's Pixel Value Transformation (as Philips
    stores each b-value at its own scale), the stored values divided by it."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    first = volumes[0][2]
    matrix = np.asarray(first.GetDirection(), float).reshape(3, 3)
    spacing = first.GetSpacing()
    ds = _new_instance(ENHANCED_MR_IMAGE_STORAGE)
    ds.PatientName, ds.PatientID, ds.Modality = "Phantom^Enhanced", "ENH001", "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Manufacturer, ds.InstanceNumber = "Philips Medical Systems", 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    measures.SliceThickness = f"{spacing[2]:.6f}"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8f}" for v in (*matrix[:, 0], *matrix[:, 1])]
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames, pixels = [], []
    for index, (b_value, direction, image) in enumerate(volumes):
        slope = slopes[index] if slopes else None
        array = np.clip(np.rint(sitk.GetArrayFromImage(image) / (slope or 1.0)), 0, 65535
                        ).astype(np.uint16)
        for k in range(array.shape[0]):
            item = Dataset()
            if slope is not None:
                transformation = Dataset()
                transformation.RescaleSlope = f"{slope:g}"
                transformation.RescaleIntercept = "0"
                transformation.RescaleType = "US"
                item.PixelValueTransformationSequence = DicomSequence([transformation])
            position = Dataset()
            position.ImagePositionPatient = [f"{v:.6f}" for v in
                                             image.TransformIndexToPhysicalPoint((0, 0, k))]
            item.PlanePositionSequence = DicomSequence([position])
            diffusion = Dataset()
            diffusion.DiffusionBValue = float(b_value)
            diffusion.DiffusionDirectionality = "DIRECTIONAL" if direction else "NONE"
            if direction:
                gradient = Dataset()
                gradient.DiffusionGradientOrientation = list(direction)
                diffusion.DiffusionGradientDirectionSequence = DicomSequence([gradient])
            item.MRDiffusionSequence = DicomSequence([diffusion])
            frames.append(item)
            pixels.append(array[k])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels[0].shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).tobytes()
    _save(ds, Path(path))
    return Path(path)
