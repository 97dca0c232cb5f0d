"""RectalSeg's MRML-level logic (no Qt): run on nodes, pick candidates, compare, train."""
