"""Stand-ins for PythonSlicer and for Slicer's ITK plugins, to test child processes.

PythonSlicer is a launcher (CTK AppLauncher): it sets environment variables from its settings
files, ITK_AUTOLOAD_PATH among them, and starts the real interpreter (python-real) as its
child. :func:`python_launcher` writes a script that does the same with this interpreter.
:func:`itk_plugin_folder` builds a shared library that, once loaded, appends a line to a
marker file: a folder holding it, named by ITK_AUTOLOAD_PATH, shows whether ITK in a process
loaded the plugins found there (``import SimpleITK`` alone does). It has no ``itkLoad``
function, so ITK, having opened it, passes over it; a plugin built against another ITK (Slicer's)
has one, and calling it is what crashes (Slicer issue #8947).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil

_PLUGIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void loaded(void) {
    const char *marker = getenv("ONCOSEG_TEST_ITK_PLUGIN_MARKER");
    FILE *f = marker ? fopen(marker, "a") : 0;
    if (f) { fputs("loaded\n", f); fclose(f); }
}
"""


def python_launcher(folder: Path, env: Mapping[str, str] | None = None) -> Path:
    """An executable that sets ``env`` and runs this interpreter with its arguments as a
    child process, waiting for it and returning its exit code (as PythonSlicer does)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "PythonLauncher"
    path.write_text(f"#!{sys.executable}\n"
                    "import os, subprocess, sys\n"
                    f"os.environ.update({dict(env or {})!r})\n"
                    f"sys.exit(subprocess.call([{sys.executable!r}, *sys.argv[1:]]))\n",
                    encoding="utf-8")
    path.chmod(0o755)
    return path


def itk_plugin_folder(folder: Path) -> Path | None:
    """A folder with one "ITK plugin" (see the module's docstring); None without a compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None or sys.platform == "win32":
        return None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.c").write_text(_PLUGIN_C, encoding="utf-8")
    plugins = folder / "plugins"
    plugins.mkdir(exist_ok=True)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(plugins / "libOncoSegProbe.so"),
                    str(folder / "plugin.c")], check=True)
    return plugins


def running(pids: Iterable[int]) -> list[int]:
    """The processes among ``pids`` that still run (an exited one that nobody has reaped yet,
    a zombie, has ended)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def descendants() -> list[int]:
    """This process's children and theirs."""
    return [child.pid for child in psutil.Process(os.getpid()).children(recursive=True)]
