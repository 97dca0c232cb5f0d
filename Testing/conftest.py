"""Shared test set-up: module folders importable as in Slicer, a headless MRML context, and
opt-in slow runs (``--run-slow``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oncoseg.frontends import add_module_folders

ROOT = Path(__file__).resolve().parents[1]
# Slicer puts each module folder on the path; the tests share small builders in helpers/.
add_module_folders()
if str(ROOT / "Testing/helpers") not in sys.path:
    sys.path.insert(0, str(ROOT / "Testing/helpers"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run slow tests and benchmarks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow or benchmark: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords or "benchmark" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mrml():
    """A real MRML scene with the application, colour, volumes and segmentations logics."""
    from OncoSegCommonLib.context import MRMLContext

    return MRMLContext.headless()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy method of the tests (helpers/toymethod.py) registered for one test module, two
    phantom cases and a model trained on them: (task, first case's image, model file)."""
    import toymethod

    from oncoseg import verbs
    from oncoseg.tasks import unregister_task

    task = toymethod.register()
    folder = tmp_path_factory.mktemp("toy")
    cases = verbs.phantom(task.name, folder / "data", cases=2)
    model = verbs.train(task.name, folder / "data", folder / "run")
    yield task, cases[0] / "image.nii.gz", model
    unregister_task(task.name)
