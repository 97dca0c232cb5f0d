"""RectalSeg's module logic on a real MRML scene (slicer-core): the scenarios RectalSegTest
also runs in the application."""

import pytest

from RectalSegLib import scenarios
from RectalSegLib.logic import RectalSegParameters, guess_inputs


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
def test_scenario(mrml, tmp_path, scenario):
    scenario(mrml, tmp_path)


def test_auto_fill_reads_scanner_like_names(mrml):
    import SimpleITK as sitk

    from OncoSegCommonLib.volumes import volume_node_from_image

    image = sitk.Image(8, 8, 4, sitk.sitkFloat32)
    names = ["ep2d_diff_b1000", "t2_tse_tra", "ep2d_diff_b0", "Localizer"]
    nodes = {n: volume_node_from_image(mrml.scene, image, n) for n in names}
    found = guess_inputs(mrml.scene)
    assert found == {"t2w": nodes["t2_tse_tra"], "dwi_b0": nodes["ep2d_diff_b0"],
                     "dwi_b1000": nodes["ep2d_diff_b1000"]}


def test_parameters_turn_into_engine_settings():
    from oncoseg.modelfile import read_header
    from oncoseg.rectal.pipeline import DEMO_MODEL, settings_for

    demo = read_header(DEMO_MODEL).metadata
    off = RectalSegParameters(registration=False).overrides()
    assert off == {"threshold": 0.5, "registration": "none"}
    assert settings_for(demo, off).registration == "none"
    on = RectalSegParameters(threshold=0.3).overrides()
    assert on == {"threshold": 0.3}
    # registration on: the engine applies the preset the model was trained with
    assert settings_for(demo, on).registration == demo.preprocessing["registration"] == "rigid"
    assert settings_for(demo, on).threshold == 0.3
