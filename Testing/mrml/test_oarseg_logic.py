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
    with pytest.raises(ValueError, match="choose organs"):
        OARSegParameters(organs=())
