"""Keeping the scene clean: whatever a step adds on its way is removed again.

Slicer's own calls add helper nodes as a side effect (a labelmap export adds a colour table, a
volume gets display and storage nodes); :func:`temporary_nodes` removes every node added inside
its block, however it was added, so only the nodes a caller returns on purpose stay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def node_ids(scene: Any) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def remove_nodes_added_since(scene: Any, before: set[str], keep: set[str] = frozenset()) -> None:
    for node_id in reversed(node_ids(scene)):
        if node_id not in before and node_id not in keep:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


@contextlib.contextmanager
def temporary_nodes(scene: Any) -> Iterator[None]:
    """Remove, on leaving (normally or by an exception), every node added inside the block."""
    before = set(node_ids(scene))
    try:
        yield
    finally:
        remove_nodes_added_since(scene, before)
