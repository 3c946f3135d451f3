"""torch's intra-op threads for a stretch of work, restored afterwards."""

import contextlib

import torch


@contextlib.contextmanager
def intra_op_threads(count: int | None):
    """Run the block on ``count`` of torch's intra-op threads (None: leave them as they are)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
