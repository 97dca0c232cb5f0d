"""Licences: a model file states its weights' licence and the licence of the data it learnt
from (a data set's ``dataset.json``, as the Decathlon and nnU-Net write it), and every place a
model is named shows both: ``oncoseg info``, ``result.json``, the exported DICOM objects."""

import json

import pytest
import toymethod

from oncoseg.cli import main
from oncoseg.datasets.base import stated_license
from oncoseg.modelfile import ModelMetadata, ModelStatement, read_header
from oncoseg.tasks import unregister_task


@pytest.fixture
def toy():
    task = toymethod.register()
    yield task
    unregister_task(task.name)


@pytest.mark.parametrize(("document", "stated"), [
    ({"licence": "CC-BY-SA 4.0"}, "CC-BY-SA 4.0"),  # the Decathlon's spelling
    ({"license": " CC-BY-NC-4.0 "}, "CC-BY-NC-4.0"),
    ({"name": "no licence here"}, ""),
    (["not", "an", "object"], ""),
])
def test_a_data_set_states_its_licence_in_dataset_json(tmp_path, document, stated):
    assert stated_license(tmp_path) == ""  # no dataset.json at all
    (tmp_path / "dataset.json").write_text(json.dumps(document))
    assert stated_license(tmp_path) == stated


def test_a_statement_fills_the_model_files_fields_of_the_same_names():
    statement = ModelStatement("my model", True, "MIT")
    metadata = ModelMetadata("t", "a", {}, [], {}, {}, **statement.fields())
    assert (metadata.description, metadata.demo, metadata.license) == ("my model", True, "MIT")
    assert metadata.training_data_license.startswith("synthetic phantoms")  # a demo's data
    assert ModelMetadata("t", "a", {}, [], {}, {}).training_data_license == ""


def test_train_records_both_licences_and_every_reader_shows_them(toy, tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["phantom", "toy-spot", "--output", str(data), "--cases", "3"]) == 0
    (data / "dataset.json").write_text(json.dumps({"name": "spots", "licence": "CC-BY-SA 4.0"}))
    capsys.readouterr()
    assert main(["train", "toy-spot", "--dataset", str(data), "--output", str(run),
                 "--progress", "none", "--set", "offsets=5", "--license", "CC-BY-NC-4.0"]) == 0
    assert "training data licence: CC-BY-SA 4.0" in capsys.readouterr().err
    model = run / "model.safetensors"
    metadata = read_header(model).metadata
    assert metadata.license == "CC-BY-NC-4.0"
    assert metadata.training_data_license == "CC-BY-SA 4.0"
    assert main(["info", str(model)]) == 0
    shown = capsys.readouterr().out
    assert "licence: CC-BY-NC-4.0" in shown and "training data licence: CC-BY-SA 4.0" in shown
    out = tmp_path / "out"
    assert main(["predict", "toy-spot", "--input", f"image={data / 'toy_000' / 'image.nii.gz'}",
                 "--model", str(model), "--output", str(out), "--progress", "none"]) == 0
    named = json.loads((out / "result.json").read_text())["model"]
    assert (named["license"], named["training_data_license"]) == ("CC-BY-NC-4.0",
                                                                  "CC-BY-SA 4.0")


def test_train_without_a_licence_says_the_model_states_none(toy, tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["phantom", "toy-spot", "--output", str(data), "--cases", "3"]) == 0
    capsys.readouterr()
    assert main(["train", "toy-spot", "--dataset", str(data), "--output", str(run),
                 "--progress", "none", "--set", "offsets=5"]) == 0
    said = capsys.readouterr().err
    assert "states no licence" in said and "--license" in said
    assert read_header(run / "model.safetensors").metadata.license == ""
