"""Task settings as frozen dataclasses, changed by ``--set KEY=VALUE`` or a Slicer panel.

Each task keeps its settings in one :class:`Settings` dataclass whose defaults are its paper's;
this module turns overrides into a checked instance, with errors that name the setting. A setting
belongs to a phase: some only shape training (the optimiser, sampling, the architecture a new
model gets), some only a model's run (post-processing, inference batch), the rest both
(pre-processing a model is trained and run with). Setting one in a phase that never reads it is
an error, not a silent no-op. The training settings every method reads (learning rate,
validation share, seed; for epoch-trained methods the batch, epochs and early stopping) are
declared once, in :class:`CommonTraining` and :class:`EpochTraining`, and each task gives them its
own values with :func:`with_defaults`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass
from typing import Any, ClassVar, TypeVar

from oncoseg.errors import InputError

T = TypeVar("T")
S = TypeVar("S", bound="Settings")
PREDICTION, TRAINING = "prediction", "training"  # the phases: a model's run (predict, evaluate)

# What a value must be, by its name. A name means the same thing in every task's settings and in
# a model file's 'preprocessing' and 'architecture_args', so one table checks all three: an
# impossible value (a window edge of 200001 voxels, a negative spacing, zero channels) is bad
# input named where it came from, not a crash deep inside a network or a resampler.
MAX_WINDOW_EDGE = 4096  # voxels along one axis of a network's window (the largest used: 266)
_WINDOWS = {"patch_size", "size", "patch"}
_COUNTS = {"in_channels", "classes", "filters", "width", "width_2d", "width_3d", "levels",
           "levels_2d", "levels_3d", "sequences", "batch_size", "batch_size_2d", "batch_size_3d",
           "inference_batch", "context_stride", "max_epochs", "steps_per_epoch", "repeats",
           "samples_per_class", "batches_per_iteration_2d", "batches_per_iteration_3d",
           "iterations_2d", "iterations_3d", "iterations_pretrain", "iterations_per_epoch",
           "halving_period"}
_POSITIVE = {"spacing_mm", "std", "intensity_constant", "auto_roi_mm", "learning_rate",
             "learning_rate_min"}
_NON_NEGATIVE = {"context", "roi_margin_mm", "ring_mm", "shift_hu", "rotation_rad", "scale",
                 "l2", "min_delta", "crop_max_px", "weight_decay", "momentum", "micro_batch",
                 "hard_negative_rounds", "data_workers", "smallest_piece_ml"}
_FRACTIONS = {"threshold", "gate_threshold", "vote_thresholds", "smoothing_probability",
              "sequence_dropout", "class_targets_2d", "class_targets_3d"}
# (lower, upper): the lower must stay below the upper
_ORDERED_PAIRS = (("hu_low", "hu_high"),)


def _numbers(value: Any) -> list[Any] | None:
    """The numbers a value holds (a number or a flat sequence of numbers); None otherwise."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
        return None
    return items


