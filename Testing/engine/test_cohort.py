"""Cohort prediction (issue 21): the model read once, each case as `predict` writes it, failures
recorded while the cohort goes on, re-runs that skip finished cases, shards whose union is the
one-process run, and the CSV manifest for data in no layout."""

import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from oncoseg import cohort, verbs
from oncoseg.cohort import Shard, predict_cohort
from oncoseg.datasets import read_dataset
from oncoseg.errors import InputError


@pytest.fixture
def data(toy, tmp_path):
    """Four toy cases (a copy the test may break)."""
    task, _, model = toy
    root = tmp_path / "data"
    verbs.phantom(task.name, root, cases=4, seed=3)
    return task, root, model


def labels_of(folder):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))


def test_every_case_is_predicted_as_predict_predicts_it_with_the_model_read_once(
        data, tmp_path, monkeypatch):
    task, root, model = data
    reads = []
    real_prepare = cohort.prepare
    monkeypatch.setattr(cohort, "prepare", lambda *a, **k: reads.append(1) or real_prepare(*a, **k))
    lines = []
    outcomes = predict_cohort(task, read_dataset(root, roles=["image"]), tmp_path / "out", model,
                              write=lines.append)
    assert len(reads) == 1
    assert [o.status for o in outcomes] == ["done"] * 4
    for case in sorted(root.iterdir()):
        folder = tmp_path / "out" / "cases" / case.name
        document = json.loads((folder / "result.json").read_text())
        assert document["inputs"] == {"image": str(case / "image.nii.gz")}
        alone = verbs.predict(task, {"image": sitk.ReadImage(str(case / "image.nii.gz"))}, model)
        assert np.array_equal(labels_of(folder), sitk.GetArrayFromImage(alone.labels))
    assert len(lines) == 4 and lines[-1].startswith("[4/4] ")
    assert "done 4, failed 0, finished before 0" in lines[-1] and "cases/h" in lines[-1]


def test_a_failing_case_is_recorded_the_cohort_goes_on_and_a_rerun_retries_only_it(
        data, tmp_path):
    task, root, model = data
    broken = sorted(root.iterdir())[1]
    good_image = (broken / "image.nii.gz").read_bytes()
    (broken / "image.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    outcomes = predict_cohort(task, read_dataset(root, roles=["image"], check=False), out,
                              model, write=lambda line: None)
    assert [o.status for o in outcomes] == ["done", "failed", "done", "done"]
    record = json.loads((out / "failed" / f"{broken.name}.json").read_text())
    assert broken.name in record["error"] or "image.nii.gz" in record["error"]
    assert record["traceback"] and not (out / "cases" / broken.name).exists()

    (broken / "image.nii.gz").write_bytes(good_image)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    outcomes = predict_cohort(task, read_dataset(root, roles=["image"], check=False), out,
                              model, write=lambda line: None)
    assert [o.status for o in outcomes] == ["finished before", "done", "finished before",
                                            "finished before"]
    assert not (out / "failed" / f"{broken.name}.json").exists()
    for name, mtime in before.items():  # finished cases were not touched
        assert (out / "cases" / name).stat().st_mtime_ns == mtime


def test_what_a_killed_run_left_is_removed_and_only_for_the_shards_own_cases(data, tmp_path):
    task, root, model = data
    out = tmp_path / "out"
    dataset = read_dataset(root, roles=["image"])
    first, second = sorted(c.id for c in dataset.cases)[:2]
    (out / "cases").mkdir(parents=True)
    left = out / "cases" / f".{first}.ab12cd_3.part"  # as atomic_directory names it
    left.mkdir()
    (left / "labels.nii.gz").write_bytes(b"half")
    other = out / "cases" / f".{first}.x.{second}.ab12cd_3.part"  # not this case's
    other.mkdir()
    outcomes = predict_cohort(task, dataset, out, model, shard=Shard(0, 2),
                              write=lambda line: None)
    assert [o.case_id for o in outcomes] == sorted(c.id for c in dataset.cases)[0::2]
    assert not left.exists() and other.exists()


