import numpy as np
import pytest
import SimpleITK as sitk
from imaging import OBLIQUE, assert_same_image, blob_labels, make_image

from oncoseg.errors import InputError
from oncoseg.io import Segment, Segmentation, read_seg_nrrd, write_seg_nrrd
from oncoseg.terminology import Code, Terminology

TUMOUR = Terminology(Code("SCT", "49755003", "Morphologically altered structure"),
                     Code("SCT", "108369006", "Neoplasm"),
                     region=Code("SCT", "34402009", "Rectum"))


def segments(n):
    colors = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.2, 0.3, 0.95)]
    return [Segment(f"s{i}", f"Segment {i}", colors[i - 1], label_value=i,
                    terminology=TUMOUR.to_slicer() if i == 1 else "")
            for i in range(1, n + 1)]


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, np.diag([-1.0, 1.0, -1.0])])
def test_single_layer_round_trip(tmp_path, direction):
    labels = blob_labels(make_image(direction=direction))
    original = Segmentation.from_label_image(labels, segments(3))
    path = write_seg_nrrd(original, tmp_path / "a.seg.nrrd")
    back = read_seg_nrrd(path)
    assert len(back.layers) == 1
    assert_same_image(back.layers[0], original.layers[0], atol=1e-9)
    assert [(s.id, s.name, s.label_value, s.layer) for s in back.segments] == \
        [(s.id, s.name, s.label_value, s.layer) for s in original.segments]
    np.testing.assert_allclose([s.color for s in back.segments],
                               [s.color for s in original.segments], atol=1e-6)
    assert Terminology.from_slicer(back.segments[0].terminology) == TUMOUR
    assert_same_image(back.label_image(), labels)


def test_overlapping_segments_use_layers(tmp_path):
    reference = make_image(direction=OBLIQUE)
    shape = sitk.GetArrayViewFromImage(reference).shape
    a = np.zeros(shape, bool)
    a[1:4, 2:6, 3:8] = True
    b = np.zeros(shape, bool)
    b[2:5, 4:8, 5:10] = True  # overlaps a
    c = np.zeros(shape, bool)
    c[0, 0, 0] = True  # fits beside a
    seg = Segmentation.from_masks(reference, [a, b, c], segments(3))
    assert [s.layer for s in seg.segments] == [0, 1, 0]
    back = read_seg_nrrd(write_seg_nrrd(seg, tmp_path / "layers.seg.nrrd"))
    assert len(back.layers) == 2
    for mask, segment in zip([a, b, c], back.segments, strict=True):
        np.testing.assert_array_equal(back.mask(segment.id), mask)
    with pytest.raises(ValueError, match="overlaps"):
        back.label_image()


def test_empty_segment_survives(tmp_path):
    labels = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    seg = Segmentation.from_label_image(labels, segments(1))
    back = read_seg_nrrd(write_seg_nrrd(seg, tmp_path / "empty.seg.nrrd"))
    assert back.segments[0].name == "Segment 1"
    assert not back.mask("s1").any()


def test_never_overwrites_unless_asked(tmp_path):
    seg = Segmentation.from_label_image(blob_labels(make_image()), segments(3))
    path = write_seg_nrrd(seg, tmp_path / "x.seg.nrrd")
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_seg_nrrd(seg, path)
    assert path.read_bytes() == before
    write_seg_nrrd(seg, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.seg.nrrd"]


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4\n\n")
    with pytest.raises(InputError, match=r"bad\.seg\.nrrd"):
        read_seg_nrrd(bad)
    with pytest.raises(InputError, match="no such file"):
        read_seg_nrrd(tmp_path / "missing.seg.nrrd")
