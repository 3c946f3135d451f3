"""What a study of a model with global latents computes once per seed and shares among its guides' runs.

Kept in ``OUT/shared/KIND-HASH.pt`` beside the study's runs (read with ``weights_only``), so the guides of one study
share one evidence, one NUTS run, one BDMC, one mean-field fit. Runs of one seed in other worker processes (or Ray
tasks on a shared ``--out``) wait on a lock file beside it while the first computes, then read its result: the work
is done once per seed, not once per worker.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
from pathlib import Path

import torch

from elbogap.checkpoint import load_checkpoint, save_checkpoint


def shared_path(run_dir: Path, kind: str, model, data: torch.Tensor, settings: dict, seed: int) -> Path:
    """Where the study keeps ``kind`` for these model parameters, data, settings and seed: ``OUT/shared/`` of a
    study's run (``OUT/runs/NAME``), or the ``shared/`` folder of a lone ``elbogap train --out RUN_DIR``."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "settings": settings, "seed": seed, "spec": model.spec},
                             sort_keys=True).encode())
    buffer = io.BytesIO()
    torch.save({"data": data.cpu(), "params": {k: v.cpu() for k, v in model.state_dict().items()}}, buffer)
    digest.update(buffer.getvalue())
    run_dir = Path(run_dir)
    study = run_dir.parent.parent if run_dir.parent.name == "runs" else run_dir
    path = study / "shared" / f"{kind}-{digest.hexdigest()[:16]}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(paths: list[Path]):
    """Hold the lock files of ``paths`` (taken in sorted order, so two holders of overlapping sets never deadlock)."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(paths)):
            lock = stack.enter_context(open(path.with_suffix(".lock"), "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def keep(path: Path, value) -> None:
    """Write ``value`` to ``path`` at once (a reader sees the whole file or none), under its lock."""
    mine = path.with_name(f".{path.name}.{os.getpid()}")
    save_checkpoint(mine, value)
    os.replace(mine, path)


def study_cache(run_dir: Path, kind: str, model, data: torch.Tensor, settings: dict, seed: int, compute):
    """``compute()``, or what it returned before for the same model parameters, data, settings and seed (see the
    module)."""
    path = shared_path(run_dir, kind, model, data, settings, seed)
    with locked([path]):
        if path.is_file():
            return load_checkpoint(path)
        value = compute()
        keep(path, value)
    return value


def seeds_cache(paths: dict[int, Path], train) -> dict[int, dict]:
    """Per seed, what :func:`study_cache` keeps at ``paths[seed]``: those kept before are read, the others come from
    ``train(missing seeds)`` at once (``{seed: value}``; empty where it was stopped: nothing is kept for them), all
    under the paths' locks."""
    with locked(list(paths.values())):
        values = {seed: load_checkpoint(path) for seed, path in paths.items() if path.is_file()}
        if missing := [seed for seed in paths if seed not in values]:
            trained = train(missing)
            for seed, value in trained.items():
                keep(paths[seed], value)
                values[seed] = value
    return values
