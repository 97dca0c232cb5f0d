"""Calibrated staging (issue 20): Platt scaling of the volume logit, the expected calibration
error on inputs worked out by hand, the model file that carries the calibration, and the
command that adds one to an existing model."""

import json
import math

import numpy as np
import pytest
import torch

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.modelfile import ModelMetadata, load_tensors, read_header, save_model
from oncoseg.staging import training
from oncoseg.staging.calibration import (
    Calibration,
    expected_calibration_error,
    fit_platt,
    reliability_table,
    separated,
)
from oncoseg.staging.network import StagingNet
from oncoseg.staging.predict import VolumeScores, probability


def test_ece_of_known_inputs():
    # every case in one bin (0.8 -> bin 8): 4 of 5 are T3, mean P 0.8: perfectly calibrated
    assert expected_calibration_error([0.8] * 5, [1, 1, 1, 1, 0]) == pytest.approx(0.0)
    # P 0.25 for four T3 cases: off by 0.75
    assert expected_calibration_error([0.25] * 4, [1, 1, 1, 1]) == pytest.approx(0.75)
    # two bins, weighted by their cases: bin 1 (P 0.1, 0 of 3 T3) is off by 0.1, bin 9
    # (P 0.9, 0 of 1 T3) by 0.9: (3 * 0.1 + 1 * 0.9) / 4
    assert expected_calibration_error([0.1, 0.1, 0.1, 0.9], [0, 0, 0, 0]) == \
        pytest.approx(0.3)
    # P = 1 falls in the last bin, P = 0 in the first; both right
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))


def test_reliability_table_has_ten_equal_bins():
    rows = reliability_table([0.05, 0.15, 0.15, 0.95, 1.0], [0, 1, 0, 1, 1])
    assert len(rows) == 10 and rows[0]["low"] == 0.0 and rows[-1]["high"] == 1.0
    assert [r["cases"] for r in rows] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert rows[1]["t3_share"] == 0.5 and rows[1]["mean_p_t3"] == pytest.approx(0.15)
    assert rows[2]["t3_share"] is None  # empty bins: no number (JSON has no NaN)


