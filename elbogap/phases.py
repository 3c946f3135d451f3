"""Where the time goes: wall seconds per phase of a run or a study, for records, logs and the table's footer."""

import contextlib
import time


class Phases:
    """Seconds per named phase, in the order phases first ran; a phase entered again adds up.

    >>> phases = Phases()
    >>> with phases("evaluate_test"):
    ...     pass
    """

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def line(self) -> str:
        """``name=1.2s ...``, for a log."""
        return " ".join(f"{name}={seconds:.1f}s" for name, seconds in self.seconds.items())
