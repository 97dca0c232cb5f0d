"""BrainTumor2D3D's MRML-level logic (no Qt): tested headless on slicer-core."""
