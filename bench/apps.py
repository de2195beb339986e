"""The WSGI applications the benchmark serves, one callable per scenario.

Every server loads this module by name (``apps:hello`` and so on) with the
``bench/`` directory on ``sys.path``. ``flask_hello`` builds its Flask app
on the first request, so the other apps neither need Flask nor pay for
importing it.
"""

import threading
import time

HELLO = b"Hello, World!"
BIG = b"x" * (1024 * 1024)  # one 1 MiB bytes object
PIECE = b"y" * 256
PIECES = 256  # 256 pieces of 256 bytes: 64 KiB


def hello(environ, start_response):
    """13 bytes with a Content-Length: the per-request cost, and little else."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def big(environ, start_response):
    """One 1 MiB body in a single bytes object, length known."""
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))]
    )
    return [BIG]


def stream(environ, start_response):
    """64 KiB from a generator of 256 small pieces, no Content-Length: the
    server must frame it itself (chunked, or close at the end)."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (PIECE for _ in range(PIECES))


def echo(environ, start_response):
    """The request body, read in full (CONTENT_LENGTH bytes), sent back."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
    )
    return [body]


def sleep(environ, start_response):
    """10 ms of waiting (an I/O-bound app), then hello: shows the thread pool."""
    time.sleep(0.010)
    return hello(environ, start_response)


def _make_flask_app():
    from flask import Flask

    app = Flask("bench")

    @app.route("/")
    def index():
        return "Hello, World!"

    return app


def flask_available():
    try:
        import flask  # noqa: F401
    except ImportError:
        return False
    return True


class _FlaskHello:
    """Flask's hello, built on the first request rather than at import, so
    the other cells' start-up time and RSS do not include Flask. (The
    readiness request pays for the import, before any measurement.) A plain
    module attribute: uWSGI looks callables up in the module's dict."""

    def __init__(self):
        self.app = None
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        app = self.app
        if app is None:
            with self.lock:
                if self.app is None:
                    self.app = _make_flask_app()
                app = self.app
        return app(environ, start_response)


flask_hello = _FlaskHello()
