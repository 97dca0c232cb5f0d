"""The "OncoSeg refine" Segment Editor effect (Slicer finds its class here: the folder is the
module, ``SegmentEditorEffect`` the class; see SegmentEditorEffect.py)."""

from .SegmentEditorEffect import SegmentEditorEffect, register_effect

__all__ = ["SegmentEditorEffect", "register_effect"]
