"""What the driver of several workers shows while they run: each run's phase, read from its status file.

Workers write how far their run is to ``progress.json`` in the run directory
(:class:`~elbogap.progress.StatusFile`); the sweep's driver hands the running runs to a
:class:`Board` and polls it. On a terminal each running run has one line, redrawn in place::

    iaf-seed0 [00:13] evaluate test › AIS on 50 points: 28%|██▊       | 104/375 transitions [00:02<00:05]

Elsewhere (a log file, a pipe, a notebook) a line is printed when a run enters a phase, once
per phase, so a long study's log grows by a few lines per run::

    00:10 iaf-seed0  evaluate test › AIS on 50 points (375 transitions)
"""

import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from elbogap.progress import STATUS, path_text, read_status

#: seconds between two readings of the running runs' status files
READ_EVERY = 0.5

#: a count as the driver shows it: tqdm's bar without the rate, which the time left already says
METER = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s [{elapsed}<{remaining}{postfix}]"


def plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def entered_line(name: str, status: dict, entered: dict) -> str:
    """``00:10 iaf-seed0  evaluate test › AIS on 50 points (375 transitions)``: a run entered a phase."""
    line = f"{tqdm.format_interval(max(0.0, entered['at'] - status['started']))} {name}  {entered['text']}"
    return line + (f" ({plural(entered['total'], entered['unit'])})" if entered.get("total") else "")


def status_line(name: str, status: dict, now: float, width: int = 120) -> str:
    """One run's line on a terminal: its name, time so far, the path of phases, and the innermost count's bar."""
    title = f"{name} [{tqdm.format_interval(max(0.0, now - status['started']))}]"
    opened = status["open"]
    where = path_text([entry["label"] for entry in opened]) or "…"
    counted = next((entry for entry in reversed(opened) if entry.get("total")), None)
    if counted is None:
        since = opened[-1]["since"] if opened else status["written"]
        meter = f" [{tqdm.format_interval(max(0.0, now - since))}]"
    else:
        meter = ":" + tqdm.format_meter(counted["n"], counted["total"], max(0.0, now - counted["since"]),
                                        unit=counted["unit"], initial=counted["initial"],
                                        postfix=counted.get("postfix"), bar_format=METER)
    room = max(10, width - len(title) - len(meter) - 1)
    if len(where) > room:  # the counts stay in view; the path gives way
        where = "…" + where[-(room - 1):]
    return f"{title} {where}{meter}"


class Board:
    """Shows the runs handed to :meth:`start` until :meth:`finish`, from their status files.

    :param bool live: redraw a line per run in place (default: when ``file`` is a terminal);
        otherwise print a line per phase entered.
    :param file: where to write (default: stderr).
    """

    def __init__(self, live: bool | None = None, file=None):
        self.file = file if file is not None else sys.stderr
        self.live = self.file.isatty() if live is None else live
        self.runs: dict[str, dict] = {}
        self.read = 0.0

    def start(self, name: str, run_dir: str | Path) -> None:
        """Follow the run ``name`` that writes its status in ``run_dir``; one left by an earlier command is dropped."""
        path = Path(run_dir) / STATUS
        path.unlink(missing_ok=True)
        self.runs[str(run_dir)] = {"name": name, "path": path, "printed": 0, "line": None}

    def poll(self) -> None:
        """Read the running runs' status files and show them, at most every :data:`READ_EVERY` seconds."""
        if time.time() - self.read < READ_EVERY:
            return
        self.read = time.time()
        for run in self.runs.values():
            self._show(run)

    def finish(self, run_dir: str | Path) -> None:
        """The run in ``run_dir`` ended: show the phases it entered since the last reading, drop its line and file."""
        run = self.runs.pop(str(run_dir), None)
        if run is None:
            return
        if not self.live:
            self._show(run)
        if run["line"] is not None:
            run["line"].close()
        run["path"].unlink(missing_ok=True)

    def close(self) -> None:
        for run_dir in list(self.runs):
            run = self.runs.pop(run_dir)
            if run["line"] is not None:
                run["line"].close()

    def _show(self, run: dict) -> None:
        status = read_status(run["path"])
        if status is None:
            return
        if not self.live:
            for entered in status["history"][run["printed"]:]:
                tqdm.write(entered_line(run["name"], status, entered), file=self.file)
            run["printed"] = len(status["history"])
            return
        if run["line"] is None:
            run["line"] = tqdm(bar_format="{desc}", leave=False, file=self.file)
        run["line"].set_description_str(status_line(run["name"], status, time.time(), self.width()))

    def width(self) -> int:
        try:
            return os.get_terminal_size(self.file.fileno()).columns - 1
        except (AttributeError, OSError, ValueError):  # not a file with a terminal behind it
            return 119
