"""request_timeout on a live server: a request that runs too long is
answered 503 (or cut, once its head is out), the stuck thread's stack is
logged, and RequestTimeout is raised inside it; without the setting a slow
app is left alone."""

import logging
import time

from apps.live import live, wait_for  # noqa: F401 (live is a fixture)
from maitre.errors import RequestTimeout


def spinning_app(ended_by):
    """Loops in Python for ``?s=`` seconds (so an exception raised in the
    thread lands at once); records what ended the loop."""

    def spin_until(seconds):
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except BaseException as exc:
            ended_by.append(exc)
            raise

    def app(environ, start_response):
        seconds = float(environ["QUERY_STRING"] or "30")
        if environ["PATH_INFO"] == "/streaming":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"partial")
            spin_until(seconds)
            return [b"rest"]
        spin_until(seconds)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


def test_a_request_over_the_limit_gets_503_and_the_thread_is_interrupted(live, caplog):
    ended_by = []
    running = live(spinning_app(ended_by), request_timeout=1, threads=1)
    with caplog.at_level(logging.INFO, logger="maitre"):
        with running.connect() as client:
            started = time.monotonic()
            response = client.request(path="/stuck")
            elapsed = time.monotonic() - started
            assert response.status == 503
            assert b"request_timeout (1 s)" in response.body
            assert response.header("Connection") == "close"
            assert client.closed_by_server()
        assert 0.9 < elapsed < 3, elapsed
        assert wait_for(lambda: ended_by), "no exception was raised in the app's thread"
        assert isinstance(ended_by[0], RequestTimeout)
    stacks = [r.getMessage() for r in caplog.records if "Its stack:" in r.getMessage()]
    assert len(stacks) == 1
    assert "/stuck is still running" in stacks[0]
    assert "in spin_until" in stacks[0], stacks[0]  # the stuck thread's own frames


def test_the_worker_is_free_again_after_the_timeout(live):
    ended_by = []
    running = live(spinning_app(ended_by), request_timeout=1, threads=1)
    with running.connect() as client:
        assert client.request(path="/stuck").status == 503
    assert wait_for(lambda: ended_by)
    with running.connect() as client:
        # /fast spins 0.1 s: well within the limit, on the only thread.
        response = client.request(path="/fast?0.1")
    assert (response.status, response.body) == (200, b"ok")


def test_a_response_already_started_is_cut(live):
    ended_by = []
    running = live(spinning_app(ended_by), request_timeout=1)
    with running.connect() as client:
        client.send(b"GET /streaming HTTP/1.1\r\nHost: x\r\n\r\n")
        head = client.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Transfer-Encoding: chunked" in head
        rest = client.read_to_eof()
    assert rest == b"7\r\npartial\r\n", "the body stops where the app was cut, no last chunk"
    assert wait_for(lambda: ended_by)


def test_without_request_timeout_a_slow_request_completes(live):
    ended_by = []
    running = live(spinning_app(ended_by))
    with running.connect() as client:
        started = time.monotonic()
        response = client.request(path="/slow?1.5")
        assert time.monotonic() - started >= 1.5
    assert (response.status, response.body) == (200, b"ok")
    assert ended_by == []
