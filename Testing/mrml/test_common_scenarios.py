"""OncoSegCommonLib's own scenarios on a real MRML scene (slicer-core): what OncoSegCommonTest
runs in the application, each free of VTK/MRML errors and warnings."""

import pytest

from OncoSegCommonLib.checks import COMMON_SCENARIOS, run_scenario


def test_there_are_common_scenarios():
    assert len(COMMON_SCENARIOS) >= 4


@pytest.mark.parametrize("scenario", COMMON_SCENARIOS, ids=lambda s: s.__name__)
def test_common_scenario(mrml, tmp_path, scenario):
    run_scenario(scenario, mrml, tmp_path)
