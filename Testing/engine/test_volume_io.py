import numpy as np
import pytest
import SimpleITK as sitk
from imaging import OBLIQUE, assert_same_image, make_image

from oncoseg.errors import InputError
from oncoseg.io import list_dicom_series, read_image, write_image


@pytest.mark.parametrize("ending", [".nrrd", ".nii.gz", ".mha"])
def test_volume_files_keep_geometry(tmp_path, ending):
    image = make_image(direction=OBLIQUE, dtype=np.float32)
    back = read_image(write_image(image, tmp_path / f"v{ending}"))
    # NIfTI stores the affine in single precision
    assert_same_image(back, image, atol=1e-5 if ending == ".nii.gz" else 1e-9)
    assert [p.name for p in tmp_path.iterdir()] == [f"v{ending}"]  # no temporary left


def test_existing_file_is_kept(tmp_path):
    path = write_image(make_image(seed=1), tmp_path / "v.nrrd")
    with pytest.raises(InputError, match="already exists"):
        write_image(make_image(seed=2), path)
    assert_same_image(read_image(path), make_image(seed=1))


def _write_series(folder, image, series_uid, description):
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0008|103e": description, "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in origin),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder(tmp_path):
    image = make_image(shape_zyx=(5, 8, 7), spacing=(0.7, 0.7, 2.5), origin=(-10, 20, 30))
    _write_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.101", "pelvis")
    back = read_image(tmp_path / "ct")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back),
                                  sitk.GetArrayViewFromImage(image))
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-5)


def test_folder_with_two_series_asks_which(tmp_path):
    image = make_image(shape_zyx=(4, 6, 6))
    _write_series(tmp_path / "mixed", image, "1.2.826.0.1.3680043.2.1125.201", "first")
    _write_series(tmp_path / "mixed", image, "1.2.826.0.1.3680043.2.1125.202", "second")
    series = list_dicom_series(tmp_path / "mixed")
    assert {s.description for s in series} == {"first", "second"}
    with pytest.raises(InputError, match="contains 2 DICOM series") as error:
        read_image(tmp_path / "mixed")
    assert "1.2.826.0.1.3680043.2.1125.201" in str(error.value)
    assert "'second'" in str(error.value)
    chosen = read_image(tmp_path / "mixed", series_uid="1.2.826.0.1.3680043.2.1125.202")
    assert chosen.GetSize() == image.GetSize()


def test_unreadable_inputs_name_the_path(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nothing.nrrd")
    (tmp_path / "text.nrrd").write_text("not an image", encoding="utf-8")
    with pytest.raises(InputError, match=r"text\.nrrd: is not a readable image"):
        read_image(tmp_path / "text.nrrd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable DICOM"):
        read_image(tmp_path / "empty")


def test_atomic_files_get_the_usual_mode_not_the_temporary_files(tmp_path):
    """mkstemp's temporaries are private (0600); a published file is not."""
    import os

    from oncoseg.io.atomic import write_text_atomic

    umask = os.umask(0o022)
    os.umask(umask)
    path = write_text_atomic(tmp_path / "a.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)  # a replaced file keeps the mode its owner gave it
    write_text_atomic(path, "y", overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o640
    from oncoseg.io.atomic import atomic_directory

    with atomic_directory(tmp_path / "out") as folder:
        (folder / "f").write_text("z")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask


def test_unfinished_parts_are_exactly_what_a_killed_writer_of_that_target_leaves(tmp_path):
    """The names atomic_path and atomic_directory really give, read off a live writer; a
    sibling target's parts (``a`` against ``a.b``) and other hidden files are not taken."""
    from oncoseg.io.atomic import atomic_directory, atomic_path, unfinished_parts

    with atomic_path(tmp_path / "model.nii.gz") as file_part, \
            atomic_directory(tmp_path / "a") as folder_part, \
            atomic_directory(tmp_path / "a.b") as other_part:
        assert unfinished_parts(tmp_path / "model.nii.gz") == [file_part]
        assert unfinished_parts(tmp_path / "a") == [folder_part]
        assert unfinished_parts(tmp_path / "a.b") == [other_part]
        (tmp_path / ".a.notes.part").write_text("someone else's")
        assert unfinished_parts(tmp_path / "a") == [folder_part]
    assert unfinished_parts(tmp_path / "a") == []
    assert unfinished_parts(tmp_path / "missing" / "a") == []
