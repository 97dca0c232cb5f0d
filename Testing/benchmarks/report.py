"""How every benchmark reports its result, in one place: with ``--json`` one JSON line (the last
line of its output, which Testing/benchmarks/test_benchmarks_run.py and the tables of
docs/RESULTS.md read), otherwise lines for a person, OncoSeg beside its peer with the ratio.

Imported by the ``bench_*.py`` scripts as a sibling module (a script's folder is first on
``sys.path``), as they already import each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any


def dims(size: Sequence[int]) -> str:
    """A volume's or window's size as the reports write it: ``155 x 240 x 240``."""
    return " x ".join(map(str, size))


def versus(what: str, ours: float, peer: str, theirs: float, ratio: float) -> str:
    """One line of OncoSeg's time beside a peer's on the same work, and their ratio."""
    return f"  {what} {ours:.2f} s vs {peer} {theirs:.2f} s: ratio {ratio}"


def report(result: Any, as_json: bool, lines: Iterable[str]) -> None:
    """Print a benchmark's ``result`` as one JSON line when ``as_json``, else its ``lines``."""
    if as_json:
        print(json.dumps(result))
        return
    for line in lines:
        print(line)
