"""A Flask application and a plain one behind wsgiref's validator, served
for real: GET, POST with Content-Length and chunked, keep-alive, pipelining."""

import json
import warnings
from wsgiref.validate import WSGIWarning

import pytest

from apps import flask_app, validated
from apps.live import build_request, chunked, live  # noqa: F401

# The validator warns (WSGIWarning) about lesser breaches; in the worker
# thread the warning becomes an exception and so a 500 the test sees.
pytestmark = [
    pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def wsgi_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", WSGIWarning)
        yield


# name -> (app, GET target, check of the GET body, POST path, sent body -> expected body)
APPS = {
    "flask": (
        flask_app.app,
        "/items/7?q=x",
        lambda body: json.loads(body) == {"item": 7, "q": "x"},
        "/echo",
        lambda sent: sent,
    ),
    "validator": (
        validated.app,
        "/items/7?q=x",
        lambda body: body == b"GET /items/7?q=x",
        "/post",
        lambda sent: b"posted " + sent,
    ),
}


@pytest.fixture(params=sorted(APPS))
def served(request, live):
    app, get_path, get_ok, post_path, post_expect = APPS[request.param]
    server = live(app)
    return server, get_path, get_ok, post_path, post_expect


def test_get(served):
    server, get_path, get_ok, _, _ = served
    with server.connect() as client:
        response = client.request("GET", get_path)
    assert response.status == 200
    assert get_ok(response.body), response


def test_post_with_content_length(served):
    server, _, _, post_path, post_expect = served
    sent = bytes(range(256)) * 40  # every byte value, 10 KB
    with server.connect() as client:
        response = client.request(
            "POST", post_path, [("Content-Type", "application/octet-stream")], sent
        )
    assert response.status == 200
    assert response.body == post_expect(sent)
    assert response.header("Content-Length") == str(len(post_expect(sent)))


def test_post_chunked(served):
    server, _, _, post_path, post_expect = served
    parts = [b"first,", b"x" * 5000, b"", b"\r\n\x00last"]
    with server.connect() as client:
        response = client.request(
            "POST",
            post_path,
            [("Transfer-Encoding", "chunked"), ("Content-Type", "application/octet-stream")],
            chunked(*parts),
        )
    assert response.status == 200
    assert response.body == post_expect(b"".join(parts))


def test_keep_alive(served):
    server, get_path, get_ok, post_path, post_expect = served
    with server.connect() as client:
        for i in range(5):
            sent = f"request {i}".encode()
            response = client.request("POST", post_path, [], sent)
            assert response.status == 200
            assert response.body == post_expect(sent)
            assert response.header("Connection") is None
            response = client.request("GET", get_path)
            assert get_ok(response.body)
        # One connection served all ten.
        assert not client.buf


def test_pipelined_in_one_send(served):
    server, get_path, get_ok, post_path, post_expect = served
    bodies = [f"pipelined body {i}".encode() * (i + 1) for i in range(6)]
    wire = b""
    for body in bodies:
        wire += build_request("POST", post_path, [], body)
        wire += build_request("GET", get_path)
    with server.connect() as client:
        client.send(wire)
        for body in bodies:
            response = client.read_response()
            assert (response.status, response.body) == (200, post_expect(body))
            response = client.read_response()
            assert response.status == 200 and get_ok(response.body)
        assert client.request("GET", get_path).status == 200


def test_http10_keep_alive(served):
    server, get_path, get_ok, _, _ = served
    with server.connect() as client:
        for _ in range(3):
            response = client.request(
                "GET", get_path, [("Connection", "keep-alive")], version="HTTP/1.0"
            )
            assert response.status_line == "HTTP/1.0 200 OK"
            assert response.header("Connection") == "Keep-Alive"
            assert get_ok(response.body)
        response = client.request("GET", get_path, version="HTTP/1.0")
        assert response.header("Connection") == "close"
        assert client.closed_by_server()
