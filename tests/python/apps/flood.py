"""The app of the connect-reset storm test (CVE-2024-49769).

``/hold`` streams without end: a client that never reads keeps its
connection busy (the app waits for output credit) until it goes away, which
is how the test stops the server from accepting. Anything else is
``apps.probe.app``.
"""

from apps.probe import app as probe_app

BLOCK = b"h" * 65536


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _endless()
    return probe_app(environ, start_response)


def _endless():
    while True:
        yield BLOCK
