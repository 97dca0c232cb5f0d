"""Task settings as frozen dataclasses, changed by ``--set KEY=VALUE`` or a Slicer panel.

Each task keeps its settings in one dataclass whose defaults are its paper's; this module turns
overrides into a checked instance, with errors that name the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

from oncoseg.errors import InputError

T = TypeVar("T")


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
    return cls(**values)


def as_dict(settings: Any) -> dict[str, Any]:
    return asdict(settings)


def settings_from_model(cls: type[T], task: str, preprocessing: Mapping[str, Any],
                        fixed_keys: tuple[str, ...], overrides: Mapping[str, Any] | None,
                        proposed: Mapping[str, Any] | None = None) -> T:
    """Settings for running a model: the pre-processing it was trained with is fixed (an
    override that differs is refused), values it ``proposed`` (its tuned threshold) are
    defaults the caller may change."""
    fixed = {k: preprocessing[k] for k in fixed_keys if k in preprocessing}
    for key in fixed:
        if overrides and key in overrides and overrides[key] != fixed[key]:
            raise InputError(f"--set {key}", f"is fixed by the model ({fixed[key]})")
    return from_overrides(cls, {**(proposed or {}), **(overrides or {}), **fixed}, task)
