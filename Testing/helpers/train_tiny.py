"""A tiny training run through oncoseg.training on rectal phantom patches, for tests: plain,
under torchrun, or killed.

    python train_tiny.py --output DIR [--resume] [--epochs N] [--batch B] [--sleep S]
    torchrun --standalone --nproc_per_node 2 train_tiny.py --output DIR
Prints the step losses and history as JSON (rank 0).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tinynet import tiny_classifier

from oncoseg.modelfile import ModelMetadata
from oncoseg.training import TrainingConfig, train


def phantom_patches(n: int, seed: int) -> torch.utils.data.TensorDataset:
    """8 x 8 in-plane patches of a rectal phantom's b1000 image, half centred on tumour
    voxels (label 1), half on other voxels of the body (label 0)."""
    import tempfile

    import numpy as np
    import SimpleITK as sitk

    from oncoseg.phantoms.rectal import generate_case

    with tempfile.TemporaryDirectory() as tmp:
        generate_case(Path(tmp) / "case", seed=0, case=seed)
        b1000 = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(tmp) / "case" / "dwi_b1000.nii.gz")))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(tmp) / "case" / "label.nii.gz")))
    rng = np.random.default_rng(seed)
    image = (b1000 - b1000.mean()) / b1000.std()
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))
    patches, labels = [], []
    for value in (1, 0):
        where = np.argwhere((label == value) & (b1000 > 50))
        for k, j, i in where[rng.choice(len(where), n // 2, replace=False)]:
            patches.append(padded[k, j:j + 8, i:i + 8])
            labels.append(value)
    x = torch.tensor(np.array(patches), dtype=torch.float32)[:, None]
    return torch.utils.data.TensorDataset(x, torch.tensor(labels))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    def step(model, batch, device):
        if args.sleep:
            time.sleep(args.sleep)
        x, y = (t.to(device) for t in batch)
        return torch.nn.functional.cross_entropy(model(x), y), len(y)

    metadata = ModelMetadata(task="test-threshold", architecture="test-tiny-classifier",
                             architecture_args={"channels": 1, "classes": 2}, inputs=["image"],
                             preprocessing={}, outputs={"classes": ["low", "high"]}, demo=True)
    result = train(make_model=tiny_classifier, step=step,
                   make_optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
                   train_data=phantom_patches(64, 1), val_data=phantom_patches(32, 2),
                   config=TrainingConfig(max_epochs=args.epochs, batch_size=args.batch,
                                         patience=50, seed=3),
                   output=args.output, metadata=metadata, resume=args.resume)
    if result.model_path is not None:
        print(json.dumps({"step_losses": result.step_losses, "history": result.history}))


if __name__ == "__main__":
    main()
