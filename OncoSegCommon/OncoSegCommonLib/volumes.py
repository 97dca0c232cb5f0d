"""Volume nodes <-> SimpleITK images, geometry included (RAS node, LPS image).

Reading a node copies its voxels, so nothing the engine does can change a user's volume;
writing creates a new node unless the caller passes one it owns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from oncoseg.errors import InputError
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since

if TYPE_CHECKING:
    from oncoseg.io.file_information import FileInformation


def _array(matrix: Any) -> np.ndarray:
    """A vtkMatrix4x4 as a 4 x 4 array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _ijk_to_ras(node: Any) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _array(matrix)


def image_from_volume_node(node: Any) -> sitk.Image:
    """A copy of a scalar or labelmap volume node as an LPS SimpleITK image."""
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{node.GetName()}' has no voxels")
    dims = image_data.GetDimensions()
    components = image_data.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    image = sitk.GetImageFromArray(np.array(array.reshape(shape)), isVector=components > 1)
    lps = ras_lps(_ijk_to_ras(node))
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(tuple(spacing))
    image.SetDirection(tuple((lps[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(lps[:3, 3]))
    return image


def update_volume_node(node: Any, image: sitk.Image) -> Any:
    """Put an image's voxels and geometry into a node the caller owns."""
    if image.GetDimension() != 3:
        raise ValueError("only 3D images become volume nodes")
    array = sitk.GetArrayFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(*image.GetSize())
    flat = array.reshape(-1, components) if components > 1 else array.ravel()
    vtk_array = numpy_support.numpy_to_vtk(np.ascontiguousarray(flat), deep=True)
    vtk_array.SetNumberOfComponents(components)
    image_data.GetPointData().SetScalars(vtk_array)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection(), float).reshape(3, 3) * image.GetSpacing()
    lps[:3, 3] = image.GetOrigin()
    ras = ras_lps(lps)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ras[r, c])
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(image_data)
    return node


def volume_node_from_image(scene: Any, image: sitk.Image, name: str,
                           labelmap: bool = False) -> Any:
    """A new volume node (scalar, or labelmap) with a display node, added to the scene."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    before = set(node_ids(scene))
    try:
        node = scene.AddNewNodeByClass(class_name, name)
        update_volume_node(node, image)
        node.CreateDefaultDisplayNodes()
    except Exception:
        remove_nodes_added_since(scene, before)
        raise
    return node


def _loaded_file(node: Any, image: sitk.Image
                 ) -> tuple[str, sitk.ImageFileReader | FileInformation] | None:
    """The volume file the node was loaded from and its header as Slicer's reader read it,
    while the node still lies where that reader put it (``image``: the node's copy,
    :func:`image_from_volume_node`); None when it has no such file or was moved, resampled or
    edited since. Only the file's header is read (an MGH file's by OncoSeg: SimpleITK's
    wheels have no reader for it)."""
    from pathlib import Path

    from oncoseg.io.mgh import as_slicer_reads_it, is_mgh
    from oncoseg.io.nifti import is_nifti
    from oncoseg.io.volumes import is_volume_file

    storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
    name = storage.GetFileName() if storage is not None else None
    if not name or not (is_volume_file(name) or is_nifti(name)) or not Path(name).is_file():
        return None
    reader: sitk.ImageFileReader | FileInformation
    try:
        if is_mgh(name):
            reader = as_slicer_reads_it(name)
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(name))
            reader.ReadImageInformation()
    except (RuntimeError, InputError):
        return None
    if reader.GetDimension() != 3 or reader.GetSize() != image.GetSize() or not (
            np.allclose(reader.GetSpacing(), image.GetSpacing(), atol=1e-4)
            and np.allclose(reader.GetOrigin(), image.GetOrigin(), atol=1e-3)
            and np.allclose(reader.GetDirection(), image.GetDirection(), atol=1e-4)):
        return None  # moved, resampled or edited since: the file no longer says where it lies
    return str(name), reader


def as_read_from_its_file(what: str, node: Any, image: sitk.Image
                          ) -> tuple[sitk.Image, list[str]]:
    """The node's voxels (``image``) checked against the volume file it was loaded from, while
    it still lies where Slicer's reader put it, as the CLI reads the same file: refused where
    the file is a NIfTI file cut short (Slicer's reader, ITK's nifti1_io, loads it without a
    word, the missing voxels zero; :func:`oncoseg.io.nifti.check_complete`); without the
    intercept that reader adds where scl_slope is 0, which the standard does not apply
    (:func:`oncoseg.io.nifti.without_added_intercept`); with what the user should know about
    where the file places its voxels (:func:`oncoseg.io.volumes.placement_notes`: a NIfTI qform
    and sform that disagree, no orientation at all, that intercept), which Slicer does not
    say. A volume loaded from a MINC file, which Slicer's ITK 5.4 places turned round
    (:mod:`oncoseg.io.minc`), from an MGH file without placement, which it shows as axial
    where FreeSurfer reads coronal (:func:`oncoseg.io.mgh.slicer_unplaced_refusal`), or from a
    NIfTI file with a voxel width of 0, which it reads as 1 mm
    (:func:`oncoseg.io.nifti.unknown_widths`), is refused. Only headers are read; this
    runs on Slicer's main thread."""
    from pathlib import Path

    from oncoseg.io.mgh import is_mgh, slicer_unplaced_refusal
    from oncoseg.io.minc import slicer_turned_note, turned_by_itk
    from oncoseg.io.nifti import check_complete, unknown_widths, without_added_intercept
    from oncoseg.io.volumes import placement_notes

    loaded = _loaded_file(node, image)
    if loaded is None:
        return image, []
    path, header = loaded
    if turned_by_itk(path, header):  # the node lies where ITK 5.4 put it: turned round
        raise InputError(what, slicer_turned_note(path))
    unplaced = slicer_unplaced_refusal(path) if is_mgh(path) else None
    if unplaced is not None:  # the node lies where ITK's defaults put it
        raise InputError(what, unplaced)
    unknown = unknown_widths(path)
    if unknown is not None:
        raise InputError(what, f"was loaded from {Path(path).name}, which {unknown}: Slicer "
                         "read 1 mm there, so a method would read the anatomy at the wrong size")
    try:
        check_complete(path)  # by its length where it can
    except InputError as error:
        raise InputError(what, f"was loaded from {Path(path).name}, which "
                         f"{error.problem}") from None
    return without_added_intercept(image, path), placement_notes(header, path)


