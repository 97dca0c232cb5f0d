"""OARSeg's module logic on a real MRML scene (slicer-core): the scenarios OARSegTest also runs
in the application."""

import pytest

from OARSegLib import scenarios
from OARSegLib.logic import OARSegParameters


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
def test_scenario(mrml, tmp_path, scenario):
    scenario(mrml, tmp_path)


def test_the_checklist_must_name_known_organs():
    with pytest.raises(ValueError, match="choose organs"):
        OARSegParameters(organs=("Spleen",))


def test_modes_check_their_own_organs_and_threshold():
    assert OARSegParameters(mode="MR").organs == ("Stomach", "Small bowel", "Large bowel")
    with pytest.raises(ValueError, match="choose organs"):
        OARSegParameters(mode="MR", organs=("Bladder",))
    with pytest.raises(ValueError, match="mode"):
        OARSegParameters(mode="PET")
    with pytest.raises(ValueError, match="threshold"):
        OARSegParameters(mode="MR", threshold=1.5)
    assert OARSegParameters(mode="MR", threshold=0.3).engine_settings()["threshold"] == 0.3
