"""Probe applications: they report what they see, or behave on demand.

All of them keep their bodies exact (byte for byte) so the tests can compare.
"""

import json
import threading
import time


def environ_json(environ, start_response):
    """The environ as JSON: str, bool, int and None values as they are; for
    anything else the type's name (``"<BytesIO>"``); ``wsgi.version`` as a
    list. A body, if any, is read and given as ``"body"`` (latin-1)."""
    shown = {}
    for key, value in environ.items():
        if value is None or isinstance(value, (str, bool, int)):
            shown[key] = value
        elif isinstance(value, tuple):
            shown[key] = list(value)
        else:
            shown[key] = f"<{type(value).__name__}>"
    length = environ.get("CONTENT_LENGTH")
    if length:
        shown["body"] = environ["wsgi.input"].read(int(length)).decode("latin-1")
    body = json.dumps(shown, sort_keys=True).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def echo(environ, start_response):
    """The request body back, with the method and path in headers."""
    body = environ["wsgi.input"].read()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
            ("X-Method", environ["REQUEST_METHOD"]),
            ("X-Path", environ["PATH_INFO"]),
        ],
    )
    return [body]


def sleeper(environ, start_response):
    """Sleeps ``?<seconds>`` (a float) and answers with the thread's name."""
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    body = threading.current_thread().name.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def streaming(environ, start_response):
    """Sends ``start\n`` at once (write()), sleeps ``?<seconds>``, then
    ``end\n``: a client seeing the head knows the app is running."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"start\n")
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    return [b"end\n"]


def failing(environ, start_response):
    """Raises before start_response (for expose_tracebacks and ident)."""
    raise RuntimeError("probe failure " + environ["PATH_INFO"])


def app(environ, start_response):
    """``/echo``: echo; ``/sleep?s``: sleeper; ``/stream?s``: streaming;
    ``/fail``: failing; anything else: environ_json."""
    path = environ["PATH_INFO"]
    handlers = (("/echo", echo), ("/sleep", sleeper), ("/stream", streaming), ("/fail", failing))
    for prefix, handler in handlers:
        if path.startswith(prefix):
            return handler(environ, start_response)
    return environ_json(environ, start_response)


def make_app():
    """For ``maitre-serve --call``."""
    return app


def app_factory(global_conf, **local_conf):
    """PasteDeploy ``paste.app_factory``."""
    return app


class Capture:
    """Records a copy of each environ, and what ``probe(environ)`` returns
    while the request runs (for things only valid then, like wsgi.input);
    answers 200 ``ok``."""

    def __init__(self, probe=None):
        self.probe = probe
        self.environs = []
        self.results = []

    def __call__(self, environ, start_response):
        self.environs.append(dict(environ))
        if self.probe is not None:
            self.results.append(self.probe(environ))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    @property
    def environ(self):
        (environ,) = self.environs
        return environ


class Gate:
    """Every request blocks until ``release()``; counts how many run at once
    and on which threads. ``wait_active(n)`` waits until n are inside."""

    def __init__(self):
        self.cond = threading.Condition()
        self.active = 0
        self.max_active = 0
        self.threads = set()
        self.released = threading.Event()
        self.done = 0

    def __call__(self, environ, start_response):
        with self.cond:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.current_thread().ident)
            self.cond.notify_all()
        try:
            self.released.wait(30)
        finally:
            with self.cond:
                self.active -= 1
                self.done += 1
                self.cond.notify_all()
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    def wait_active(self, n, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: self.active >= n, timeout)

    def release(self):
        self.released.set()
