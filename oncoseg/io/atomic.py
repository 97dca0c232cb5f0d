"""Atomic, non-clobbering file output.

A reader of an output path sees either nothing or the complete file: data are written to a
temporary sibling (same directory, so the final step is a rename on one file system) and moved
into place only when the writer succeeded. Existing files are replaced only when the caller asks.

A temporary ``.part`` sibling is removed on every way out Python sees, SIGTERM included (the
signal a cluster scheduler, ``timeout`` or a closing terminal sends): while one is being
written, SIGTERM raises :class:`Terminated` in the main thread, so the ``finally`` clauses run
and the process then ends with status 143 (128 + SIGTERM), as it would have. Only SIGKILL
(nothing can catch it) can leave a ``.part`` behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from oncoseg.errors import InputError

# mkstemp makes private (0600) files; published files get the mode any new file would get
# (the umask, read once at import; reading it means setting it, which is not thread-safe)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class Terminated(SystemExit):
    """SIGTERM arrived while output was being written; raised so that clean-up runs. A
    ``SystemExit`` (exit status 143), so no ``except Exception`` swallows it."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


_writers = 0  # atomic writes under way in this process (main thread)
_previous_handler: object = None
_lock = threading.Lock()
_terminating = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _terminating
    if _terminating:  # a second SIGTERM must not interrupt the clean-up of the first
        return
    _terminating = True
    print("oncoseg: terminated (SIGTERM); removing unfinished output", file=sys.stderr)
    raise Terminated()


@contextlib.contextmanager
def _removed_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only: Python
    delivers signals there, and a worker thread's writes end with its process anyway)."""
    global _writers, _previous_handler, _terminating
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        if _writers == 0:
            _previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        _writers += 1
    try:
        yield
    finally:
        with _lock:
            _writers -= 1
            if _writers == 0:
                signal.signal(signal.SIGTERM, _previous_handler)  # type: ignore[arg-type]
                _terminating = False


def full_suffix(path: Path) -> str:
    """``.nii.gz``, ``.seg.nrrd``: writers choose a format by the whole ending."""
    name = path.name
    known = (".seg.nrrd", ".nii.gz", ".tar.gz")
    for ending in known:
        if name.lower().endswith(ending):
            return name[-len(ending):]
    return path.suffix


def refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(str(path), "already exists; choose another name or ask to overwrite it")


def refuse_nonempty_folder(folder: str | os.PathLike[str], overwrite: bool,
                           label: str = "") -> None:
    """Checked before minutes of work, not after: a non-empty output folder needs overwrite."""
    folder = Path(folder)
    if folder.exists() and not overwrite and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{label}{folder}", "exists and is not empty (add --overwrite to "
                         "replace it)")


def check_output_place(path: str | os.PathLike[str], label: str = "") -> None:
    """Refuse, before any work, an output that cannot be created where it is asked for: under
    a file (``/dev/null/out``) or in a folder this user may not write in."""
    path = Path(path).absolute()
    ancestor = next((p for p in path.parents if p.exists()), None)
    if ancestor is None or ancestor == path:
        return
    if not ancestor.is_dir():
        raise InputError(f"{label}{path}", f"cannot be created: {ancestor} is a file, not a "
                         "folder")
    if not path.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{label}{path}", f"cannot be created: this user may not write in "
                         f"{ancestor}")


def check_output_apart(output: str | os.PathLike[str],
                       inputs: Iterable[tuple[str, str | os.PathLike[str]]],
                       label: str = "") -> None:
    """Refuse an output that is, or holds, one of the ``inputs`` ((what, path) pairs): writing
    the output replaces it whole (``--overwrite``), so the input would be deleted."""
    out = Path(output).resolve()
    for what, path in inputs:
        source = Path(path).resolve()
        if source == out or out in source.parents:
            raise InputError(f"{label}{output}", f"{'is' if source == out else 'holds'} "
                             f"{what} ({path}): writing the results there would delete it; "
                             "choose another output")


def unfinished_parts(target: str | os.PathLike[str]) -> list[Path]:
    """The temporary siblings of ``target`` that a writer killed with SIGKILL left (the only
    way one survives): exactly the names :func:`atomic_path` and :func:`atomic_directory` give
    (``.<name>.`` + mkstemp's 8 random characters + ``.part`` [+ ending]), so the leftovers of
    ``a`` never include those of ``a.b``, which another process may be writing."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.part"
                         rf"(?:{re.escape(full_suffix(target))})?")
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.glob(f".{glob.escape(target.name)}.*.part*")
                  if pattern.fullmatch(p.name))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``.

    Without ``overwrite`` an existing file is never replaced, even if it appears while the data
    are being written (the final link fails instead of clobbering it).
    """
    target = Path(path)
    refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _removed_on_sigterm():
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".part{full_suffix(target)}", dir=target.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            _publish_file(tmp, target, overwrite)
        finally:
            tmp.unlink(missing_ok=True)


def _publish_file(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move a written temporary file to ``target`` (never clobbering one without overwrite)."""
    _flush_to_disk(tmp)
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_UMASK
    os.chmod(tmp, mode)
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise InputError(str(target), "appeared while writing; not overwritten") from None
    except OSError:  # file systems without hard links
        refuse_existing(target, overwrite)
        os.replace(tmp, target)


def _flush_to_disk(path: Path) -> None:
    """Data reach the disk before the rename publishes them (a crash then leaves the old file)."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder in a temporary sibling and move it into place at the end.

    A cancelled or failed run therefore leaves no half-filled output folder behind. An existing
    non-empty folder is replaced only with ``overwrite``.
    """
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise InputError(str(target), "already exists and is not empty; choose another folder "
                         "or ask to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _removed_on_sigterm():
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part",
                                    dir=target.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's folders are private (0700)
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
