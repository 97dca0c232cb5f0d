"""The model selector's contents: bundled demo models, models trained here, files picked.

Models trained from a module's training panel land in the user's OncoSeg models folder
(``$ONCOSEG_HOME/models/<task>/``, by default ``~/.oncoseg/models/<task>/``), one folder per
run, so they appear in the selector of every later session. Only headers are read to list
them: no weights are loaded, no code runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from oncoseg.errors import InputError
from oncoseg.modelfile import ModelFileHeader, read_header


@dataclass(frozen=True)
class ModelChoice:
    label: str  # what the selector shows
    path: Path
    header: ModelFileHeader

    def summary(self) -> str:
        """What the panel shows under the selector."""
        meta = self.header.metadata
        training = meta.provenance.get("training", {})
        lines = [meta.description or meta.architecture,
                 f"{self.header.parameter_count:,} parameters; inputs {', '.join(meta.inputs)}"]
        if training:
            lines.append(f"trained {training.get('epochs_run')} epochs, best validation loss "
                         f"{training.get('validation_loss')}")
        lines.append(f"licence: {meta.license or 'not stated'}; training data: "
                     f"{meta.training_data_license or 'licence not stated'}")
        if meta.demo:
            lines.append("DEMO MODEL trained on synthetic phantoms: not for clinical use")
        return "\n".join(lines)


def models_folder(task: str) -> Path:
    home = Path(os.environ.get("ONCOSEG_HOME", Path.home() / ".oncoseg"))
    return home / "models" / task


def model_choice(path: str | os.PathLike[str], task: str, label: str | None = None
                 ) -> ModelChoice:
    """One model file, checked to be for ``task`` (a model for another task is refused)."""
    header = read_header(path)
    if header.metadata.task != task:
        raise InputError(str(path), f"is a model for task '{header.metadata.task}', not "
                         f"'{task}'")
    return ModelChoice(label or Path(path).parent.name, Path(path), header)


def available_models(task: str, bundled: dict[str, Path]) -> list[ModelChoice]:
    """Bundled models first, then this user's trained models, newest first; unreadable files
    are skipped (they cannot be chosen anyway)."""
    choices = [model_choice(path, task, label) for label, path in bundled.items()
               if Path(path).is_file()]
    folder = models_folder(task)
    files = sorted(folder.glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime,
                   reverse=True) if folder.is_dir() else []
    for path in files:
        try:
            choices.append(model_choice(path, task))
        except InputError:
            continue
    return choices
