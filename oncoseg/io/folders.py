"""Walking a folder tree of scans as people lay them out.

A study folder whose series are links to where the data lies (a DataLad or BIDS-style tree, a
mounted archive linked into a project) was listed as holding nothing: ``os.walk`` does not
enter linked folders. The walk here does, down to a bounded depth and never into one real
folder twice (a link back up the tree, or two links to one series), and leaves out hidden
entries (``.git``, ``.DS_Store``). A server that must not read outside its data root (the
review app) confines the links followed to it for the time it lists or opens a case
(:func:`links_within`): linked folders and linked files alike.
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
    """Inside this block, :func:`walk` enters a linked folder, and lists a linked file, only
    where its real place lies under ``root`` (:func:`may_follow`)."""
    token = _LINKS_WITHIN.set(os.path.realpath(root))
    try:
        yield
    finally:
        _LINKS_WITHIN.reset(token)


def may_follow(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` may be read under the current :func:`links_within` (always outside
    one): its real place, links resolved, lies under the root."""
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
        if real in seen or not may_follow(current):
            folders[:] = []
            continue
        seen.add(real)
        level = len(Path(current).relative_to(top).parts)
        folders[:] = sorted(f for f in folders if not f.startswith(".")) if level < depth else []
        yield Path(current), folders, sorted(
            n for n in names if not n.startswith(".") and _followed_file(current, n))


def _followed_file(folder: str, name: str) -> bool:
    """A file of a folder the walk entered (so under the root) is outside it only through a
    link of its own."""
    path = os.path.join(folder, name)
    return not os.path.islink(path) or may_follow(path)
