"""Deterministic synthetic cases for every task: tests, the demo, the demo models, sample data.

Anatomy is drawn as soft-edged shapes in physical (LPS, mm) space and sampled on each
sequence's own grid, so sequences of one case differ in resolution, field of view and, where a
task needs it, by a known deformation. Intensities follow each modality's behaviour; bias field
and noise make them imperfect, and no single intensity separates the target from everything
else.
"""