def test_platt_recovers_a_known_slope_and_intercept():
    """Logits as narrow as the demo's (SD 0.03), stages drawn from sigmoid(60 z - 0.5): the
    fit finds 60 and -0.5, as an unregularised logistic regression does."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    z = rng.normal(0.01, 0.03, 20000)
    stages = rng.random(z.size) < 1 / (1 + np.exp(-(60 * z - 0.5)))
    slope, intercept = fit_platt(z, stages)
    assert slope == pytest.approx(60, rel=0.05) and intercept == pytest.approx(-0.5, abs=0.05)
    reference = LogisticRegression(C=1e12, tol=1e-10, max_iter=1000).fit(100 * z[:, None],
                                                                          stages)
    assert slope == pytest.approx(100 * reference.coef_[0][0], rel=1e-4)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_platt_stays_finite_on_separated_cases_and_refuses_what_it_cannot_fit():
    z, stages = np.array([-0.02, -0.01, 0.01, 0.02]), np.array([0, 0, 1, 1])
    assert separated(z, stages == 1) and not separated(z, np.array([0, 1, 0, 1]) == 1)
    slope, intercept = fit_platt(z, stages)
    assert 0 < slope < 1e4 and math.isfinite(intercept)
    # Platt's targets for 2 + 2 cases are 3/4 and 1/4; at the log-loss minimum the fitted
    # probabilities match them in sum and in their sum weighted by the logit
    p = Calibration(slope, intercept, 4, 1).probability(z)
    targets = np.array([0.25, 0.25, 0.75, 0.75])
    assert p.sum() == pytest.approx(targets.sum(), abs=1e-6)
    assert (p * z).sum() == pytest.approx((targets * z).sum(), abs=1e-8)
    assert p.max() < 0.9  # not the 1.0 of an unsmoothed fit to separated cases
    with pytest.raises(InputError, match="both stages"):
        fit_platt(z, np.ones(4))
    with pytest.raises(InputError, match="same logit"):
        fit_platt(np.zeros(4), stages)
    with pytest.raises(InputError, match="ranks these T2"):
        fit_platt(z, stages[::-1])


def test_a_model_file_without_calibration_runs_as_before_and_a_bad_one_is_refused():
    assert Calibration.from_outputs({"classes": ["T2", "T3"]}) is None
    scores = VolumeScores(p_t3=0.51, logit=0.04, slice_p_t3=np.zeros(3))
    assert probability(scores, None) == 0.51  # the network's own mean sigmoid
    calibration = Calibration(50.0, -1.0, 10, 8)
    assert probability(scores, calibration) == pytest.approx(1 / (1 + math.exp(-1.0)))
    stored = calibration.as_dict()
    assert Calibration.from_outputs({"calibration": stored}) == calibration
    with pytest.raises(InputError, match=r"outputs\.calibration"):
        Calibration.from_outputs({"calibration": {**stored, "slope": -1.0}}, "m.safetensors")
    with pytest.raises(InputError, match=r"outputs\.calibration"):
        Calibration.from_outputs({"calibration": {"method": "isotonic"}})
    with pytest.raises(InputError, match=r"outputs\.calibration"):
        Calibration.from_outputs({"calibration": {"method": "platt", "slope": 2.0}})


def test_calibrating_a_file_keeps_its_tensors_and_adds_the_fit(tmp_path, monkeypatch):
    """The weights are not touched (the shipped demo was calibrated this way); the fit and its
    record land in the metadata; a data set of one stage leaves the file uncalibrated."""
    torch.manual_seed(0)
    network = StagingNet("f-R2D", "average", filters=4)
    meta = ModelMetadata(task="staging", architecture="staging-resnet18",
                         architecture_args={"variant": "f-R2D", "aggregation": "average",
                                            "filters": 4},
                         inputs=["t2w"], preprocessing={"size": 16, "n4": False},
                         outputs={"classes": ["T2", "T3"], "threshold": 0.5, "tta": 3})
    source = save_model(tmp_path / "m.safetensors", network.state_dict(), meta)
    # a stand-in network score: the logit is the volume's mean intensity
    monkeypatch.setattr(training, "volume_scores", lambda array, *a, **k: VolumeScores(
        1 / (1 + math.exp(-float(array.mean()))), float(array.mean()), np.zeros(len(array))))
    cases = [training.PreparedStaging(f"c{k}", np.full((3, 16, 16), v, np.float32), stage, [])
             for k, (v, stage) in enumerate([(-0.2, 0), (-0.1, 0), (0.05, 0), (-0.05, 1),
                                             (0.1, 1), (0.2, 1)])]
    record = training.calibrate_file(source, tmp_path / "c.safetensors", cases, "test cases",
                                     {"note": "kept"})
    header = read_header(tmp_path / "c.safetensors")
    calibration = Calibration.from_outputs(header.metadata.outputs)
    assert calibration is not None and calibration.cases == 6 and calibration.tta == 3
    assert calibration.slope > 0 and calibration.fitted_on == "test cases"
    assert header.metadata.provenance["calibration"]["note"] == "kept"
    assert 0 <= record["ece_after"] <= 1 and 0 <= record["ece_before"] <= 1
    assert record["auc"] == pytest.approx(8 / 9)  # the stand-in ranks 8 of 9 pairs right
    before, after = load_tensors(source)[1], load_tensors(tmp_path / "c.safetensors")[1]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    record = training.calibrate_file(source, tmp_path / "one.safetensors", cases[:3], "T2 only",
                                     {})
    assert "both stages" in record["not_fitted"]
    assert "calibration" not in read_header(tmp_path / "one.safetensors").metadata.outputs


def test_calibrate_only_adds_a_calibration_to_the_demo_model(tmp_path):
    """`oncoseg train staging --set calibrate_only=demo` on unseen phantoms (seed 4345): no
    training, the demo's weights kept; then predict and evaluate read the calibration."""
    data = tmp_path / "data"
    verbs.phantom("staging", data, cases=4, seed=4345)
    out = tmp_path / "calibrated"
    assert main(["train", "staging", "--dataset", str(data), "--output", str(out), "--set",
                 "calibrate_only=demo", "--progress", "none"]) == 0
    model = out / "model.safetensors"
    record = json.loads((out / "calibration.json").read_text())
    assert record["t2"] == 2 and record["t3"] == 2 and "ece_after" in record
    calibration = Calibration.from_outputs(read_header(model).metadata.outputs)
    assert calibration is not None and calibration.cases == 4
    result = verbs.predict("staging", {"t2w": _t2w(data, 1)}, model, {"without_roi": "centre"})
    details = result.details
    assert details["calibrated"] is True and details["calibration"]["method"] == "platt"
    assert details["p_t3"] == pytest.approx(
        calibration.probability(details["volume_logit"]), abs=1e-9)
    assert not any("uncalibrated" in m for m in result.messages)
    summary = verbs.evaluate("staging", data, tmp_path / "eval", model)
    assert summary["calibration"]["calibrated"] is True
    assert summary["calibration"]["ece"] <= summary["calibration"]["ece_uncalibrated"]
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 0
    # a model file that is not there is bad input (exit 2), nothing is written
    assert main(["train", "staging", "--dataset", str(data), "--output", str(tmp_path / "x"),
                 "--set", f"calibrate_only={tmp_path / 'nowhere.safetensors'}",
                 "--progress", "none"]) == 2
    assert not (tmp_path / "x").exists()


def _t2w(data, index):
    from oncoseg.datasets.layouts import read_dataset

    return read_dataset(data).cases[index].read("t2w")
