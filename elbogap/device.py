"""Where tensors live (the ``--device`` setting) and which random generators a computation draws from."""

import torch

from elbogap.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)`` for ``cpu``, ``cuda`` or ``cuda:N``, refused in one line where it does not exist."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown --device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA GPU on this machine; "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             "use cuda:0 or another index below that")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: elbogap runs on cpu or cuda")
    return device


def rng_devices(*tensors) -> list[int]:
    """The CUDA devices of ``tensors``, whose generators ``torch.random.fork_rng`` must save too."""
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})


def rng_state(device: torch.device) -> dict:
    """The torch generators a run on ``device`` draws from: the CPU's, and the GPU's when it is one."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