def value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is impossible for a setting called ``name``; None if it is possible (or
    the name is not one this table knows)."""
    numbers = _numbers(value)
    if numbers is None:
        return None
    each = "each entry" if isinstance(value, (list, tuple)) else "it"
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        return f"{each} must be a finite number"
    whole = all(isinstance(v, int) or float(v).is_integer() for v in numbers)
    if name in _WINDOWS and (not whole or not all(1 <= v <= MAX_WINDOW_EDGE for v in numbers)):
        return (f"{each} must be a whole number of voxels from 1 to {MAX_WINDOW_EDGE} (a "
                "network window's edge)")
    if name in _COUNTS and (not whole or not all(v >= 1 for v in numbers)):
        return f"{each} must be a whole number of at least 1"
    if (name in _POSITIVE or name.endswith("spacing")) and not all(v > 0 for v in numbers):
        return f"{each} must be greater than 0"
    if name in _NON_NEGATIVE and not all(v >= 0 for v in numbers):
        return f"{each} must be 0 or more"
    if (name in _FRACTIONS or name.endswith("_fraction")) and \
            not all(0 <= v <= 1 for v in numbers):
        return f"{each} must lie between 0 and 1"
    if name == "overlap" and not all(0 <= v < 1 for v in numbers):
        return f"{each} must be at least 0 and below 1 (a fraction of the window)"
    return None


def values_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, problem) of the first impossible value in ``values``, pairs included; nested
    mappings and lists of mappings (an ensemble's members) are checked with dotted names."""
    for name, value in values.items():
        if isinstance(value, Mapping):
            nested = values_problem(value)
            if nested:
                return f"{name}.{nested[0]}", nested[1]
            continue
        if isinstance(value, (list, tuple)) and value and \
                all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                nested = values_problem(item)
                if nested:
                    return f"{name}[{index}].{nested[0]}", nested[1]
            continue
        problem = value_problem(name, value)
        if problem:
            return name, problem
    for low, high in _ORDERED_PAIRS:
        a, b = values.get(low), values.get(high)
        if _numbers(a) and _numbers(b) and not a < b:
            return low, f"must be below {high} ({b})"
    return None


def _convert(default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(default, tuple):
        if isinstance(value, str):  # --set members=first,final
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, bytes) or not hasattr(value, "__iter__"):
            raise ValueError
        converted = tuple(type(default[0])(v) for v in value)
        if not converted:
            raise ValueError
        return converted
    return type(default)(value)


def from_overrides(cls: type[T], overrides: Mapping[str, Any] | None, task: str) -> T:
    """An instance of the settings class ``cls`` with the overrides applied and type-checked."""
    defaults = cls()
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise InputError(f"--set {key}", f"is not a setting of the {task} task (settings: "
                             f"{', '.join(sorted(known))})")
        default = getattr(defaults, key)
        try:
            values[key] = _convert(default, value)
        except (TypeError, ValueError):
            raise InputError(f"--set {key}", f"'{value}' is not a valid "
                             f"{type(default).__name__} (default {default!r})") from None
    settings = cls(**values)
    found = values_problem(asdict(settings))
    if found:
        name, problem = found
        raise InputError(f"--set {name}", f"is {getattr(settings, name)!r}: {problem}")
    return settings


def training_only(default: Any = MISSING) -> Any:
    """A setting only training reads (the optimiser, sampling, the architecture of a new
    model): a model's run ignores it, since the model file carries what counts. Without a
    default, each task gives its own (:func:`with_defaults`)."""
    return field(default=default, metadata={"phase": TRAINING})


def prediction_only(default: Any) -> Any:
    """A setting only a model's run reads (predict, evaluate: post-processing, inference
    batch); training ignores it."""
    return field(default=default, metadata={"phase": PREDICTION})


@dataclass(frozen=True)
class Settings:
    """The shared base of every task's settings: overrides checked by name, type, value and
    phase; subclasses declare their fields (the paper's defaults), each field's phase with
    :func:`training_only` / :func:`prediction_only` (unmarked: both)."""

    TASK: ClassVar[str] = ""

    @classmethod
    def only(cls, phase: str) -> frozenset[str]:
        """The settings that only ``phase`` reads."""
        return frozenset(f.name for f in fields(cls) if f.metadata.get("phase") == phase)

    @classmethod
    def from_overrides(cls: type[S], overrides: Mapping[str, Any] | None = None,
                       phase: str | None = None) -> S:
        """Defaults with ``overrides`` applied; with a ``phase``, a setting that phase never
        reads is refused by name."""
        check_phase(cls, overrides, phase)
        return from_overrides(cls, overrides, cls.TASK)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls, phase: str | None = None) -> list[str]:
        """The settings a phase reads (all of them without a phase)."""
        other = {PREDICTION: TRAINING, TRAINING: PREDICTION}.get(phase or "")
        return [f.name for f in fields(cls) if not other or f.metadata.get("phase") != other]


