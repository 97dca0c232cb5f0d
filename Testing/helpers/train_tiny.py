"""A tiny training run through oncoseg.training, for tests: plain, under torchrun, or killed.

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


def data(n: int, seed: int) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) + 0.1 * torch.randn(n, generator=generator) > 0).long()
    return torch.utils.data.TensorDataset(x, y)


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
    result = train(tiny_classifier, step, lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
                   data(64, 1), data(32, 2),
                   TrainingConfig(max_epochs=args.epochs, batch_size=args.batch, patience=50,
                                  seed=3),
                   args.output, metadata, resume=args.resume)
    if result.model_path is not None:
        print(json.dumps({"step_losses": result.step_losses, "history": result.history}))


if __name__ == "__main__":
    main()
