"""Which torch device to run on; a requested device that is absent is an input error."""

from __future__ import annotations

from oncoseg.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested not in DEVICE_CHOICES and not requested.startswith("cuda:"):
        raise InputError("--device", f"'{requested}' is not one of {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested.startswith("cuda") and not cuda:
        raise InputError("--device", f"'{requested}' was asked for, but no CUDA GPU is available "
                         "to this torch build; use --device cpu or auto")
    if requested == "mps" and not mps:
        raise InputError("--device", "'mps' was asked for, but Apple's MPS is not available")
    return requested
