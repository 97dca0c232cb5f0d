"""Child processes end as a whole tree: the launcher and the interpreter it started.

The launcher stands in for PythonSlicer (helpers/launchers.py): terminating it alone leaves its
child, the real interpreter, running, which is what the Slicer panels' cancel did.
"""

import os
import subprocess
import sys
import threading
import time

import pytest
from launchers import descendants, python_launcher, running

from oncoseg.childprocess import ChildProcess, end_tree, engine_environment, start
from oncoseg.errors import Cancelled
from oncoseg.progress import CancelToken

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX launcher scripts")

# The interpreter says it started, then sleeps; with ``ignore`` it ignores SIGTERM.
SLEEPER = ("import signal, sys, time\n"
           "if 'ignore' in sys.argv: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "print('started', flush=True)\n"
           "time.sleep(120)\n")


def started_tree(child):
    """Wait for the interpreter's first line; the launcher and the interpreter then run."""
    assert next(child.lines()) == "started"
    tree = descendants()
    assert len(tree) >= 2, "the launcher's child did not start"
    return tree


def test_ending_the_tree_ends_the_launcher_and_its_interpreter(tmp_path):
    launcher = python_launcher(tmp_path)
    child = ChildProcess([str(launcher), "-c", SLEEPER])
    tree = started_tree(child)
    started = time.monotonic()
    child.end()
    assert running(tree) == []
    assert time.monotonic() - started < 3, "SIGTERM was enough; no grace period needed"


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    launcher = python_launcher(tmp_path)
    child = ChildProcess([str(launcher), "-c", SLEEPER, "ignore"])
    tree = started_tree(child)
    child.end(grace=0.5)
    assert running(tree) == []


def test_the_interpreter_is_ended_after_its_launcher_died(tmp_path):
    # a plain terminate() of the launcher (the old cancel) leaves the interpreter running...
    launcher = python_launcher(tmp_path)
    process = start([str(launcher), "-c", SLEEPER])
    assert process.stdout.readline().strip() == "started"
    tree = descendants()
    process.terminate()
    process.wait(10)
    time.sleep(0.2)
    orphans = running(tree)
    assert orphans, "the interpreter went with its launcher: this launcher is no stand-in"
    # ... and ending the tree still reaches it through the process group
    end_tree(process, grace=2)
    assert running(orphans) == []


def test_lines_stream_and_cancel_ends_the_tree(tmp_path):
    launcher = python_launcher(tmp_path)
    script = ("import time\n"
              "for i in range(3): print(f'line {i}', flush=True)\n"
              "time.sleep(120)\n")
    child = ChildProcess([str(launcher), "-c", script])
    cancel = CancelToken()
    seen = []
    tree = []
    with pytest.raises(Cancelled):
        for line in child.lines(cancel, poll_seconds=0.05):
            seen.append(line)
            if len(seen) == 3:
                tree = descendants()
                threading.Timer(0.2, cancel.cancel).start()  # while the child waits
    assert seen == ["line 0", "line 1", "line 2"]
    assert len(tree) >= 2 and running(tree) == []


def test_lines_end_with_the_child_and_keep_undecodable_output(tmp_path):
    child = ChildProcess([sys.executable, "-c",
                          "import sys; sys.stdout.buffer.write(b'caf\\xe9\\nok\\n'); "
                          "sys.stderr.write('on stderr\\n'); sys.exit(3)"])
    assert list(child.lines()) == ["caf\ufffd", "ok", "on stderr"]
    assert child.returncode == 3


def test_child_environment_drops_names_and_finds_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("ITK_AUTO_LOAD", "/slicer/lib/ITK/ITKFactories")
    monkeypatch.setenv("ONCOSEG_KEPT", "yes")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = engine_environment(remove=("ITK_AUTO_LOAD",))
    assert "ITK_AUTO_LOAD" not in env and env["ONCOSEG_KEPT"] == "yes"
    # a bare interpreter started elsewhere imports this checkout's engine
    probe = ("import os, oncoseg; print(os.environ.get('ITK_AUTO_LOAD')); "
             "print(os.path.dirname(os.path.dirname(oncoseg.__file__)))")
    out = subprocess.run([sys.executable, "-S", "-c", probe], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    import oncoseg

    assert out == ["None", os.path.dirname(os.path.dirname(oncoseg.__file__))]
