"""Record in a phantom-trained model file the geometry of the cases it was trained on.

Models trained since OncoSeg records it carry ``provenance.dataset.geometry`` (the reference
images' spacing and field-of-view ranges, which a cohort's quality control compares each case
with); the demo models were trained before. Their training data are phantoms drawn from known
seeds (docs/DEMO_MODELS.md), so they are drawn again here and the ranges of the cases the model
file lists as its training and validation cases are written into a copy of the file, the
tensors unchanged.

    python scripts/record_training_geometry.py rectal oncoseg/data/models/rectal-demo.safetensors \\
        --cases 40 --seed 0 --overwrite
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from oncoseg import verbs
from oncoseg.datasets import read_dataset
from oncoseg.datasets.base import Dataset
from oncoseg.modelfile import ModelMetadata, rewritten
from oncoseg.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("model", type=Path)
    parser.add_argument("--cases", type=int, required=True, help="as the demo was drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="default: the model file itself")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    task = get_task(args.task)

    def record(metadata: ModelMetadata, _tensors: dict) -> None:
        seen = metadata.provenance.get("dataset", {})
        ids = set(seen.get("train", [])) | set(seen.get("validation", []))
        with tempfile.TemporaryDirectory() as folder:
            verbs.phantom(task.name, Path(folder) / "data", cases=args.cases, seed=args.seed)
            data = read_dataset(Path(folder) / "data", roles=[r.name for r in task.inputs],
                                partial=True, check=False)
            cases = [c for c in data.cases if not ids or c.id in ids]
            if ids and len(cases) != len(ids):
                raise SystemExit(f"the phantoms drawn hold {len(cases)} of the model's "
                                 f"{len(ids)} cases: not the data it was trained on")
            geometry = Dataset(data.root, data.layout, cases).provenance(
                task.reference_role)["geometry"]
        metadata.provenance = {**metadata.provenance, "dataset": {
            **seen, "geometry": geometry, "geometry_recorded_later": "phantoms drawn again "
            f"(seed {args.seed}, {args.cases} cases) by scripts/record_training_geometry.py"}}
        print(f"{args.model.name}: {len(cases)} cases, {geometry}")

    rewritten(args.model, args.output or args.model, record,
              overwrite=args.overwrite or args.output is None)


if __name__ == "__main__":
    main()
