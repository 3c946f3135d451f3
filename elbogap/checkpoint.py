"""Checkpoints: written atomically, read without running any code."""

import os
from pathlib import Path

import torch

from elbogap.errors import UsageError

FORMAT = "elbogap-checkpoint-2"  # 2: one optimizer state for all parameters (1: one per parameter)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers only.

    A file that is not an elbogap checkpoint, or that would need arbitrary code to unpickle,
    is refused with a :class:`UsageError`.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}; give a run directory written by elbogap train or compare")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"refusing to load {path}: not a safe elbogap checkpoint ({reason[:200]})") from None
    written = state.get("format") if isinstance(state, dict) else None
    if isinstance(written, str) and written.startswith("elbogap-checkpoint-") and written != FORMAT:
        raise UsageError(f"{path} was written by another version of elbogap ({written}, this one reads {FORMAT}); "
                         "start the run afresh in a new --out")
    if written != FORMAT:
        raise UsageError(f"{path} is not an elbogap checkpoint (format {FORMAT} expected)")
    return state
