"""StagingCNN's module logic on a real MRML scene (slicer-core): the scenarios StagingCNNTest
also runs in the application."""

import numpy as np
import pytest

from OncoSegCommonLib.checks import run_scenario
from StagingCNNLib import scenarios
from StagingCNNLib.logic import StagingParameters, roi_box_lps


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
def test_scenario(mrml, tmp_path, scenario):
    """Each scenario passes its asserts and logs no VTK/MRML error or warning."""
    run_scenario(scenario, mrml, tmp_path)


def test_a_markups_roi_becomes_its_lps_box(mrml):
    node = scenarios.roi_node(mrml, [-10.0, -20.0, 5.0, 30.0, 40.0, 25.0])
    assert np.allclose(roi_box_lps(node), [-10, -20, 5, 30, 40, 25])


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        StagingParameters(threshold=1.0)
    with pytest.raises(ValueError, match="augmentation"):
        StagingParameters(tta=0)
    assert StagingParameters(tta=3, threshold=0.4).overrides() == {"tta": 3, "threshold": 0.4}
    assert StagingParameters(tta=3).request().overrides == {"tta": 3}
