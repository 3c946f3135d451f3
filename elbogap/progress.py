"""How far a run is: tqdm bars in this process, or a small status file that the driver of several workers shows.

A run and the estimators it calls say what they are doing through one interface,
:class:`Progress`: ``phase(name)`` names a stretch of work (``evaluate test``, ``BDMC``) and
``bar(desc, total)`` counts one (training steps, AIS transitions, q* refit steps). Nested, they
read as one path: ``evaluate test › AIS on 20 points``. Where the run executes decides where that
goes: :class:`Bars` draws tqdm bars on this process's terminal (one run at a time), and
:class:`StatusFile` writes the path, the counts and the phases entered so far to ``progress.json``
in the run directory, which the sweep's driver reads (:mod:`elbogap.board`). A file in the run
directory reaches the driver from any backend: local worker processes share the disk, and Ray's
``--out`` must be shared anyway.

Functions that take ``progress`` accept a ``bool`` (show tqdm bars or not) or a :class:`Progress`.
"""

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm.asyncio import tqdm as text_tqdm
from tqdm.auto import tqdm

#: the file in a run directory that says how far the run is, while it runs under a driver
STATUS = "progress.json"

#: seconds between two writes of the status file while a bar only counts (a new phase is written at once)
WRITE_EVERY = 0.5

#: seconds between two redraws of a text bar whose stream is not a terminal (a redirected log): a line every half
#: minute, not one per step; the environment variable ELBOGAP_LOG_EVERY sets another
LOG_EVERY = 30.0


def redraw_every() -> float:
    """tqdm's ``mininterval``: its own 0.1 s on a terminal or in a notebook, :data:`LOG_EVERY` (or
    ``ELBOGAP_LOG_EVERY``) into a file (with
    ``maxinterval`` at least that, or tqdm's monitor thread redraws 10 s after each redraw)."""
    logged = tqdm is text_tqdm and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return float(os.environ.get("ELBOGAP_LOG_EVERY", LOG_EVERY)) if logged else 0.1


def path_text(labels: list[str]) -> str:
    """``evaluate test › AIS on 20 points``: the labels of nested phases and bars, a label that begins
    with the one enclosing it (``q* test`` in ``q* test``, ``BDMC on 4 points`` in ``BDMC``) standing for both."""
    kept: list[str] = []
    for label in labels:
        if kept and label.startswith(kept[-1]):
            kept[-1] = label
        else:
            kept.append(label)
    return " › ".join(kept)


class Progress:
    """Where a run says how far it is: ``with progress.phase(name):`` around a stretch of work, and
    ``progress.bar(desc, total)`` (``update(n)``, ``set_postfix(...)``, ``close()``, or used as a context)
    to count one. ``open`` holds the phases and bars open now, outermost first."""

    def __init__(self):
        self.open: list[dict] = []

    @property
    def labels(self) -> list[str]:
        return [entry["label"] for entry in self.open]

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        depth = len(self.open)
        self.open.append({"label": name, "since": time.time()})
        self.changed()
        try:
            yield
        finally:
            del self.open[depth:]  # and any bar an error left open inside
            self.changed()

    def bar(self, desc: str, total: int | None = None, unit: str = "step", initial: int = 0):
        raise NotImplementedError

    def iterate(self, items, desc: str, unit: str = "step") -> Iterator:
        """The items of the sized ``items``, counted by a bar."""
        with self.bar(desc, len(items), unit) as bar:
            for item in items:
                yield item
                bar.update()

    def changed(self) -> None:
        """A phase or a bar began or ended."""


class Bars(Progress):
    """tqdm bars on this process's terminal, each titled by the run and the phases it is in; none unless ``show``.

    :param bool show: draw the bars (False: count nothing).
    :param str run: a name put before every bar's title, e.g. ``diag-seed0``.
    """

    def __init__(self, show: bool = True, run: str | None = None):
        super().__init__()
        self.show, self.run = show, run

    def bar(self, desc: str, total: int | None = None, unit: str = "step", initial: int = 0):
        title = path_text([*self.labels, desc])
        if self.run:
            title = f"{self.run} › {title}"
        return tqdm(total=total, initial=initial, desc=title, unit=unit, leave=False, disable=not self.show,
                    mininterval=redraw_every(), maxinterval=max(redraw_every(), 10.0))


def as_progress(progress: "bool | Progress") -> Progress:
    """``progress`` itself, or for a bool, tqdm bars shown or not."""
    return progress if isinstance(progress, Progress) else Bars(bool(progress))


class _Counter:
    """A bar of a :class:`StatusFile`: counts into the status, and leaves the path when closed."""

    def __init__(self, status: "StatusFile", desc: str, total: int | None, unit: str, initial: int):
        self.status = status
        self.entry = {"label": desc, "since": time.time(), "n": initial, "initial": initial, "total": total,
                      "unit": unit}
        status.open.append(self.entry)
        status.changed()

    def update(self, n: int = 1) -> None:
        self.entry["n"] += n
        self.status.write(force=False)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.entry["postfix"] = ", ".join(f"{key}={value}" for key, value in values.items())
        self.status.write(force=False)

    def close(self) -> None:
        for depth, entry in enumerate(self.status.open):
            if entry is self.entry:
                del self.status.open[depth:]
                self.status.changed()
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StatusFile(Progress):
    """The run's phases and counts, written to ``path`` (a JSON file) for a driver to show.

    The file holds ``started`` (the run's start, ``time.time()``); ``open``: the open phases and
    bars, outermost first (``label``, ``since``, and for a bar ``n``, ``initial``, ``total``,
    ``unit``, ``postfix``); and ``history``: each distinct path of phases entered, once, with when
    (``at``) and its innermost bar's total, so a driver that reads the file now and then misses
    none. The file is replaced whole (written beside, then renamed) on every change of phase and
    at most every :data:`WRITE_EVERY` seconds while a bar counts.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.started = time.time()
        self.history: list[dict] = []
        self.written = 0.0

    def bar(self, desc: str, total: int | None = None, unit: str = "step", initial: int = 0) -> _Counter:
        return _Counter(self, desc, total, unit, initial)

    def changed(self) -> None:
        text = path_text(self.labels)
        if text and text not in {entered["text"] for entered in self.history}:
            innermost = self.open[-1]
            self.history.append({"text": text, "at": innermost["since"],
                                 **({"total": innermost["total"], "unit": innermost["unit"]}
                                    if innermost.get("total") else {})})
        self.write()

    def write(self, force: bool = True) -> None:
        now = time.time()
        if not force and now - self.written < WRITE_EVERY:
            return
        self.written = now
        state = {"started": self.started, "written": now, "open": self.open, "history": self.history}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(state))
            os.replace(temporary, self.path)
        except OSError:  # how far a run is may go unseen; the run itself goes on
            pass


def read_status(path: str | Path) -> dict | None:
    """The status a :class:`StatusFile` wrote at ``path``, or None where there is none (yet) or it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
