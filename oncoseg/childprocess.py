"""Child processes a user can stop: each in its own process group, read line by line, and
ended as a whole tree.

Why a tree: inside 3D Slicer the interpreter for a child is ``PythonSlicer``, a launcher that
sets up the environment and starts the real interpreter (``python-real``) as *its* child.
Terminating the launcher alone leaves the interpreter running (SlicerMONAIAuto3DSeg kills the
launcher's descendants for that reason). So a child is started as the leader of a new session
(POSIX) or process group (Windows), and stopping it signals the whole group: SIGTERM first, so
the processes may clean up, SIGKILL to whatever is still alive after a grace period.

Two levels of use: :func:`start` and :func:`end_tree` for a caller that reads the output itself
(the Slicer training panel), and :class:`ChildProcess` for one that wants the output as lines,
with a :class:`~oncoseg.progress.CancelToken` honoured while it waits (elastix in a child).
Standard library only: Slicer's Python has no psutil.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from oncoseg.errors import Cancelled
from oncoseg.progress import CancelToken

GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL
POLL_SECONDS = 0.1  # how often a wait for output looks at the cancel token
_WINDOWS = sys.platform == "win32"


# Set by Slicer's launchers to Slicer's own ITK IO plugins; ITK reads ITK_AUTOLOAD_PATH, Slicer
# issue #8947 calls it ITK_AUTO_LOAD. A child that imports SimpleITK or itk drops both.
SLICER_ITK_VARIABLES = ("ITK_AUTOLOAD_PATH", "ITK_AUTO_LOAD")


def forget_slicer_itk() -> None:
    """Drop Slicer's ITK plugin variables from this process's environment: the first thing a
    child does, before anything imports ITK. A child's environment without them is not enough
    inside Slicer: PythonSlicer is a launcher that sets them again (SlicerLauncherSettings.ini)
    before it starts the real interpreter, and ``import SimpleITK`` alone loads the plugins."""
    for name in SLICER_ITK_VARIABLES:
        os.environ.pop(name, None)


def engine_environment(remove: Iterable[str] = (), base: Mapping[str, str] | None = None,
                       folders: Iterable[str | os.PathLike[str]] | None = None
                       ) -> dict[str, str]:
    """A copy of ``base`` (default: this process's environment) without the names in
    ``remove``, in which a child Python imports this ``oncoseg``: ``folders`` (default: the
    folder holding it) are prepended to ``PYTHONPATH``, since Slicer puts module folders on
    ``sys.path`` only, except those already there and those that are this interpreter's
    site-packages, which the child finds anyway and which on ``PYTHONPATH`` would come before
    the standard library."""
    env = dict(os.environ if base is None else base)
    for name in remove:
        env.pop(name, None)
    if folders is None:
        folders = [Path(__file__).resolve().parent.parent]
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    site_folders = _site_packages()
    added = [str(f) for f in folders
             if str(f) not in existing and os.path.realpath(f) not in site_folders]
    if added:
        env["PYTHONPATH"] = os.pathsep.join(added + existing)
    return env


def _site_packages() -> set[str]:
    import site
    import sysconfig

    folders = [*site.getsitepackages(), site.getusersitepackages(),
               sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return {os.path.realpath(folder) for folder in folders}


def start(command: Sequence[str], env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[str]:
    """``command`` as the leader of its own process group, stdout and stderr merged into one
    text pipe (UTF-8, undecodable bytes replaced), stdin closed."""
    group: dict[str, object] = (
        {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        if _WINDOWS else {"start_new_session": True})
    return subprocess.Popen(
        list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", bufsize=1,
        env=None if env is None else dict(env), cwd=cwd, **group)  # type: ignore[call-overload]


def end_tree(process: subprocess.Popen[str], grace: float = GRACE_SECONDS) -> None:
    """End ``process`` and every process of its group (its children and theirs), even when
    ``process`` itself has already exited: SIGTERM, then SIGKILL after ``grace`` seconds.
    Returns once none of them runs any more (or, on Windows, once taskkill has returned)."""
    if _WINDOWS:
        _end_tree_windows(process, grace)
        return
    group = process.pid  # the session leader's pid is its group's id
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(group, process) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _group_alive(group, process):
        _signal_group(group, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while _group_alive(group, process) and time.monotonic() < deadline:
            time.sleep(0.02)
    process.poll()  # reap the leader


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nobody left in the group
        os.killpg(group, signum)


def _group_alive(group: int, process: subprocess.Popen[str]) -> bool:
    """Whether a process of the group still runs. The leader is reaped here; an orphaned
    grandchild that exited may stay a zombie until its new parent reaps it (in a container
    without an init, never), so on Linux zombies count as ended."""
    process.poll()
    proc = Path("/proc")
    if sys.platform.startswith("linux") and proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
            state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
            if int(pgrp) == group and state not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _end_tree_windows(process: subprocess.Popen[str], grace: float) -> None:
    # CTRL_BREAK_EVENT reaches every console process of the new group (the launcher and the
    # interpreter it started); taskkill /T then ends what is left, children included.
    try:
        process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        process.wait(grace)
    except (OSError, subprocess.TimeoutExpired):
        pass
    subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()


_RUNNING: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


@atexit.register
def _end_running_children() -> None:
    """A child still running when this interpreter exits (Slicer closed during a run) would
    otherwise go on alone: it is in its own session, so no terminal hang-up reaches it."""
    for child in list(_RUNNING):
        child.end(grace=1.0)


class ChildProcess:
    """A started child whose output is read as lines by a background thread.

    ``lines(cancel)`` yields them as they come and ends the whole tree when ``cancel`` is set;
    ``end()`` ends it from anywhere. A child still running at interpreter exit is ended too.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None):
        self.command = list(command)
        self.process = start(self.command, env, cwd)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"oncoseg-child-{self.process.pid}")
        self._reader.start()
        _RUNNING.add(self)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def lines(self, cancel: CancelToken | None = None,
              poll_seconds: float = POLL_SECONDS) -> Iterator[str]:
        """Every output line until the child closes its output, then waits for it to exit.
        ``cancel`` is looked at between lines and every ``poll_seconds`` while none comes:
        once set, the whole tree is ended and :class:`Cancelled` raised."""
        while True:
            if cancel is not None and cancel.cancelled:
                self.end()
                raise Cancelled()
            try:
                line = self._lines.get(timeout=poll_seconds)
            except queue.Empty:
                continue
            if line is None:
                break
            yield line
        self.process.wait()
        _RUNNING.discard(self)

    def lines_so_far(self) -> list[str]:
        """Every line printed since the last call; never blocks (a Qt timer's poll)."""
        taken = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return taken
            if line is None:
                _RUNNING.discard(self)
            else:
                taken.append(line)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once the child has exited and all its output is read."""
        code = self.process.wait(timeout)
        self._reader.join(timeout=5)
        _RUNNING.discard(self)
        return code

    def end(self, grace: float = GRACE_SECONDS) -> None:
        """End the child and its descendants (see :func:`end_tree`)."""
        end_tree(self.process, grace)
        _RUNNING.discard(self)
