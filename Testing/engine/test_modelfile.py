import pickle
import struct
from pathlib import Path

import pytest
import torch
from pickles import WritesMarker
from tinynet import tiny_conv, tiny_metadata

import oncoseg
from oncoseg.errors import InputError
from oncoseg.modelfile import (
    ModelMetadata,
    build_network,
    load_network,
    load_tensors,
    model_summary,
    read_header,
    register_architecture,
    save_model,
)
from oncoseg.settings import values_problem


def test_round_trip_with_metadata(tmp_path):
    net = tiny_conv()
    path = save_model(tmp_path / "m.safetensors", net.state_dict(), tiny_metadata())
    header = read_header(path)
    assert header.metadata == tiny_metadata()
    assert header.parameter_count == sum(p.numel() for p in net.parameters())
    loaded, metadata = load_network(path, expected_task="test-threshold")
    x = torch.randn(1, 1, 5, 6, 7)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    assert metadata.demo is True


def test_never_overwrites_unless_asked(tmp_path):
    path = save_model(tmp_path / "m.safetensors", tiny_conv().state_dict(), tiny_metadata())
    with pytest.raises(InputError, match="already exists"):
        save_model(path, tiny_conv().state_dict(), tiny_metadata())


@pytest.mark.parametrize("name", ["evil.safetensors", "evil.pt"])
def test_pickles_are_refused_and_never_run(tmp_path, name):
    marker = tmp_path / "executed"
    WritesMarker.path = str(marker)
    path = tmp_path / name
    if name.endswith(".pt"):
        torch.save({"weights": WritesMarker()}, path)  # a zip archive with a pickle inside
    else:
        path.write_bytes(pickle.dumps(WritesMarker()))
    for loader in (read_header, load_tensors, load_network):
        with pytest.raises(InputError, match=r"(pickle|zip archive).*not opened"):
            loader(path)
    assert not marker.exists()


def test_wrong_task_missing_tensor_and_shape_are_named(tmp_path):
    state = tiny_conv().state_dict()
    path = save_model(tmp_path / "m.safetensors", state, tiny_metadata())
    with pytest.raises(InputError, match=r"field 'task' is 'test-threshold'.*'rectal'"):
        load_tensors(path, expected_task="rectal")

    partial = {k: v for k, v in state.items() if k != "2.bias"}
    path = save_model(tmp_path / "missing.safetensors", partial, tiny_metadata())
    with pytest.raises(InputError, match=r"missing.safetensors: tensor '2.bias' is missing"):
        load_network(path)

    wrong = tiny_conv(classes=3).state_dict()
    path = save_model(tmp_path / "shape.safetensors", wrong, tiny_metadata())
    with pytest.raises(InputError, match=r"tensor '2.bias' has shape \(3,\).*needs \(2,\)"):
        load_network(path)

    path = save_model(tmp_path / "arch.safetensors", state, tiny_metadata(architecture="nope"))
    with pytest.raises(InputError, match="field 'architecture' names 'nope'"):
        load_network(path)


def test_foreign_and_corrupt_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(InputError, match="without OncoSeg metadata"):
        read_header(tmp_path / "foreign.safetensors")

    good = save_model(tmp_path / "m.safetensors", tiny_conv().state_dict(), tiny_metadata())
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[:-10])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_header(tmp_path / "truncated.safetensors")
    (tmp_path / "noise.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"x" * 50)
    with pytest.raises(InputError, match="not a safetensors model file"):
        read_header(tmp_path / "noise.safetensors")
    with pytest.raises(InputError, match="no such model file"):
        read_header(tmp_path / "absent.safetensors")


def test_metadata_fields_are_checked(tmp_path):
    from safetensors.torch import save_file

    for document, message in [
        ('{"format_version": 1, "task": "x"}', "lacks the field 'architecture'"),
        ('{"format_version": 99}', "'format_version' is 99"),
        ('[1, 2]', "model metadata is not a JSON object"),
    ]:
        path = tmp_path / "m.safetensors"
        save_file({"w": torch.zeros(1)}, str(path), metadata={"oncoseg": document})
        with pytest.raises(InputError, match=message):
            read_header(path)
        path.unlink()


def test_model_values_resolve_to_files(tmp_path):
    from oncoseg.errors import InputError
    from oncoseg.modelfile import resolve_model_file

    bundled = tmp_path / "bundled.safetensors"
    with pytest.raises(InputError, match="--model demo: the bundled demo model is missing"):
        resolve_model_file("demo", bundled)
    bundled.write_bytes(b"x")
    assert resolve_model_file("demo", bundled) == bundled
    assert resolve_model_file(str(bundled), tmp_path / "other") == bundled
    with pytest.raises(InputError, match="is not a file"):
        resolve_model_file(tmp_path / "nothing.safetensors", bundled)


def test_half_precision_storage_halves_the_file_and_keeps_the_outputs(tmp_path):
    from oncoseg.modelfile import store_half

    torch.manual_seed(0)
    net = tiny_conv()
    save_model(tmp_path / "full.safetensors", net.state_dict(), tiny_metadata())
    store_half(tmp_path / "full.safetensors", tmp_path / "half.safetensors")
    _, full = load_tensors(tmp_path / "full.safetensors")
    _, tensors = load_tensors(tmp_path / "half.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    assert sum(t.nbytes for t in tensors.values()) * 2 == sum(t.nbytes for t in full.values())
    a, _ = load_network(tmp_path / "full.safetensors")
    b, metadata = load_network(tmp_path / "half.safetensors")
    assert metadata.provenance["stored_as"] == "float16"
    assert next(b.parameters()).dtype == torch.float32  # cast back on loading
    x = torch.randn(1, 1, 5, 6, 7)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), rtol=1e-2, atol=1e-3)
    with pytest.raises(InputError, match="already exists"):
        store_half(tmp_path / "full.safetensors", tmp_path / "half.safetensors")



