"""Walking a folder tree of scans as people lay them out.

A study folder whose series are links to where the data lies (a DataLad or BIDS-style tree, a
mounted archive linked into a project) was listed as holding nothing: ``os.walk`` does not
enter linked folders. The walk here does, down to a bounded depth and never into one real
folder twice (a link back up the tree, or two links to one series), and leaves out hidden
entries (``.git``, ``.DS_Store``). A server that must not read outside its data root (the
review app) confines the links followed to it for the time it lists or opens a case
(:func:`links_within`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path

_LINKS_WITHIN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "oncoseg_links_within", default=None)


@contextlib.contextmanager
def links_within(root: str | os.PathLike[str]) -> Iterator[None]:
    """Inside this block, :func:`walk` enters a linked folder only where its real place lies
    under ``root``."""
    token = _LINKS_WITHIN.set(os.path.realpath(root))
    try:
        yield
    finally:
        _LINKS_WITHIN.reset(token)


def _allowed(path: str) -> bool:
    root = _LINKS_WITHIN.get()
    if root is None:
        return True
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def walk(folder: str | os.PathLike[str], depth: int
         ) -> Iterator[tuple[Path, list[str], list[str]]]:
    """(folder, its sub-folder names, its file names) for ``folder`` and the folders down to
    ``depth`` levels below it, linked ones included, each real folder once, names sorted. The
    caller may empty the sub-folder list to keep the walk out of them."""
    top = Path(folder)
    seen: set[str] = set()
    for current, folders, names in os.walk(top, followlinks=True):
        real = os.path.realpath(current)
        if real in seen or not _allowed(current):
            folders[:] = []
            continue
        seen.add(real)
        level = len(Path(current).relative_to(top).parts)
        folders[:] = sorted(f for f in folders if not f.startswith(".")) if level < depth else []
        yield Path(current), folders, sorted(n for n in names if not n.startswith("."))
