"""OncoSeg's terminology context file, generated from the task declarations.

    python -m oncoseg.terminology_context > OncoSegCommon/Resources/Terminology/OncoSeg.term.json

Slicer loads that file at startup so that Segment Editor's terminology selector offers the
segments OncoSeg produces. The generator reads every task, so it sits above the task registry;
the vocabulary it writes (:mod:`oncoseg.terminology`) sits below it, because the task
declarations are written in that vocabulary.
"""

from __future__ import annotations

import json
from typing import Any

from oncoseg.tasks import all_tasks
from oncoseg.terminology import context_document


def oncoseg_context() -> dict[str, Any]:
    """The context of every segment OncoSeg's own tasks produce (not tasks a caller
    registered at run time)."""
    return context_document((s.name, s.terminology, s.color) for task in all_tasks()
                            if task.method_module.startswith("oncoseg.")
                            for s in task.segments if s.terminology is not None)


if __name__ == "__main__":
    print(json.dumps(oncoseg_context(), indent=2))
