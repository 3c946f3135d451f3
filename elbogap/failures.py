"""A run that a user's program broke: one line naming the program, its file and line and the Pyro site.

A user's model or guide that raises while a run trains or evaluates is no usage mistake elbogap
could have seen beforehand, and no bug of elbogap's: the command ends with one line that points
into the program, and the traceback is kept in the run's ``train.log`` (printed with ``--debug``).
An error with no frame in a user's program is elbogap's own, and keeps its traceback.
"""

import traceback
from pathlib import Path

from elbogap.runs import LOG, RunLog
from elbogap.user_model import program_modules, site_of


class ProgramFailed(Exception):
    """A user's program raised during a run; the message is one line, ``details`` the traceback (or None)."""

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, the original last."""
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    return chain


def program_failure(error: BaseException, specs) -> str | None:
    """One line saying which of the user's programs ``specs`` raised ``error``, where, and at which Pyro site.

    The place is the innermost frame in a program's module; the site is the sample statement the
    error came from, else the last site the program reached (from Pyro's trace of it). None when
    no frame lies in a user's program: the error is elbogap's own.
    """
    modules = program_modules(specs)
    for exception in reversed(causes(error)):  # the original error first: its frames reach deepest
        frames = list(traceback.walk_tb(exception.__traceback__))
        inside = [(frame, line) for frame, line in frames if frame.f_globals.get("__name__") in modules]
        if not inside:
            continue
        frame, line = inside[-1]
        spec = modules[frame.f_globals["__name__"]]
        message = str(error).splitlines()[0] if str(error) else ""
        site = site_of(frames)
        return (f"the program {spec} raised {type(error).__name__}: {message} "
                f"({Path(frame.f_code.co_filename).name}:{line} in {frame.f_code.co_name}{site})")
    return None


def keep_traceback(run_dir: str | Path, details: str) -> None:
    """Append a failed run's traceback to its ``train.log``, where the run directory exists."""
    if Path(run_dir).is_dir():
        RunLog(Path(run_dir) / LOG).write(f"failed:\n{details}")
