"""Building blocks for response-side probes: an app_iter that records
``close()`` and what happened while it was iterated."""

import threading


class Closing:
    """An app_iter over ``items``; each item is bytes (yielded), any other
    object (yielded as is, e.g. a str), or a callable (called: it may raise
    or call start_response again). ``closed`` is set by ``close()``."""

    def __init__(self, items):
        self.items = list(items)
        self.closed = threading.Event()
        self.close_calls = 0
        self.yielded = 0

    def __iter__(self):
        for item in self.items:
            if callable(item):
                item = item()
                if item is None:
                    continue
            self.yielded += 1
            yield item

    def close(self):
        self.close_calls += 1
        self.closed.set()


class Endless:
    """An app_iter yielding ``chunk`` until closed or ``limit`` chunks, for a
    client that goes away mid-body."""

    def __init__(self, chunk, limit=100000):
        self.chunk = chunk
        self.limit = limit
        self.sent = 0
        self.started = threading.Event()
        self.closed = threading.Event()
        self.close_calls = 0

    def __iter__(self):
        self.started.set()
        while self.sent < self.limit and not self.closed.is_set():
            self.sent += 1
            yield self.chunk

    def close(self):
        self.close_calls += 1
        self.closed.set()


def raiser(exc):
    def call():
        raise exc

    return call
