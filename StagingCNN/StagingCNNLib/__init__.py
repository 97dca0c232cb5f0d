"""StagingCNN's logic, without Qt (tested headless on slicer-core)."""
