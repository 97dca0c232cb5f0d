"""OARSeg's module logic on a real MRML scene (slicer-core): the scenarios OARSegTest also runs
in the application."""

import pytest

from OARSegLib import scenarios
from OARSegLib.logic import MODES, OARSegLogic, OARSegParameters
from OncoSegCommonLib.checks import run_scenario


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
def test_scenario(mrml, tmp_path, scenario):
    """Each scenario passes its asserts and logs no VTK/MRML error or warning."""
    run_scenario(scenario, mrml, tmp_path)


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
    assert OARSegParameters(mode="MR", threshold=0.3).overrides()["threshold"] == 0.3


def test_one_logic_serves_both_tasks_and_reads_its_organs_from_the_request(mrml):
    from OncoSegCommonLib.tasklogic import RunRequest, logic_for

    for mode in MODES.values():
        logic = logic_for(mrml, mode.task.name)
        assert type(logic) is OARSegLogic and logic.task is mode.task and logic.mode is mode
    assert OARSegLogic(mrml).task is MODES["CT"].task
    with pytest.raises(ValueError, match="not 'brain'"):
        OARSegLogic(mrml, "brain")
    request = OARSegParameters(mode="MR", organs=("Stomach",), probabilities=True).request()
    assert request.organs == ("Stomach",)
    assert request.overrides == {"probabilities": True}
    # a plain request (the review app's) keeps every organ
    plain = logic.own_request(RunRequest(model="m.safetensors", device="cpu"))
    assert (plain.organs, plain.model, plain.device) == ((), "m.safetensors", "cpu")
