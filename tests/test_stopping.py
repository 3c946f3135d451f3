"""Stop requests: a signal inside the context is recorded, not acted on, and the handlers come back after."""

import os
import signal

from elbogap.stopping import no_stop_requests, stop_requests


def test_a_signal_becomes_a_stop_request_and_the_previous_handler_returns():
    before = signal.getsignal(signal.SIGTERM)
    with stop_requests() as should_stop:
        assert should_stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert should_stop() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_without_stop_requests_no_stop_is_ever_asked():
    with no_stop_requests() as should_stop:
        assert should_stop() is None
