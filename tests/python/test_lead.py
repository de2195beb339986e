"""The I/O loop is a role the pool's threads take turns at (src/python/lead.rs).

With a quick app the thread that reads a request also runs it, and nobody
drives the loop meanwhile. These tests block one request of a quick app and
check that the server still reads, answers and runs other clients' requests
while it is blocked: the lead's monitor must hand the loop to a free thread.
Nothing here is timed: a stuck loop shows as a client that never gets its
answer (each wait is guarded by ``GUARD`` seconds).
"""

import threading

import pytest

from apps.live import GUARD, live  # noqa: F401


class Blocking:
    """A quick app whose ``/block`` requests wait until ``release`` is set,
    either sleeping (the GIL free) or spinning in Python (the GIL held,
    given up only when the interpreter forces a switch)."""

    def __init__(self, spin):
        self.spin = spin
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/block":
            self.entered.set()
            if self.spin:
                while not self.release.is_set():
                    pass
            else:
                self.release.wait(GUARD)
            body = b"released"
        else:
            body = b"quick"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


def warm_up(server, n=200):
    """Enough quick requests that the app counts as quick (jobs run by the
    thread that read them)."""
    with server.connect() as conn:
        for _ in range(n):
            assert conn.request("GET", "/").body == b"quick"


def start_blocked(server, app):
    """A client whose request is inside the app, blocked, when this returns."""
    result = {}

    def client():
        with server.connect() as conn:
            result["response"] = conn.request("GET", "/block")

    thread = threading.Thread(target=client)
    thread.start()
    assert app.entered.wait(GUARD), "the blocking request never reached the app"
    return thread, result


@pytest.mark.parametrize("spin", [False, True], ids=["sleeping", "holding-the-gil"])
def test_a_blocked_request_does_not_stall_the_others(live, spin):
    app = Blocking(spin)
    server = live(app, threads=4)
    warm_up(server)
    thread, result = start_blocked(server, app)
    try:
        # New connections are accepted, read, run and answered while the
        # first request is still inside the app.
        for _ in range(3):
            with server.connect() as conn:
                response = conn.request("GET", "/")
                assert (response.status, response.body) == (200, b"quick")
        assert not app.release.is_set() and thread.is_alive()
    finally:
        app.release.set()
        thread.join(GUARD)
    assert result["response"].body == b"released"


def test_with_its_only_thread_blocked_the_server_still_reads_and_answers(live):
    app = Blocking(spin=False)
    server = live(app, threads=1)
    warm_up(server)
    thread, result = start_blocked(server, app)
    try:
        # No slot for an app: a bad request is answered by the server itself,
        # and a good one waits in the queue (it is sent now, answered later).
        with server.connect() as bad:
            bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            assert bad.read_response().status == 400
        waiting = server.connect()
        waiting.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert waiting.silent_for(0.2), "answered with no thread free to run it"
        assert not app.release.is_set() and thread.is_alive()
    finally:
        app.release.set()
        thread.join(GUARD)
    assert result["response"].body == b"released"
    with waiting:
        assert waiting.read_response().body == b"quick"


def test_many_quick_clients_while_one_request_is_blocked(live):
    app = Blocking(spin=False)
    server = live(app, threads=2)
    warm_up(server)
    thread, result = start_blocked(server, app)
    errors = []

    def client():
        try:
            with server.connect() as conn:
                for _ in range(50):
                    assert conn.request("GET", "/").body == b"quick"
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        clients = [threading.Thread(target=client) for _ in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(GUARD)
        assert not any(c.is_alive() for c in clients), "a quick client hung"
        assert errors == []
        assert not app.release.is_set() and thread.is_alive()
    finally:
        app.release.set()
        thread.join(GUARD)
    assert result["response"].body == b"released"