def test_demo_models_and_every_tasks_defaults_hold_possible_values():
    """The value rules refuse nothing that ships: every demo model reads, every default
    passes."""
    from oncoseg.tasks import all_tasks

    models = sorted((Path(oncoseg.__file__).parent / "data" / "models").glob("*.safetensors"))
    assert len(models) == 5
    for path in models:
        read_header(path)
    for task in all_tasks():
        assert values_problem(dict(task.default_config)) is None, task.name


def test_impossible_values_in_nested_arguments_are_named(tmp_path):
    metadata = tiny_metadata(architecture_args={"in_channels": 1, "classes": 2, "members": [
        {"width": 8, "levels": 2}, {"width": 0, "levels": 2}]})
    path = save_model(tmp_path / "m.safetensors", tiny_conv().state_dict(), metadata)
    with pytest.raises(InputError, match=r"m.safetensors: field 'architecture_args.members\[1\]"
                       r".width' is 0: it must be a whole number of at least 1"):
        read_header(path)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"patch_size": [0, 64, 64]}, "--set patch_size: is (0, 64, 64): each entry must be a whole "
     "number of voxels from 1 to 4096"),
    ({"spacing_mm": "2,-2,3"}, "--set spacing_mm: is (2.0, -2.0, 3.0): each entry must be "
     "greater than 0"),
    ({"overlap": 1.0}, "--set overlap: is 1.0: it must be at least 0 and below 1"),
    ({"hu_low": 900}, "--set hu_low: is 900.0: must be below hu_high (800.0)"),
    ({"hu_high": float("nan")}, "--set hu_high: is nan: it must be a finite number"),
])
def test_impossible_overrides_are_refused(overrides, message):
    from oncoseg.oar.ct.config import OarCtConfig

    with pytest.raises(InputError) as error:
        OarCtConfig.from_overrides(overrides)
    assert str(error.value).startswith(message)


def test_a_constructor_refusing_its_arguments_is_bad_input(tmp_path):
    metadata = tiny_metadata(architecture_args={"in_channels": 1, "classes": 2, "seed": -1})

    @register_architecture("test-refusing")
    def refusing(in_channels: int, classes: int, seed: int) -> torch.nn.Module:
        raise ValueError("seed must not be negative")

    metadata.architecture = "test-refusing"
    with pytest.raises(InputError, match=r"m: field 'architecture_args' does not fit "
                       r"architecture 'test-refusing' \(seed must not be negative\)"):
        build_network(metadata, "m")


@pytest.mark.parametrize("task", ["rectal", "oar-ct", "oar-mr", "staging", "brain"])
def test_every_demo_model_states_its_licence_and_info_shows_it_with_the_hash(task, capsys):
    import hashlib

    from oncoseg.cli import main
    from oncoseg.method import demo_model_file

    path = demo_model_file(task)
    assert read_header(path).metadata.license == "Apache-2.0"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  licence: Apache-2.0" in out
    assert f"  sha256: {hashlib.sha256(path.read_bytes()).hexdigest()}" in out


def test_a_model_without_a_licence_says_so(tmp_path):
    import torch

    metadata = ModelMetadata(task="rectal", architecture="x", architecture_args={},
                             inputs=["t2w"], preprocessing={}, outputs={"segments": []})
    path = save_model(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, metadata)
    assert read_header(path).metadata.license == ""
    assert model_summary(path, read_header(path).metadata)["license"] == "not stated"


def test_a_header_whose_length_begins_like_a_pickle_mark_is_still_read(tmp_path):
    """A safetensors header of 0x280-0x5ff bytes starts with 80 02..05, a pickle protocol
    mark: such a file was once refused as a pickle (found when a metadata field grew)."""
    import struct

    import torch

    for description_length in range(300, 1400, 7):
        metadata = ModelMetadata(task="rectal", architecture="x", architecture_args={},
                                 inputs=["t2w"], preprocessing={}, outputs={"segments": []},
                                 description="d" * description_length)
        path = save_model(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, metadata,
                          overwrite=True)
        start = path.read_bytes()[:2]
        if start[0] == 0x80 and 2 <= start[1] <= 5:
            assert read_header(path).metadata.description == "d" * description_length
            break
    else:
        raise AssertionError("no header length began with a pickle mark")
    pickle_like = tmp_path / "p.safetensors"
    pickle_like.write_bytes(b"\x80\x04" + struct.pack("<Q", 3)[:6] + b"K.")
    with pytest.raises(InputError, match="Python pickle"):
        read_header(pickle_like)
