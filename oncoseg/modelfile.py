"""OncoSeg model files: one ``.safetensors`` file holding the weights and, in its header
metadata, a JSON document describing the model (task, architecture, inputs, preprocessing,
outputs, provenance).

Loading never unpickles: the header is checked by hand before the safetensors library reads
the tensors, a pickle or a PyTorch ``.pt`` archive is refused with a message that says why, and
the network is built from a registry of known architectures (a name in the file selects one; it
cannot name code to run). Network modules register their architectures when imported; to find
one, only the modules the file's own task declares (:attr:`oncoseg.tasks.Task.network_modules`)
are imported, never every method's networks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.settings import values_problem
from oncoseg.tasks import get_task, import_network_modules

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
METADATA_KEY = "oncoseg"
MAX_HEADER_BYTES = 64 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class ModelStatement:
    """What whoever trains a model states of it in its file, beside what training records:
    a description, whether it learnt from synthetic data only (a demo, not for clinical use),
    and the weights' licence (SPDX identifier or text; "" where none was stated)."""

    description: str = ""
    demo: bool = False
    license: str = ""

    def fields(self) -> dict[str, Any]:
        """As :class:`ModelMetadata`'s fields of the same names."""
        return asdict(self)


NO_STATEMENT = ModelStatement()


@dataclass
class ModelMetadata:
    """What a model file says about itself. Every field is required unless it has a default."""

    task: str
    architecture: str
    architecture_args: dict[str, Any]
    inputs: list[str]
    preprocessing: dict[str, Any]
    outputs: dict[str, Any]  # {"segments": [...]} or {"classes": [...]}
    provenance: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    demo: bool = False  # trained on synthetic phantoms: not for clinical use
    # the weights' licence (SPDX identifier or text); "" when whoever trained it stated none
    license: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def training_data_license(self) -> str:
        """The licence the training data set states of itself (its ``dataset.json``), as
        training recorded it; a demo model's data are OncoSeg's own synthetic phantoms; ""
        where nothing is stated."""
        dataset = self.provenance.get("dataset", {})
        stated = str(dataset.get("license", "")) if isinstance(dataset, dict) else ""
        return stated or ("synthetic phantoms made by OncoSeg (no patient data)"
                          if self.demo else "")

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelMetadata:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(source, f"model metadata is not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise InputError(source, "model metadata is not a JSON object")
        version = document.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(source, f"field 'format_version' is {version!r}; this OncoSeg reads "
                             f"versions up to {FORMAT_VERSION} (update OncoSeg?)")
        expected_types = {"task": str, "architecture": str, "architecture_args": dict,
                          "inputs": list, "preprocessing": dict, "outputs": dict,
                          "provenance": dict, "description": str, "demo": bool,
                          "license": str, "format_version": int}
        values = {}
        for f in fields(cls):
            if f.name not in document:
                if f.name in ("task", "architecture", "architecture_args", "inputs",
                              "preprocessing", "outputs"):
                    raise InputError(source, f"model metadata lacks the field '{f.name}'")
                continue
            value = document[f.name]
            if not isinstance(value, expected_types[f.name]):
                raise InputError(source, f"model metadata field '{f.name}' should be "
                                 f"{expected_types[f.name].__name__}, not "
                                 f"{type(value).__name__}")
            values[f.name] = value
        if not all(isinstance(role, str) for role in values["inputs"]):
            raise InputError(source, "model metadata field 'inputs' must list role names")
        for part in ("preprocessing", "architecture_args"):
            found = values_problem(values[part])
            if found:
                name, problem = found
                value = _dotted(values[part], name)
                raise InputError(source, f"field '{part}.{name}' is {value!r}: {problem}")
        return cls(**values)


def _dotted(values: Mapping[str, Any], name: str) -> Any:
    """The value at a dotted name as :func:`oncoseg.settings.values_problem` gives it
    ('members[1].width')."""
    value: Any = values
    for part in name.split("."):
        key, _, index = part.partition("[")
        value = value[key]
        if index:
            value = value[int(index.rstrip("]"))]
    return value


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class ModelFileHeader:
    metadata: ModelMetadata
    tensors: dict[str, TensorInfo]

    @property
    def parameter_count(self) -> int:
        """Learned parameters only: batch-norm statistics are state, not parameters."""
        return sum(t.numel for name, t in self.tensors.items() if not _is_buffer(name))

    def parameters_by_part(self) -> dict[str, int]:
        """Parameters per top-level part of the network (``stem``, ``stages``, ``slice_fc``):
        what papers tabulate is often a subset."""
        parts: dict[str, int] = {}
        for name, tensor in self.tensors.items():
            if not _is_buffer(name):
                part = name.split(".")[0]
                parts[part] = parts.get(part, 0) + tensor.numel
        return parts


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _is_buffer(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in _BUFFERS


def provenance(**extra: Any) -> dict[str, Any]:
    """Software versions and date, plus what the caller knows (data set, epochs, metrics)."""
    import numpy
    import SimpleITK

    import oncoseg

    versions = {"oncoseg": oncoseg.__version__, "python": platform.python_version(),
                "numpy": numpy.__version__, "SimpleITK": SimpleITK.Version_VersionString()}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "software": versions, **extra}


# ---------------------------------------------------------------------------- reading


def _looks_like_safetensors(start: bytes, size: int) -> bool:
    """A safetensors file opens with its header's length (u64, little-endian) and the header's
    '{': such a start is never taken for a pickle, whose protocol mark (0x80, 2-5) the length's
    first bytes can equal (a header of 0x280-0x5ff bytes)."""
    if len(start) < 9:
        return False
    length = struct.unpack("<Q", start[:8])[0]
    return start[8:9] == b"{" and 2 <= length <= size - 8


def _refusal_reason(start: bytes, size: int) -> str | None:
    if _looks_like_safetensors(start, size):
        return None
    if start.startswith(b"PK\x03\x04"):
        return ("is a zip archive (a PyTorch .pt/.pth checkpoint?). It was not opened: such "
                "files hold pickled Python objects that can run code. OncoSeg model files are "
                ".safetensors")
    if start[:1] == b"\x80" and start[1:2] in {bytes([p]) for p in range(2, 6)}:
        return ("is a Python pickle. It was not opened: unpickling can run arbitrary code. "
                "OncoSeg model files are .safetensors")
    if start.startswith(b"\x89HDF"):
        return "is an HDF5 file (a Keras model?), not an OncoSeg .safetensors model file"
    return None


def read_header(path: str | os.PathLike[str]) -> ModelFileHeader:
    """Read and check a model file's header without loading any tensor (and without torch)."""
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise InputError(source, "no such model file")
    size = p.stat().st_size
    with p.open("rb") as handle:
        start = handle.read(9)
        reason = _refusal_reason(start, size)
        if reason:
            raise InputError(source, reason)
        start = start[:8]
        if len(start) < 8:
            raise InputError(source, "is too short to be a model file")
        (header_len,) = struct.unpack("<Q", start)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise InputError(source, "is not a safetensors model file (its first bytes are not "
                             "a valid header length)")
        handle.seek(8)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(source, "is not a safetensors model file (unreadable header)") from None
    if not isinstance(header, dict):
        raise InputError(source, "is not a safetensors model file (header is not an object)")
    meta = header.pop("__metadata__", None) or {}
    if METADATA_KEY not in meta:
        raise InputError(source, "is a safetensors file without OncoSeg metadata (it is not an "
                         "OncoSeg model file, or was saved by another program)")
    metadata = ModelMetadata.from_json(meta[METADATA_KEY], source)
    tensors = {}
    data_len = size - 8 - header_len
    for name, entry in header.items():
        try:
            dtype, shape = entry["dtype"], tuple(entry["shape"])
            begin, end = entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise InputError(source, f"tensor '{name}' has a malformed header entry") from None
        info = TensorInfo(dtype, tuple(int(s) for s in shape))
        if dtype not in _DTYPE_BYTES or not 0 <= begin <= end <= data_len or \
                end - begin != info.numel * _DTYPE_BYTES[dtype]:
            raise InputError(source, f"tensor '{name}' does not fit the file (truncated or "
                             "corrupt model file)")
        tensors[name] = info
    return ModelFileHeader(metadata, tensors)


def load_tensors(path: str | os.PathLike[str], expected_task: str | None = None,
                 device: str = "cpu") -> tuple[ModelMetadata, dict[str, torch.Tensor]]:
    """The metadata and the weights, after the header checks of :func:`read_header`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_header(path)
    if expected_task is not None and header.metadata.task != expected_task:
        raise InputError(str(path), f"field 'task' is '{header.metadata.task}', but this is "
                         f"the '{expected_task}' task; choose a model trained for it")
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise InputError(str(path), f"weights could not be read ({error})") from None
    return header.metadata, tensors


# ---------------------------------------------------------------------------- writing


def save_model(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
               metadata: ModelMetadata, overwrite: bool = False) -> Path:
    """Write weights and metadata atomically; refuses to replace a file unless asked."""
    from safetensors.torch import save_file

    clean = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    with atomic_path(path, overwrite) as tmp:
        save_file(clean, str(tmp), metadata={METADATA_KEY: metadata.to_json(), "format": "pt"})
    return Path(path)


def rewritten(source: str | os.PathLike[str], target: str | os.PathLike[str],
              update: Callable[[ModelMetadata, dict[str, torch.Tensor]], None],
              overwrite: bool = False) -> Path:
    """A copy of a model file after ``update`` changed its metadata (and, if it must, its
    tensors) in place: the one way OncoSeg edits a finished model file."""
    metadata, tensors = load_tensors(source)
    update(metadata, tensors)
    return save_model(target, tensors, metadata, overwrite)


def store_half(source: str | os.PathLike[str], target: str | os.PathLike[str],
               overwrite: bool = False) -> Path:
    """A copy of a model file with its float32 tensors stored as float16: half the size for
    bundled demo models (loading casts them back into the float32 network; the outputs move
    by about 1e-3 relative, which the tests of each demo cover)."""
    import torch

    def halve(metadata: ModelMetadata, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            if tensor.dtype == torch.float32:
                tensors[name] = tensor.half()
        metadata.provenance = {**metadata.provenance, "stored_as": "float16"}

    return rewritten(source, target, halve, overwrite)


# ---------------------------------------------------------------------------- networks

ArchitectureFactory = Callable[..., "torch.nn.Module"]
_ARCHITECTURES: dict[str, ArchitectureFactory] = {}


def register_architecture(name: str) -> Callable[[ArchitectureFactory], ArchitectureFactory]:
    """Decorator: make a network constructor loadable by name from model files."""

    def decorate(factory: ArchitectureFactory) -> ArchitectureFactory:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not factory:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[name] = factory
        return factory

    return decorate


def architecture_names() -> list[str]:
    """Every architecture of every installed task. This imports all their networks: it lists,
    it is not what loading a model file does (:func:`build_network` imports one task's)."""
    import_network_modules()
    return sorted(_ARCHITECTURES)


def _architecture(metadata: ModelMetadata, source: str) -> ArchitectureFactory:
    """The constructor the metadata names. One not registered yet is looked for in the network
    modules of the metadata's own task only: loading an oar-mr model imports no other
    method's torch code."""
    factory = _ARCHITECTURES.get(metadata.architecture)
    if factory is not None:
        return factory
    unknown = f"field 'architecture' names '{metadata.architecture}', which this OncoSeg does " \
        "not know"
    try:
        get_task(metadata.task)
    except InputError as error:
        raise InputError(source, f"{unknown}, and field 'task' names '{metadata.task}', which "
                         f"{error.problem}") from None
    modules = import_network_modules(metadata.task)
    factory = _ARCHITECTURES.get(metadata.architecture)
    if factory is None:
        known = sorted(name for name, f in _ARCHITECTURES.items() if f.__module__ in modules)
        raise InputError(source, f"{unknown} (architectures of the '{metadata.task}' task: "
                         f"{', '.join(known) or 'none'})")
    return factory


def build_network(metadata: ModelMetadata, source: str = "model") -> torch.nn.Module:
    """A fresh network as the metadata describes it (weights not loaded)."""
    factory = _architecture(metadata, source)
    try:
        return factory(**metadata.architecture_args)
    except (TypeError, ValueError, RuntimeError) as error:  # constructors check their arguments
        raise InputError(source, f"field 'architecture_args' does not fit architecture "
                         f"'{metadata.architecture}' ({error})") from None


DEMO_NOTE = "demo model trained on synthetic phantoms: not for clinical use"


def resolve_model_file(model: str | os.PathLike[str], demo_file: Path) -> Path:
    """The model file a ``--model`` value names; ``demo`` is the task's bundled model."""
    if str(model) == "demo":
        if not demo_file.is_file():
            raise InputError("--model demo", f"the bundled demo model is missing ({demo_file}); "
                             "reinstall OncoSeg or give a model file")
        return demo_file
    path = Path(model)
    if not path.is_file():
        raise InputError(f"--model {model}", "is not a file")
    return path


def model_summary(path: Path, metadata: ModelMetadata) -> dict[str, Any]:
    """How a prediction names its model (result.json, the overview's title, the DICOM objects
    exported from it): which file exactly (its sha256), when it was trained, under which
    licence."""
    name = "demo model (synthetic phantoms, not for clinical use)" if metadata.demo \
        else path.name
    software = metadata.provenance.get("software", {})
    return {"name": name, "file": path.name, "path": str(path),
            "description": metadata.description, "demo": metadata.demo,
            "sha256": file_sha256(path), "trained": metadata.provenance.get("date", ""),
            "license": metadata.license or "not stated",
            "training_data_license": metadata.training_data_license or "not stated",
            "trained_with_oncoseg": software.get("oncoseg", "") if isinstance(software, dict)
            else ""}


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256, computed once per file version (path, size, modification time) in
    a process: a cohort names its model in every case's result."""
    import hashlib

    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def load_network(path: str | os.PathLike[str], expected_task: str | None = None,
                 device: str = "cpu") -> tuple[torch.nn.Module, ModelMetadata]:
    """Build the network a model file describes and load its weights, checking every tensor."""
    source = str(path)
    metadata, tensors = load_tensors(path, expected_task, device="cpu")
    network = build_network(metadata, source)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise InputError(source, f"tensor '{missing[0]}' is missing ({len(missing)} missing in "
                         f"all) for architecture '{metadata.architecture}'")
    if unexpected:
        raise InputError(source, f"tensor '{unexpected[0]}' is not part of architecture "
                         f"'{metadata.architecture}' ({len(unexpected)} unexpected in all)")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise InputError(source, f"tensor '{name}' has shape {tuple(tensor.shape)}, "
                             f"architecture '{metadata.architecture}' needs "
                             f"{tuple(expected[name].shape)}")
    network.load_state_dict(tensors, strict=True)
    return network.to(device).eval(), metadata


@dataclass(frozen=True)
class LoadedModel:
    """A model file read once, for runs over many images (evaluation, threshold search)."""

    network: torch.nn.Module
    metadata: ModelMetadata
    path: Path


def load_model(model: str | os.PathLike[str] | LoadedModel, demo_file: Path, task: str,
               device: str = "cpu") -> LoadedModel:
    """The network a ``--model`` value names, checked to be a model of ``task``; an already
    loaded model passes through."""
    if isinstance(model, LoadedModel):
        return model
    path = resolve_model_file(model, demo_file)
    network, metadata = load_network(path, expected_task=task, device=device)
    return LoadedModel(network, metadata, path)