@dataclass(frozen=True, kw_only=True)
class CommonTraining(Settings):
    """The training settings every method reads, each with one meaning (and, by its name, one
    check): declared once here instead of once per task. The values are each task's own
    (its paper's), given through :func:`with_defaults`."""

    # the optimiser's (initial) step size; which optimiser it is, is the method's
    learning_rate: float = training_only()
    # the share of the training patients (a patient's cases together) held out for validation
    validation_fraction: float = training_only(0.2)
    seed: int = training_only(0)  # everything random in a run: the split, sampling, the weights


@dataclass(frozen=True, kw_only=True)
class EpochTraining(CommonTraining):
    """The settings of the shared training loop (:func:`oncoseg.training.train`) for the
    methods that train in epochs and stop early on the validation loss or their criterion."""

    batch_size: int = training_only()  # the global batch (split over a torchrun job's processes)
    max_epochs: int = training_only()
    # early stopping: this many epochs without an improvement of at least min_delta
    patience: int = training_only()
    min_delta: float = training_only()


def with_defaults(base: type[S], **defaults: Any) -> type[S]:
    """``base`` (:class:`CommonTraining`, :class:`EpochTraining`) with a task's own values for
    its shared settings, each setting keeping its type and phase: the task's settings class
    derives from the result. A setting of ``base`` without a default must be given one."""
    declared = {f.name: f for f in fields(base)}
    unknown = sorted(set(defaults) - set(declared))
    missing = sorted(name for name, f in declared.items()
                     if f.default is MISSING and name not in defaults)
    if unknown or missing:
        raise TypeError(f"{base.__name__}: {', '.join(unknown)} not among its settings"
                        if unknown else f"{base.__name__} needs a value for {', '.join(missing)}")
    made = make_dataclass(base.__name__, [
        (name, declared[name].type, field(default=value, metadata=declared[name].metadata))
        for name, value in defaults.items()], bases=(base,), frozen=True, kw_only=True)
    made.__module__ = base.__module__
    return made


def check_phase(cls: type[Settings], overrides: Mapping[str, Any] | None,
                phase: str | None) -> None:
    """Refuse a setting the phase never reads (``predict --set max_epochs=3``)."""
    if phase not in (PREDICTION, TRAINING):
        if phase is not None:
            raise ValueError(f"unknown phase {phase!r}")
        return
    ignored = cls.only(TRAINING if phase == PREDICTION else PREDICTION)
    for key in overrides or {}:
        if key in ignored:
            what = "training; running a model does not read it" if phase == PREDICTION else \
                "running a model (predict, evaluate); training does not read it"
            raise InputError(f"--set {key}", f"is a setting of the {cls.TASK} task for {what} "
                             f"(settings here: {', '.join(sorted(cls.names(phase)))})")


def settings_from_model(cls: type[S], preprocessing: Mapping[str, Any],
                        fixed_keys: tuple[str, ...], overrides: Mapping[str, Any] | None,
                        proposed: Mapping[str, Any] | None = None) -> S:
    """Settings for running a model: the pre-processing it was trained with is fixed (an
    override that differs is refused), values it ``proposed`` (its tuned threshold, the
    registration it was trained with) are defaults the caller may change; training settings
    are refused. An override is compared with the fixed value as the settings read both
    (``--set spacing_mm=2,2,2`` is the ``[2.0, 2.0, 2.0]`` a model file records)."""
    check_phase(cls, overrides, PREDICTION)
    fixed = {k: preprocessing[k] for k in fixed_keys if k in preprocessing}
    given = {k: v for k, v in (overrides or {}).items() if k in fixed and v != fixed[k]}
    if given:
        recorded = from_overrides(cls, fixed, cls.TASK)
        asked = from_overrides(cls, {**fixed, **given}, cls.TASK)
        for key in given:
            if getattr(asked, key) != getattr(recorded, key):
                raise InputError(f"--set {key}", f"is fixed by the model ({fixed[key]})")
    return from_overrides(cls, {**(proposed or {}), **(overrides or {}), **fixed}, cls.TASK)