def test_the_union_of_shards_is_the_one_process_run_byte_for_byte(data, tmp_path):
    task, root, model = data
    dataset = read_dataset(root, roles=["image"])
    predict_cohort(task, dataset, tmp_path / "one", model, write=lambda line: None)
    for k in (1, 2, 3):
        predict_cohort(task, dataset, tmp_path / "sharded", model, shard=Shard.parse(f"{k}/3"),
                       write=lambda line: None)
    one = sorted((tmp_path / "one" / "cases").iterdir())
    sharded = sorted((tmp_path / "sharded" / "cases").iterdir())
    assert [p.name for p in one] == [p.name for p in sharded] and len(one) == 4
    for a, b in zip(one, sharded, strict=True):
        assert (a / "labels.nii.gz").read_bytes() == (b / "labels.nii.gz").read_bytes()


@pytest.mark.parametrize("text", ["2", "0/3", "4/3", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_refused_by_name(text):
    with pytest.raises(InputError, match="--shard"):
        Shard.parse(text)


def test_torchrun_ranks_share_the_cohort(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert Shard.from_torchrun() == Shard(1, 2) and str(Shard(1, 2)) == "2/2"


def test_a_csv_manifest_lists_data_in_no_layout(data, tmp_path):
    task, root, model = data
    scattered = tmp_path / "scattered"
    scattered.mkdir()
    rows = ["case_id,role,path"]
    for i, case in enumerate(sorted(root.iterdir())):
        shutil.copy(case / "image.nii.gz", scattered / f"scan{i}.nii.gz")
        rows.append(f"p{i},image,scattered/scan{i}.nii.gz")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("\n".join(rows) + "\n")
    dataset = read_dataset(manifest, roles=["image"])
    assert dataset.layout == "manifest" and [c.id for c in dataset.cases] == \
        ["p0", "p1", "p2", "p3"]
    outcomes = predict_cohort(task, dataset, tmp_path / "out", model, write=lambda line: None)
    assert [o.status for o in outcomes] == ["done"] * 4

    manifest.write_text("\n".join([*rows, "p0,image,scattered/scan1.nii.gz"]) + "\n")
    with pytest.raises(InputError, match="second 'image'"):
        read_dataset(manifest, roles=["image"])
    manifest.write_text("case_id,role,path\np0,mask,scattered/scan0.nii.gz\n")
    with pytest.raises(InputError, match="no 'image' row"):
        read_dataset(manifest, roles=["image"])
    manifest.write_text("id,file\n")
    with pytest.raises(InputError, match="case_id,role,path"):
        read_dataset(manifest, roles=["image"])


def test_the_cohort_table_has_a_row_per_case_whichever_shard_ran_it(data, tmp_path):
    import csv

    task, root, model = data
    broken = sorted(root.iterdir())[2]
    (broken / "image.nii.gz").write_bytes(b"not an image")
    dataset = read_dataset(root, roles=["image"], check=False)
    out = tmp_path / "out"
    predict_cohort(task, dataset, out, model, shard=Shard(0, 2), write=lambda line: None)
    summary = cohort.write_summary(task, dataset, out)
    assert (summary["done"], summary["failed"], summary["not run"]) == (1, 1, 2)
    predict_cohort(task, dataset, out, model, shard=Shard(1, 2), write=lambda line: None)
    summary = cohort.write_summary(task, dataset, out)
    assert (summary["done"], summary["failed"], summary["not run"]) == (3, 1, 0)
    with (out / "cohort.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == sorted(p.name for p in root.iterdir())
    failed = next(r for r in rows if r["case_id"] == broken.name)
    assert failed["status"] == "failed" and failed["error"] and not failed["folder"]
    done = [r for r in rows if r["status"] == "done"]
    for row in done:
        document = json.loads((out / row["folder"] / "result.json").read_text())
        assert float(row["volume_ml:Spot"]) == document["segments"][0]["volume_ml"]
    assert summary["distributions"]["volume_ml:Spot"]["n"] == 3
    for row in done:  # quality flags of result.json, counted and explained in the table
        flags = json.loads((out / row["folder"] / "result.json").read_text())["details"][
            "quality"]
        assert int(row["flags"]) == len(flags)
        assert row["flag_reasons"] == " | ".join(f["reason"] for f in flags)
    assert summary["flagged"] == sum(int(r["flags"]) > 0 for r in done)
    assert json.loads((out / "cohort.json").read_text()) == summary
    report = (out / "report.html").read_text()
    assert "http://" not in report and "https://" not in report and "<script" not in report
    cards = [report.index(f"id='case-{r['case_id']}'") for r in rows]
    flagged_first = sorted(rows, key=lambda r: (
        {"done": 2, "failed": 1}[r["status"]] - (r["status"] == "done" and int(r["flags"]) > 0)
        * 2, r["case_id"]))
    assert sorted(cards) == [report.index(f"id='case-{r['case_id']}'") for r in flagged_first]
    for row in done:  # each finished case has its picture inlined
        assert (out / "thumbnails" / f"{row['case_id']}.png").is_file()
    assert report.count("data:image/png;base64,") == len(done)
    assert failed["error"] in report.replace("&#x27;", "'").replace("&quot;", '"')


def test_a_finished_case_reads_back_as_the_prediction_that_wrote_it(data, tmp_path):
    task, root, model = data
    dataset = read_dataset(root, roles=["image"])
    predict_cohort(task, dataset, tmp_path / "out", model, write=lambda line: None)
    case = dataset.cases[0]
    back = cohort.stored_prediction(tmp_path / "out" / "cases" / case.id)
    alone = verbs.predict(task, {"image": case.read_stored("image")}, model)
    assert back.task == task.name and back.segments == task.segments
    assert np.array_equal(sitk.GetArrayFromImage(back.labels),
                          sitk.GetArrayFromImage(alone.labels))
    assert back.segment_volumes_ml() == alone.segment_volumes_ml()
    for name, image in alone.probabilities.items():  # within the stored precision
        difference = np.abs(sitk.GetArrayFromImage(back.probabilities[name]) -
                            sitk.GetArrayFromImage(image))
        assert difference.max() <= 1 / 510 + 1e-6
    assert np.array_equal(sitk.GetArrayFromImage(back.images["image"]),
                          sitk.GetArrayFromImage(case.read_stored("image")))
    assert "quality" in back.details


def test_the_cli_predicts_a_cohort_resumes_it_and_refuses_what_does_not_fit(data, tmp_path,
                                                                            capsys):
    from oncoseg.cli import main

    task, root, model = data
    out = tmp_path / "out"
    command = ["predict", task.name, "--dataset", str(root), "--model", str(model),
               "--output", str(out)]
    assert main(command) == 0
    captured = capsys.readouterr()
    assert "[4/4]" in captured.err and "Cohort: 4 of 4 cases done, 0 failed" in captured.out
    assert {p.name for p in out.iterdir()} >= {"cases", "thumbnails", "cohort.csv",
                                               "cohort.json", "report.html"}
    assert main(command) == 0  # again: nothing to do
    assert capsys.readouterr().err.count(" finished before |") == 4
    for extra, message in ((["--input", "image=x.nii.gz"], "--input"),
                           (["--overwrite"], "--overwrite"), (["--shard", "3/2"], "--shard")):
        assert main([*command, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["predict", task.name, "--shard", "1/2", "--input",
                 f"image={root / 'toy_000' / 'image.nii.gz'}", "--output",
                 str(tmp_path / "one")]) == 2
    assert "--shard: is an option of a cohort run" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main([*command[:-1], str(tmp_path / "other")]) == 2
    assert "not a cohort's output folder" in capsys.readouterr().err


def test_a_failed_case_makes_the_cli_fail_and_name_it(data, tmp_path, capsys):
    from oncoseg.cli import main

    task, root, model = data
    (root / "toy_002" / "image.nii.gz").write_bytes(b"broken")
    assert main(["predict", task.name, "--dataset", str(root), "--model", str(model),
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "1 case(s) failed (toy_002)" in err and "Run the command again" in err


def test_torchrun_ranks_share_a_cohort_and_their_union_is_the_one_process_run(tmp_path):
    """Two gloo processes on this machine: each rank predicts its share with the demo model,
    rank 0 writes the summary; the label maps equal one process's byte for byte."""
    import os
    import sys

    from cli_runs import run_process_tree

    from oncoseg.cli import main

    verbs.phantom("oar-mr", tmp_path / "data", cases=2, seed=4)  # kaggle layout, 2D network
    assert main(["predict", "oar-mr", "--dataset", str(tmp_path / "data"), "--output",
                 str(tmp_path / "one"), "--device", "cpu"]) == 0
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    result = run_process_tree(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--log-dir",
         str(tmp_path / "torchrun-logs"), "--nproc_per_node", "2", "-m", "oncoseg", "predict",
         "oar-mr", "--dataset", str(tmp_path / "data"),
         "--output", str(tmp_path / "two"), "--device", "cpu"], timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "shard 1/2" in result.stderr and "shard 2/2" in result.stderr
    one = sorted((tmp_path / "one" / "cases").iterdir())
    two = sorted((tmp_path / "two" / "cases").iterdir())
    assert [p.name for p in one] == [p.name for p in two] and len(one) >= 2
    for a, b in zip(one, two, strict=True):
        assert (a / "labels.nii.gz").read_bytes() == (b / "labels.nii.gz").read_bytes()
    summary = json.loads((tmp_path / "two" / "cohort.json").read_text())
    assert summary["done"] == len(one) and (tmp_path / "two" / "report.html").is_file()


def test_a_cohort_killed_with_sigkill_resumes_with_nothing_half_written(tmp_path):
    """kill -9 while a case is being written, then the same command: every case finished,
    none twice, no hidden part left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    verbs.phantom("oar-mr", tmp_path / "data", cases=2, seed=8)
    command = [sys.executable, "-m", "oncoseg", "predict", "oar-mr", "--dataset",
               str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    cases = tmp_path / "out" / "cases"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (cases.is_dir() and any(
                p.name.endswith(".part") for p in cases.iterdir())):
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in cases.iterdir()
                if not p.name.startswith(".")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in cases.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    assert names == sorted(c.id for c in read_dataset(tmp_path / "data", roles=["mr"]).cases)
    assert result.stderr.count(" finished before |") == len(finished)
    for name, mtime in finished.items():
        assert (cases / name).stat().st_mtime_ns == mtime
    for name in names:
        assert json.loads((cases / name / "result.json").read_text())["task"] == "oar-mr"


def test_the_probability_format_is_chosen_on_the_command_line(toy, tmp_path):
    from oncoseg.cli import build_parser, main
    from oncoseg.prediction import PROBABILITY_FORMATS

    task, image, model = toy
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    [action] = [a for a in predict._actions if a.dest == "probability_format"]
    assert set(action.choices) == set(PROBABILITY_FORMATS) and action.default == "uint8"
    assert main(["predict", task.name, "--input", f"image={image}", "--model", str(model),
                 "--output", str(tmp_path / "f32"), "--probability-format", "float32"]) == 0
    document = json.loads((tmp_path / "f32" / "result.json").read_text())
    assert document["probability_maps"]["format"] == "float32"
    assert document["files"]["probabilities"]
    for relative in document["files"]["probabilities"].values():
        assert relative.endswith(".nii") and (tmp_path / "f32" / relative).is_file()


def test_a_manifest_of_pacs_folders_chooses_each_series_and_keeps_what_predict_notes(
        data, tmp_path):
    """A PACS export puts each patient's series in one folder: a manifest row names the folder
    and, in its optional series column, the series (UID or description pattern). Each case's
    result keeps what reading its series said (a missing slice resampled: dropped before in a
    cohort, which read images without their notes) and which series it was, as `predict`
    does; a training check reads the folder's grid from the headers."""
    from dicom_ct import set_attributes, uniform_series

    task, _, model = data
    rows = ["case_id,role,path,series"]
    chosen = {}
    for i in range(2):
        folder = tmp_path / f"patient{i}"
        wanted = uniform_series(folder, count=12)
        other = uniform_series(tmp_path / f"other{i}", count=12)
        set_attributes(other, SeriesDescription="scout recon")
        for path in other:
            shutil.move(path, folder / f"o_{path.name}")
        wanted[5].unlink()  # a slice lost on the way: resampled, with a note
        chosen[f"p{i}"] = str(pydicom.dcmread(wanted[0]).SeriesInstanceUID)
        rows.append(f"p{i},image,patient{i}," + (chosen[f"p{i}"] if i == 0 else "analytic*"))
    manifest = tmp_path / "pacs.csv"
    manifest.write_text("\n".join(rows) + "\n")
    dataset = read_dataset(manifest, roles=["image"])  # checked: each folder's chosen series
    outcomes = predict_cohort(task, dataset, tmp_path / "out", model, write=lambda line: None)
    assert [o.status for o in outcomes] == ["done"] * 2
    for case_id, uid in chosen.items():
        document = json.loads((tmp_path / "out" / "cases" / case_id / "result.json").read_text())
        assert document["input_series"]["image"]["series_uid"] == uid
        assert any(m.startswith("input image: 1 slice(s) missing") for m in document["messages"])
    manifest.write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")  # no choice
    with pytest.raises(InputError, match="contains 2 DICOM series"):
        read_dataset(manifest, roles=["image"])
