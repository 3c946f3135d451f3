"""Where a run executes, for its record."""

import os
import socket


def where_am_i(backend: str, node: str | None = None) -> dict:
    """Where a run executes, for its record: backend, host, process id and (on Ray) node id."""
    return {"backend": backend, "host": socket.gethostname(), "pid": os.getpid(), "node": node}
