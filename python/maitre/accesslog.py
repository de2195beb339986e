"""Where access log lines go.

The native server formats one line per request (``access_log_format``:
combined, common or json) and logs it at INFO on the ``maitre.access``
logger, only when ``access_log`` is set. While a server runs with
``access_log`` set, that logger gets a handler writing the bare line to the
file (appended; reopened if logrotate moves it) or to standard output for
``-``, its level is INFO and it does not propagate, so root handlers do not
print the lines a second time. Other handlers may be added to the logger as
usual.
"""

import logging
import logging.handlers
import sys
import threading
import time

__all__ = ["LOGGER", "attach", "detach"]

LOGGER = "maitre.access"

#: Seconds between checks that the log file is still the one open.
ROTATION_CHECK_INTERVAL = 1.0

_lock = threading.Lock()
# Handlers attached by running servers, and the logger's level and
# propagation from before the first of them.
_attached = []
_saved = None


def _handler(target):
    if target == "-":
        return logging.StreamHandler(sys.stdout)
    if sys.platform.startswith("win"):
        return logging.FileHandler(target, mode="a", encoding="utf-8")
    return _RotatedFileHandler(target, mode="a", encoding="utf-8")


class _RotatedFileHandler(logging.handlers.WatchedFileHandler):
    """Reopens the file when log rotation moves or removes it, like its
    base class, but checks at most once a second: a ``stat`` per line costs
    about 4 us, which is 40% of the cost of a line."""

    _next_check = 0.0

    def reopenIfNeeded(self):
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + ROTATION_CHECK_INTERVAL
            super().reopenIfNeeded()


def attach(target):
    """Send ``maitre.access`` lines to ``target`` (a path, or ``-`` for
    standard output) until ``detach(handler)``; returns the handler."""
    global _saved
    handler = _handler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER)
    with _lock:
        if not _attached:
            _saved = (logger.level, logger.propagate)
        _attached.append(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
    return handler


def detach(handler):
    """Undo ``attach``: the last one out restores the logger as it was."""
    logger = logging.getLogger(LOGGER)
    with _lock:
        logger.removeHandler(handler)
        if handler in _attached:
            _attached.remove(handler)
        if not _attached and _saved is not None:
            logger.setLevel(_saved[0])
            logger.propagate = _saved[1]
    if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
        handler.flush()  # never close standard output
    else:
        handler.close()
