"""What a person sees while a command runs: log lines with their level (the logging module, logger
`howlow.<module>`; `howlow -v` adds per-item detail, `-q` leaves warnings and errors only) and progress
with an ETA: a bar on a terminal, a plain line at every tenth of the work (and at least once a minute)
where stderr is a file or a pipe (DVC, Prefect, CI logs).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time

from tqdm import tqdm

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_MINUTE = 60.0  # seconds without a progress line before one is written anyway (off a terminal)


def setup_logging(verbosity: int) -> None:
    """The `howlow` loggers write to stderr at INFO (verbosity 0), DEBUG (> 0) or WARNING (< 0)."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
    logger = logging.getLogger("howlow")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Progress over `total` items (images, epochs) with an ETA from the items done so far in this
    run (`update(fresh=False)` for items taken over from an earlier run: they do not speed up the ETA)."""

    def __init__(self, logger: logging.Logger, desc: str, total: int, unit: str, initial: int = 0):
        self.logger, self.desc, self.total, self.unit = logger, desc, total, unit
        self.done, self.reused, self.t0 = initial, initial, time.monotonic()
        self.last_line = self.t0
        show_bar = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)
        # a terminal that reports no width (a bare pty) would get an empty bar
        size = {} if shutil.get_terminal_size((0, 0)).columns else {"ncols": 100, "nrows": 20}
        self.bar = (
            tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, **size) if show_bar else None
        )

    def eta(self) -> float | None:
        fresh = self.done - self.reused
        if fresh <= 0:
            return None
        return (time.monotonic() - self.t0) / fresh * (self.total - self.done)

    def update(self, note: str = "", fresh: bool = True) -> None:
        before, self.done = self.done, self.done + 1
        if not fresh:
            self.reused += 1
        if self.bar is not None:
            self.bar.update()
            if note:
                self.bar.set_postfix_str(note)
            return
        tenth = (10 * self.done) // self.total > (10 * before) // self.total
        if tenth or self.done == self.total or time.monotonic() - self.last_line > QUIET_MINUTE:
            self.last_line = time.monotonic()
            eta = self.eta()
            left = "" if self.done == self.total else f", ETA {'?' if eta is None else duration(eta)}"
            self.logger.info(
                "%s: %d/%d %s (%d %%), %s elapsed%s%s",
                self.desc,
                self.done,
                self.total,
                self.unit + ("s" if self.total != 1 else ""),
                100 * self.done // self.total,
                duration(time.monotonic() - self.t0),
                left,
                f"; {note}" if note else "",
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