def refuse_unhardened_transform(what: str, node: Any) -> None:
    """A node under a transform is shown where the transform puts it, but its voxels and
    geometry (what the engine reads, :func:`image_from_volume_node`) are where the file put
    them: a result would lie where the node is not shown, a click would land elsewhere. Refused
    by name (``what``) unless the transform is the identity (Slicer's Harden transform fixes
    it)."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return
    if transform.IsTransformToWorldLinear():
        matrix = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(matrix)
        if np.allclose(_array(matrix), np.eye(4), atol=1e-6):
            return
    if _acquisition_transform(node, transform):
        raise InputError(what, f"lies under '{transform.GetName()}', which Slicer's DICOM "
                         "module adds where a series' slices are not evenly spaced or not "
                         "square to its rows (a missing slice, a tilted gantry): its voxels "
                         "are not where you see them. Harden it (Data module: right-click it, "
                         "Harden transform): Slicer then resamples them where the slices lie, "
                         "as OncoSeg's command line does; or set Application settings > DICOM "
                         "> Acquisition geometry regularization to 'harden regularization "
                         "transform' before loading")
    raise InputError(what, f"lies under the transform '{transform.GetName()}', which moves "
                     "what you see but not its voxels: the result would not lie where it is "
                     "shown. Harden the transform (Data module: right-click it, Harden "
                     "transform) or remove it, then try again")


def _acquisition_transform(node: Any, transform: Any) -> bool:
    """Whether ``transform`` is the grid transform Slicer's DICOM scalar volume plugin puts
    over a volume whose slices it stacked as a regular grid though they are not (named
    '<volume> acquisition transform', DICOMScalarVolumePlugin.py, gridTransformFromCorners,
    v5.10.0; its default setting, 'apply regularization transform', adds it)."""
    return transform.IsA("vtkMRMLGridTransformNode") and \
        transform.GetName().startswith(f"{node.GetName()} acquisition transform")
