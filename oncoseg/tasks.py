"""The task registry: what each method consumes and produces, and where its code lives.

A :class:`Task` is the unit both front ends drive. Its declaration is light (no torch import),
so listing tasks is instant; the heavy pipeline module is imported only when a verb runs.
Built-in tasks are declared in ``oncoseg/<family>/task.py``; other packages can add tasks through
the ``oncoseg.tasks`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from oncoseg.errors import InputError
from oncoseg.settings import PREDICTION, TRAINING
from oncoseg.terminology import Terminology

# Modules that declare the built-in tasks (each calls register_task on import).
BUILTIN_TASK_MODULES: tuple[str, ...] = (
    "oncoseg.rectal.task",
    "oncoseg.staging.task",
    "oncoseg.brain.task",
    "oncoseg.oar.ct.task",
    "oncoseg.oar.mr.task",
)


@dataclass(frozen=True)
class InputRole:
    """One named input: ``t2w``, ``dwi_b0``, ``ct`` ..."""

    name: str
    description: str
    optional: bool = False
    # Lower-case fragments of node or file names that suggest this role (Slicer auto-fill).
    name_hints: tuple[str, ...] = ()
    # "CT" or "MR": what a cohort's quality control expects the intensities to look like
    modality: str = ""


@dataclass(frozen=True)
class Plausible:
    """What a segment looks like on a real adult scan, for a cohort's quality control: a result
    outside these bounds is flagged for a reader, never changed. Bounds are deliberately wide
    (clinical variation, partial fields of view); they catch failures, not anatomy."""

    volume_ml: tuple[float, float] = (0.0, float("inf"))
    max_components: int | None = None  # after the method's own post-processing
    may_touch_border: bool = False  # organs that often extend beyond the field of view
    min_mean_probability: float = 0.6  # the segment's own mean probability over its voxels

    def describe(self) -> dict[str, Any]:
        """JSON-ready (no infinite upper bound: None)."""
        low, high = self.volume_ml
        return {"volume_ml": [low, None if high == float("inf") else high],
                "max_components": self.max_components,
                "may_touch_border": self.may_touch_border,
                "min_mean_probability": self.min_mean_probability}


@dataclass(frozen=True)
class SegmentSpec:
    """One output segment: its label value in the label map, name, colour and meaning."""

    label: int
    name: str
    color: tuple[float, float, float]
    terminology: Terminology | None = None
    plausible: Plausible = Plausible()
    # the AAPM TG-263 primary name, where TG-263 defines the structure: what radiotherapy
    # systems expect as an RT structure's name (oncoseg.structure_names)
    tg263: str = ""
    # other names data sets give the structure (BraTS's 'ED', the Decathlon's 'edema'), by
    # which a label file that names its labels is read (oncoseg.structure_names)
    synonyms: tuple[str, ...] = ()
    # other values data sets store the structure as, by which a label map without ``label``
    # itself is read (BraTS 2017-2021's enhancing tumour, 4: oncoseg.export.load_segmentation)
    stored_as: tuple[int, ...] = ()


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    paper: str
    description: str
    inputs: tuple[InputRole, ...]
    reference_role: str  # the grid outputs are computed on
    method_module: str  # the module implementing oncoseg.method.Method (the four verbs)
    segments: tuple[SegmentSpec, ...] = ()
    network_modules: tuple[str, ...] = ()  # modules that register the task's architectures
    classes: tuple[str, ...] = ()
    default_config: Mapping[str, Any] = field(default_factory=dict)
    # the task's settings class (oncoseg.settings.Settings); its defaults are default_config
    settings: type | None = None
    # what a model file decides: settings it was trained with and that a run may not change
    # (read from its pre-processing), and values it proposes that a caller may change (read
    # from its outputs or pre-processing: a tuned threshold, the registration it saw)
    fixed_settings: tuple[str, ...] = ()
    proposed_settings: tuple[str, ...] = ()
    # what a user may point at that this method reads (names of oncoseg.method.Hints fields)
    hints: tuple[str, ...] = ()
    # inputs that stand in for several roles: name -> the roles it provides (rectal: one DWI
    # series with every b-value instead of dwi_b0 + dwi_b1000)
    alternatives: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # quality control: roles registered onto the reference (their alignment is checked), and
    # for a classification how close to its threshold a probability is called uncertain
    registered_roles: tuple[str, ...] = ()
    uncertain_margin: float = 0.0
    # click refinement: the oncoseg.refine.RefineSettings fields this task's model needs set
    # otherwise than the defaults (their logits are the model's own: how sure it is and how its
    # errors lie differ between methods; read by refine_settings)
    refine: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.settings is not None and not self.default_config:
            object.__setattr__(self, "default_config", self.settings().as_dict())
        roles = [r.name for r in self.inputs]
        if len(set(roles)) != len(roles):
            raise ValueError(f"task {self.name}: duplicate input roles {roles}")
        if self.reference_role not in roles:
            raise ValueError(f"task {self.name}: reference role {self.reference_role!r} is not "
                             "an input")
        if bool(self.segments) == bool(self.classes):
            raise ValueError(f"task {self.name}: declare either segments or classes")

    @property
    def kind(self) -> str:
        return "segmentation" if self.segments else "classification"

    @property
    def required_roles(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.inputs if not r.optional)

    def role(self, name: str) -> InputRole:
        for role in self.inputs:
            if role.name == name:
                return role
        raise InputError(f"--input {name}", f"is not an input of task '{self.name}' (its inputs: "
                         f"{', '.join(r.name for r in self.inputs)})")

    def refine_settings(self) -> Any:
        """The click refinement's settings for this task's results
        (``oncoseg.refine.RefineSettings``; imported here, not at start-up)."""
        from oncoseg.refine import RefineSettings

        return RefineSettings(**self.refine)

    def covered_by(self, given: Iterable[str]) -> set[str]:
        """The roles the alternatives among ``given`` stand in for (rectal: ``dwi`` gives
        ``dwi_b0`` and ``dwi_b1000``)."""
        given = set(given)
        return {role for alternative, roles in self.alternatives.items() if alternative in given
                for role in roles}

    def check_images(self, images: Mapping[str, Any]) -> None:
        """Every required role given (or an alternative that stands in for it), no role the
        task does not know, and at least one image when every role is optional."""
        names = [r.name for r in self.inputs]
        extra = sorted(set(images) - set(names) - set(self.alternatives))
        if extra:
            raise InputError(extra[0], f"is not an input of the {self.name} task (its inputs: "
                             f"{', '.join(names + list(self.alternatives))})")
        covered = self.covered_by(images)
        for role in self.required_roles:
            if role not in images and role not in covered:
                raise InputError(role, f"is missing: the {self.name} task needs "
                                 f"{', '.join(self.required_roles)}")
        if not self.required_roles and all(images.get(n) is None for n in names):
            raise InputError("inputs", f"none given: the {self.name} task needs at least one "
                             f"of {', '.join(names)}")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (``oncoseg tasks --json``, the Slicer panels)."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "paper": self.paper,
            "description": self.description,
            "reference_role": self.reference_role,
            "inputs": [{"role": r.name, "description": r.description, "optional": r.optional,
                        "modality": r.modality} for r in self.inputs],
            "segments": [{"label": s.label, "name": s.name, "color": list(s.color),
                          "terminology": s.terminology.to_slicer() if s.terminology else None,
                          "plausible": s.plausible.describe()}
                         for s in self.segments],
            "classes": list(self.classes),
            "default_config": dict(self.default_config),
            "settings_by_phase": {
                "training_only": sorted(self.settings.only(TRAINING) if self.settings
                                        else ()),
                "prediction_only": sorted(self.settings.only(PREDICTION) if self.settings
                                          else ()),
                "fixed_by_model": list(self.fixed_settings),
                "proposed_by_model": list(self.proposed_settings)},
        }


_TASKS: dict[str, Task] = {}
_loaded = False


def register_task(task: Task, replace: bool = False) -> Task:
    if task.name in _TASKS and not replace and _TASKS[task.name] != task:
        raise ValueError(f"task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    _TASKS.pop(name, None)


def import_task_modules() -> None:
    """Import built-in declarations and installed plug-ins, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_TASK_MODULES:
        importlib.import_module(module)
    for entry in entry_points(group="oncoseg.tasks"):
        entry.load()


def import_network_modules(task: str | None = None) -> tuple[str, ...]:
    """Register the network architectures of ``task`` (of every task when None) and return
    the modules that declare them. A model file names its architecture and its task; loading
    it imports that task's networks only, not the torch code of every other method."""
    tasks = all_tasks() if task is None else [get_task(task)]
    modules = tuple(module for t in tasks for module in t.network_modules)
    for module in modules:
        importlib.import_module(module)
    return modules


def all_tasks() -> list[Task]:
    import_task_modules()
    return [_TASKS[name] for name in sorted(_TASKS)]


def get_task(name: str | Task) -> Task:
    """The task registered under ``name`` (a Task passes through, so callers take either)."""
    if isinstance(name, Task):
        return name
    import_task_modules()
    if name not in _TASKS:
        known = ", ".join(sorted(_TASKS)) or "none installed"
        raise InputError(f"task '{name}'", f"is unknown (tasks: {known})")
    return _TASKS[name]
