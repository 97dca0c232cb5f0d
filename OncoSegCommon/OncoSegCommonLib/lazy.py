"""Slicer's name for a module's logic, bound to the module's Lib logic without importing it when
Slicer loads the module file."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attribute(module: str, name: str, source: str,
                   source_name: str | None = None) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that gives ``name`` as ``source.source_name``,
    imported on first access: the Lib logic imports the engine (torch), which Slicer may not
    have installed yet when it loads the module file at start-up."""

    def attribute_of_module(attribute: str) -> Any:
        if attribute == name:
            return getattr(importlib.import_module(source), source_name or name)
        raise AttributeError(f"module {module!r} has no attribute {attribute!r}")

    return attribute_of_module
