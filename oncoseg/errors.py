"""The two kinds of failure the front ends tell apart.

The CLI maps :class:`InputError` to exit code 2 and everything else to 1; the Slicer panels show
an :class:`InputError` as a plain message rather than a traceback, because it is the user's
input, not the program, that has to change.
"""

from __future__ import annotations


class OncoSegError(Exception):
    """A failure OncoSeg understood and can explain."""


class InputError(OncoSegError, ValueError):
    """Bad input: the message names the input and what is wrong with it."""

    def __init__(self, what: str, problem: str):
        self.what = what
        self.problem = problem
        super().__init__(f"{what}: {problem}")


class Cancelled(OncoSegError):
    """The user cancelled a long operation; nothing it would have produced was kept."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
