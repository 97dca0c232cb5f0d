"""BrainTumor2D3D's logic on real MRML (slicer-core): the scenarios BrainTumor2D3DTest runs in
the application."""

import pytest

from BrainTumor2D3DLib import scenarios
from OncoSegCommonLib.checks import run_scenario


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
def test_scenario(mrml, tmp_path, scenario):
    """Each scenario passes its asserts and logs no VTK/MRML error or warning."""
    run_scenario(scenario, mrml, tmp_path)
