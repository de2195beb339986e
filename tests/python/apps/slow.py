"""Applications that take their time, for graceful-stop and request-timeout tests.

``/plain?s=N`` sleeps N seconds (default 2) before it answers with a
Content-Length; ``/stream?s=N`` writes ``started`` through ``write()`` at
once, sleeps, then ends a length-less (chunked) body. ``/count`` says how
many requests are asleep right now. ``/spin?s=N`` loops in Python (so an
exception raised in its thread lands at once) and reports what ended it
on stderr.
"""

import sys
import threading
import time
from urllib.parse import parse_qs

_lock = threading.Lock()
_asleep = 0


def _seconds(environ, default=2.0):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return float(query.get("s", [default])[0])


def _sleeping(seconds):
    global _asleep
    with _lock:
        _asleep += 1
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _asleep -= 1


def app(environ, start_response):
    path = environ["PATH_INFO"]
    seconds = _seconds(environ)
    if path == "/count":
        body = str(_asleep).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started\n")
        _sleeping(seconds)
        return [b"done\n"]
    if path == "/spin":
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except BaseException as exc:
            print(f"spin ended by {type(exc).__name__}", file=sys.stderr, flush=True)
            raise
        body = b"spun"
        start_response("200 OK", [("Content-Length", "4")])
        return [body]
    _sleeping(seconds)
    body = b"slept %.1f\n" % seconds
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
