"""Stop requests: SIGINT and SIGTERM turned into a question a run asks between training steps.

The edges that own a process's signals (the sweep driver, a backend's task) install
:func:`stop_requests`; a run is handed the context and asks ``should_stop()`` after each step.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

#: says whether a stop was requested: the number of the first signal that asked, or None
ShouldStop = Callable[[], int | None]


class StopAsked(Exception):
    """A stop request heard while a run's start was fitted, before the run trained: nothing is kept for it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum} before the run trained")
        self.signum = signum


class StopRequests:
    """The stop signals received so far; calling it answers ``should_stop()``."""

    def __init__(self):
        self.signals: list[int] = []

    def __call__(self) -> int | None:
        return self.signals[0] if self.signals else None


@contextlib.contextmanager
def stop_requests() -> Iterator[ShouldStop]:
    """Turn SIGINT and SIGTERM into stop requests while the context is open; yields ``should_stop``.

    Outside the main thread, where Python cannot install handlers, no request ever arrives.
    """
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: requests.signals.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def no_stop_requests() -> Iterator[ShouldStop]:
    """A context in which no stop is ever requested: signals keep whatever handlers they have."""
    yield lambda: None
