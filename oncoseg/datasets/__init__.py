"""Data sets as their sources publish them: each reader returns cases with named roles and
labels, checked before any training starts."""

from oncoseg.datasets.base import Case, Dataset, check_case_id
from oncoseg.datasets.layouts import LAYOUTS, detect_layout, read_dataset

__all__ = ["LAYOUTS", "Case", "Dataset", "check_case_id", "detect_layout", "read_dataset"]
