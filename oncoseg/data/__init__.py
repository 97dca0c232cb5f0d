"""Files that ship with the engine: synonym tables, sample-data descriptions, demo models."""
